// chatkit's chat page: the seed document's WebSocketService and ChatInterface, done right.
// Plain JavaScript, no build step. Message text is Markdown rendered by render.js (sanitized by
// DOMPurify); every other piece of user or model text goes in with textContent.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const i18n = window.chatkitI18n; // i18n.js: strings in the page's language, Intl formatting
  const t = i18n.t;

  // --- reconnect policy: the seed's reconnectWithBackoff, with jitter -------------------------
  function backoffDelay(attempt, initial = 1000, cap = 30000) {
    const base = Math.min(cap, initial * 2 ** Math.max(0, attempt - 1));
    return Math.min(cap, base * (0.5 + Math.random())); // ±50 % jitter, still capped
  }

  const newClientId = () =>
    (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random()).replace(/-/g, "");

  // --- exactly-once delivery: resume.js (the same rules as chatkit/resume.py) ----------------
  const { ResumeState, Outbox, limitsFrom, DEFAULT_RETRY_MS } = window.ChatkitResume;
  const now = () => performance.now() / 1000; // the outbox's clock, in seconds
  const SEND_TIMEOUT_MS = 60000; // every send ends: stored, refused, or not sent by then

  // --- the service ----------------------------------------------------------------------------
  class ChatService {
    constructor({ room, user, transport, onEvent, onState, signedIn = false }) {
      // signedIn: the server knows us by the HttpOnly cookie from auth/login; the name is the token's.
      Object.assign(this, { room, user, transport, onEvent, onState, signedIn });
      this.resume = new ResumeState();
      this.outbox = new Outbox(100); // until the server's broadcast comes back (resume.js)
      this.limits = limitsFrom(null);
      this.deadlines = new Map(); // client_id -> timer of its SEND_TIMEOUT_MS
      this.flushTimer = null;
      this.attempt = 0;
      this.closedByUser = false;
      this.socket = null;
      this.source = null;
      this.timer = null;
      this.heartbeat = null;
      this.lastSeen = 0;
      this.httpBase = null;
    }

    // URLs relative to the page, so the page works at / and behind /proxy/8765/.
    wsUrl() {
      const url = new URL(`ws/chat/${encodeURIComponent(this.room)}/`, location.href);
      url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
      if (!this.signedIn) url.searchParams.set("user", this.user);
      if (this.resume.cursor !== null) url.searchParams.set("after", String(this.resume.cursor));
      return url.toString();
    }

    // The SSE server has its own port, given by config.json. Behind jupyter-server-proxy it is
    // reached through .../proxy/<port>/ next to this page's own proxied path.
    async sseBase() {
      if (this.httpBase) return this.httpBase;
      const config = await (await fetch(new URL("config.json", location.href))).json();
      const port = String(config.http_port);
      const page = new URL(".", location.href);
      const proxied = page.pathname.match(/^(.*\/proxy\/)(?:absolute\/)?\d+\/$/);
      if (proxied) {
        this.httpBase = new URL(`${proxied[1]}${port}/`, page).toString();       // .../proxy/8765/
      } else if (page.pathname !== "/") {
        this.httpBase = new URL(`../proxy/${port}/`, page).toString();           // .../chatkit/ (named)
      } else {
        this.httpBase = `${location.protocol}//${location.hostname}:${port}/`;   // direct
      }
      return this.httpBase;
    }

    connect() {
      this.closedByUser = false;
      this.onState({ state: this.attempt ? "reconnecting" : "connecting", attempt: this.attempt });
      if (this.transport === "sse") this.connectSSE(); else this.connectWS();
    }

    connectWS() {
      const socket = new WebSocket(this.wsUrl());
      this.socket = socket;
      socket.onmessage = (event) => {
        this.lastSeen = Date.now();
        let frame;
        try { frame = JSON.parse(event.data); } catch { return; }
        if (frame.type === "connection") this.opened(frame);
        this.handle(frame);
      };
      socket.onclose = (event) => {
        if (this.socket !== socket) return;
        this.socket = null;
        this.outbox.disconnected();
        clearInterval(this.heartbeat);
        if (this.closedByUser) { this.onState({ state: "closed", attempt: 0 }); return; }
        if (event.code === 1008 && !this.attempt) { this.onState({ state: "closed", attempt: 0, error: event.reason }); return; }
        this.scheduleReconnect();
      };
    }

    async connectSSE() {
      try {
        const url = new URL(`sse/chat/${encodeURIComponent(this.room)}/`, await this.sseBase());
        if (!this.signedIn) url.searchParams.set("user", this.user);
        if (this.resume.cursor !== null) url.searchParams.set("after", String(this.resume.cursor));
        const source = new EventSource(url, { withCredentials: true }); // the sign-in cookie, cross-port
        this.source = source;
        const types = ["connection", "message", "ai_chunk", "ai_complete", "typing", "user_join",
                       "user_leave", "read_receipt", "reaction", "error", "message_deleted"];
        for (const type of types) {
          source.addEventListener(type, (event) => {
            const frame = JSON.parse(event.data);
            if (frame.type === "connection") this.opened(frame);
            this.handle(frame);
          });
        }
        // EventSource reconnects by itself (with Last-Event-ID); we only report it.
        source.onerror = () => {
          if (this.closedByUser) return;
          this.outbox.disconnected();
          this.attempt += 1;
          this.onState({ state: "reconnecting", attempt: this.attempt, delay: 3000 });
        };
      } catch (error) {
        this.scheduleReconnect();
      }
    }

    opened(frame) {
      this.attempt = 0;
      this.resume.connected(frame);
      this.limits = limitsFrom(frame.limits);
      this.outbox.connected(this.limits, now());
      this.onState({ state: "open", attempt: 0 });
      this.flush(); // re-sends what is unacknowledged, at the pace the server stated
      if (this.transport === "ws") {
        clearInterval(this.heartbeat);
        this.lastSeen = Date.now();
        // App-level heartbeat: browsers cannot send WebSocket pings.
        this.heartbeat = setInterval(() => {
          if (!this.socket) return;
          if (Date.now() - this.lastSeen > 30000) { this.socket.close(4000, "heartbeat timeout"); return; }
          this.sendFrame({ type: "ping" });
        }, 20000);
      }
    }

    scheduleReconnect() {
      this.attempt += 1;
      const delay = backoffDelay(this.attempt);
      this.onState({ state: "reconnecting", attempt: this.attempt, delay });
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.connect(), delay);
    }

    // The seed's disconnect() reconnected anyway (onclose called reconnect); this one does not.
    disconnect() {
      this.closedByUser = true;
      clearTimeout(this.timer);
      clearInterval(this.heartbeat);
      if (this.socket) { const s = this.socket; this.socket = null; s.close(1000, "bye"); }
      if (this.source) { this.source.close(); this.source = null; }
      this.onState({ state: "closed", attempt: 0 });
    }

    handle(frame) {
      if (frame.type === "message" || frame.type === "error") this.settle(this.outbox.receive(frame, now()));
      if (frame.type === "pong") return;
      const event = this.resume.accept(frame);
      if (event) this.onEvent(event);
    }

    sendFrame(frame) {
      if (this.socket && this.socket.readyState === WebSocket.OPEN) {
        this.socket.send(JSON.stringify(frame));
        return true;
      }
      return false;
    }

    // Every message ends as stored (its `message` frame), refused (a `refused` event with the
    // server's code) or not sent after SEND_TIMEOUT_MS: the rules of chatkit.client.ChatClient.
    send(text) {
      const clientId = newClientId();
      const refuse = (code, message) => this.onEvent({ type: "refused", client_id: clientId, text, code, message });
      if (text.length > this.limits.max_text) {
        refuse("too_long", `message is ${text.length} characters; the limit is ${this.limits.max_text}`);
        return clientId;
      }
      try { this.outbox.add(clientId, text); } catch (error) { refuse(error.code, error.message); return clientId; }
      this.deadlines.set(clientId, setTimeout(() => {
        if (this.outbox.remove(clientId)) refuse("send_timeout", "the server did not store it in time");
        this.deadlines.delete(clientId);
      }, SEND_TIMEOUT_MS));
      this.flush();
      return clientId;
    }

    // Act on what the outbox made of a server frame (or of a POST's answer).
    settle(outcome) {
      if (!outcome) return;
      const clientId = outcome.pending.client_id;
      if (outcome.kind === "retrying") { this.flush(); return; }
      clearTimeout(this.deadlines.get(clientId));
      this.deadlines.delete(clientId);
      if (outcome.kind === "refused") {
        this.onEvent({ type: "refused", client_id: clientId, text: outcome.pending.text,
                       code: outcome.code, message: outcome.message });
      }
    }

    // Send what is due now; come back when the next message is due.
    flush() {
      clearTimeout(this.flushTimer);
      const { send, wait } = this.outbox.due(now());
      for (const pending of send) this.transmitMessage(pending.text, pending.client_id);
      if (wait !== null) this.flushTimer = setTimeout(() => this.flush(), wait * 1000);
    }

    async transmitMessage(text, clientId) {
      if (this.transport === "ws") {
        if (!this.sendFrame({ type: "message", message: text, client_id: clientId })) this.outbox.disconnected();
        return;
      }
      try {
        const response = await fetch(new URL(`sse/chat/${encodeURIComponent(this.room)}/messages`, await this.sseBase()), {
          method: "POST", headers: { "Content-Type": "application/json" }, credentials: "include",
          body: JSON.stringify(this.signedIn ? { message: text, client_id: clientId }
                                             : { message: text, user: this.user, client_id: clientId }),
        });
        const body = await response.json().catch(() => ({}));
        if (response.ok) { this.settle(this.outbox.receive({ ...body, type: "message", is_user: true }, now())); return; }
        const retryAfter = Number(response.headers.get("Retry-After"));
        const frame = { code: "error", message: `HTTP ${response.status}`, ...body, type: "error", client_id: clientId };
        if (frame.retry_after_ms === undefined && retryAfter >= 0) frame.retry_after_ms = retryAfter * 1000;
        this.settle(this.outbox.receive(frame, now()));
      } catch {
        // offline: try again a little later (the stream's reconnect also re-sends it)
        const pending = this.outbox.items.get(clientId);
        if (pending) { pending.sent = false; pending.not_before = now() + DEFAULT_RETRY_MS / 1000; }
        this.flush();
      }
    }

    typing(isTyping) { this.sendFrame({ type: "typing", isTyping }); }
    read(messageId) { this.sendFrame({ type: "read_receipt", messageId }); }
    // Toggle a reaction: over the WebSocket, or POSTed beside the messages with SSE.
    async react(messageId, emoji) {
      if (this.transport === "ws") { this.sendFrame({ type: "reaction", messageId, emoji }); return; }
      const response = await fetch(new URL(`sse/chat/${encodeURIComponent(this.room)}/messages`, await this.sseBase()), {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ type: "reaction", messageId, emoji, user: this.user }),
      });
      if (response.status >= 400) this.onEvent(await response.json());
    }
    stop() { this.sendFrame({ type: "stop" }); }
    remove(messageId) { this.sendFrame({ type: "delete", message_id: messageId }); } // teachers only
  }

  // Sign in with a name and the class's join code: the server answers a token and sets it as an
  // HttpOnly cookie (JavaScript never holds it), sent with every WebSocket, SSE and fetch after.
  async function signIn(name, code) {
    const base = await new ChatService({}).sseBase();
    const response = await fetch(new URL("auth/login", base), {
      method: "POST", headers: { "Content-Type": "application/json" }, credentials: "include",
      body: JSON.stringify({ name, code }),
    });
    const body = await response.json();
    if (!response.ok) throw new Error(body.message || body.code);
    return body; // { name, role, expires } (and the token, which the page does not keep)
  }

  // --- the interface --------------------------------------------------------------------------
  const ui = {
    service: null, user: "", older: null, online: new Set(), hasMore: true, receipts: new Map(), typers: new Set(),
    streams: new Map(), countdown: null, deleted: new Set(), role: null, signIn: false, reactions: new Map(),
    state: { state: "closed", attempt: 0 }, composing: false,
  };
  const render = window.chatkitRender;
  const STREAM_RENDER_MS = 50; // a streaming reply is re-rendered at most 20 times a second

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text; // never innerHTML for user or model text
    return node;
  }

  function setState({ state, attempt, delay, error }) {
    ui.state = { state, attempt, error, until: Date.now() + (delay || 0) };
    const online = state === "open";
    $("input").disabled = !online;
    $("send").disabled = !online;
    $("status").dataset.state = state;
    renderState();
  }

  function renderState() { // also called when the language changes
    const status = $("status");
    const { state, attempt, error, until } = ui.state;
    clearInterval(ui.countdown);
    if (state === "open") status.textContent = t("status.open");
    else if (state === "connecting") status.textContent = t("status.connecting");
    else if (state === "reconnecting") {
      const show = () => {
        const seconds = Math.max(0, Math.ceil((until - Date.now()) / 1000));
        status.textContent = t("status.reconnecting", { seconds, attempt });
      };
      show();
      ui.countdown = setInterval(show, 500);
    } else status.textContent = error ? t("status.closed_error", { error }) : t("status.closed");
  }

  function renderReceipt(node, id) {
    const box = node.querySelector(".receipt");
    if (!box) return;
    const readers = (ui.receipts.get(id) || []).filter((u) => u !== ui.user);
    const readBy = t("receipt.read_by", { users: i18n.formatList(readers) });
    box.textContent = readers.length ? `✓✓ ${readBy}` : "✓";
    box.title = readers.length ? readBy : t("receipt.sent");
  }

  function renderReactions(node, id) {
    const box = node.querySelector(".reactions");
    if (box) render.reactionBar(box, ui.reactions.get(id), ui.user, (emoji) => ui.service.react(id, emoji));
  }

  function addMessage(msg) {
    const list = $("list");
    if (list.querySelector(`[data-id="${msg.id}"]`)) return;
    if (msg.deleted || ui.deleted.has(msg.id)) return; // a tombstone: nothing to show
    const node = el("div", `message ${msg.is_user ? "user" : "ai"}`);
    node.dataset.id = msg.id;
    node.append(render.avatar(msg.is_user ? "user" : "ai", msg.user || "AI"));
    const content = el("div", "content");
    Object.assign(node.dataset, { user: msg.user || "AI", timestamp: msg.timestamp || "", status: msg.status || "" });
    content.append(el("div", "meta", metaText(node)));
    content.append(render.renderInto(el("div", "text"), msg.message));
    content.append(el("div", "reactions"));
    if (msg.is_user && msg.user === ui.user) content.append(el("div", "receipt"));
    if (ui.role === "teacher") {
      const remove = el("button", "delete link", "delete");
      remove.type = "button";
      remove.title = "delete this message for everyone";
      remove.addEventListener("click", () => ui.service.remove(msg.id));
      content.append(remove);
    }
    node.append(content);
    if (msg.reactions) ui.reactions.set(msg.id, msg.reactions); // a history page carries them
    const after = [...list.children].find((child) => Number(child.dataset.id) > msg.id);
    list.insertBefore(node, after || null);
    renderReceipt(node, msg.id);
    renderReactions(node, msg.id);
    if (msg.is_user && msg.user !== ui.user) markUnread(msg.id, node);
  }

  // Read receipts mean *read*: sent once another user's message is visible in a focused tab.
  const unread = new Map();  // message id → its node, not seen yet
  const sight = typeof IntersectionObserver === "function" ? new IntersectionObserver((entries) => {
    for (const entry of entries) entry.target.dataset.visible = entry.isIntersecting ? "1" : "";
    sendReadReceipts();
  }) : null;
  function markUnread(id, node) {
    unread.set(id, node);
    if (sight) sight.observe(node); else sendReadReceipts();
  }
  function sendReadReceipts() {
    if (document.visibilityState !== "visible" || !document.hasFocus()) return;
    for (const [id, node] of unread) {
      if (sight && node.dataset.visible !== "1") continue;
      unread.delete(id);
      if (sight) sight.unobserve(node);
      ui.service.read(id);
    }
  }
  document.addEventListener("visibilitychange", sendReadReceipts);
  window.addEventListener("focus", sendReadReceipts);

  function metaText(node) { // "ann · 오후 3:04 [취소됨]": Intl time, translated status
    const { user, timestamp, status } = node.dataset;
    const shown = status && status !== "complete" ? ` [${t(`message.status.${status}`)}]` : "";
    return `${user} · ${i18n.formatTime(timestamp)}${shown}`;
  }

  function scrollDown() { const box = $("messages"); box.scrollTop = box.scrollHeight; }

  // A streaming reply keeps its node; its text is re-rendered as Markdown at most every
  // STREAM_RENDER_MS (one DOM swap per frame: no flicker, and partial Markdown never breaks layout).
  function stream(id, chunk) {
    let node = ui.streams.get(id);
    if (!node) {
      node = el("div", "message ai streaming");
      node.dataset.id = id;
      node.append(render.avatar("ai", "AI"));
      const content = el("div", "content");
      content.append(el("div", "text ck-md"));
      node.append(content);
      node.raw = "";
      node.cursor = el("span", "cursor", "▊");
      node.lastRender = 0;
      $("streams").append(node);
      ui.streams.set(id, node);
    }
    node.raw += chunk;
    if (!node.timer) {
      const wait = Math.max(0, node.lastRender + STREAM_RENDER_MS - Date.now());
      node.timer = setTimeout(() => renderStream(node), wait);
    }
    $("stop").hidden = ui.service.transport !== "ws";
  }

  function renderStream(node) {
    node.timer = null;
    node.lastRender = Date.now();
    const text = node.querySelector(".text");
    render.renderInto(text, node.raw);
    render.lastBlock(text).append(node.cursor);
    scrollDown();
  }

  function endStream(id) {
    const node = ui.streams.get(id);
    if (node) { clearTimeout(node.timer); node.remove(); }
    ui.streams.delete(id);
    if (!ui.streams.size) $("stop").hidden = true;
  }

  function renderOnline() {
    $("online").textContent = t("room.online", { users: [...ui.online].sort().join(", ") });
  }

  function renderTyping() {
    const names = [...ui.typers];
    $("typing").textContent = names.length === 0 ? "" :
      t(names.length === 1 ? "typing.one" : "typing.many", { users: i18n.formatList(names) });
  }

  function onEvent(frame) {
    switch (frame.type) {
      case "connection":
        ui.online = new Set(frame.online);
        renderOnline();
        break;
      case "user_join":
        ui.online.add(frame.username);
        renderOnline();
        break;
      case "user_leave":
        ui.online.delete(frame.username);
        ui.typers.delete(frame.username);
        renderOnline();
        renderTyping();
        break;
      case "message":
        addMessage(frame);
        break;
      case "ai_chunk":
        stream(frame.id, frame.chunk);
        break;
      case "ai_complete":
        endStream(frame.id);
        addMessage({ id: frame.id, is_user: false, user: "AI", message: frame.message,
                     status: frame.status, timestamp: new Date().toISOString() });
        break;
      case "typing":
        if (frame.is_typing) ui.typers.add(frame.user); else ui.typers.delete(frame.user);
        renderTyping();
        break;
      case "reaction": { // the message's full state (also replayed on resume): just replace it
        ui.reactions.set(frame.message_id, frame.reactions);
        const node = $("list").querySelector(`[data-id="${frame.message_id}"]`);
        if (node) renderReactions(node, frame.message_id);
        break;
      }
      case "read_receipt": {
        const readers = ui.receipts.get(frame.message_id) || [];
        if (!readers.includes(frame.user)) readers.push(frame.user);
        ui.receipts.set(frame.message_id, readers);
        const node = $("list").querySelector(`[data-id="${frame.message_id}"]`);
        if (node) renderReceipt(node, frame.message_id);
        break;
      }
      case "message_deleted": {
        ui.deleted.add(frame.message_id);
        const node = $("list").querySelector(`[data-id="${frame.message_id}"]`);
        if (node) node.remove();
        break;
      }
      case "error":
        $("typing").textContent = i18n.errorText(frame.code, frame.message);
        break;
      case "refused": { // a message of ours the server will not store: shown, marked as not sent
        const node = el("div", "message user refused");
        node.dataset.clientId = frame.client_id;
        node.append(el("div", "avatar", "⚠"));
        const content = el("div", "content");
        content.append(el("div", "meta", `not sent · ${frame.code}: ${frame.message}`));
        content.append(el("span", "text", frame.text));
        node.append(content);
        $("list").append(node);
        break;
      }
    }
    scrollDown();
  }

  async function loadOlder() {
    const first = $("list").firstElementChild;
    const url = new URL(`api/chat/${encodeURIComponent(ui.service.room)}/messages`, location.href);
    url.searchParams.set("limit", "20");
    if (first) url.searchParams.set("before", first.dataset.id);
    const page = await (await fetch(url, { credentials: "same-origin" })).json();
    for (const msg of page.messages) addMessage(msg);
    ui.hasMore = page.has_more;
    $("older").hidden = !page.has_more;
  }

  // Typing: at most one event per 500 ms, "stopped" after 3 s without input.
  let lastTyping = 0, typingTimer = null;
  function onInput() {
    const now = Date.now();
    if (now - lastTyping >= 500) { ui.service.typing(true); lastTyping = now; }
    clearTimeout(typingTimer);
    typingTimer = setTimeout(() => { ui.service.typing(false); lastTyping = 0; }, 3000);
  }

  function join(room, user, transport, signedIn = false) {
    ui.user = user;
    $("join").hidden = true;
    $("chat").hidden = false;
    $("room-name").textContent = `#${room}`;
    $("transport-name").textContent = transport === "sse" ? "SSE + POST" : "WebSocket";
    ui.service = new ChatService({ room, user, transport, onEvent, onState: setState, signedIn });
    window.chatkit = ui; // for tests and the curious
    ui.service.connect();
    loadOlder().catch(() => {});
    const params = new URLSearchParams(location.search);
    params.set("room", room); params.set("user", user); params.set("transport", transport);
    history.replaceState(null, "", `${location.pathname}?${params}`);
  }

  $("join").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    // NFC, as the server does: "한" typed as conjoining jamo is the same room and name.
    const room = form.get("room").trim().normalize("NFC"), name = form.get("user").trim().normalize("NFC");
    const transport = form.get("transport");
    if (!ui.signIn) { join(room, name, transport); return; }
    try {
      const who = await signIn(name, form.get("code"));
      ui.role = who.role;
      join(room, who.name, transport, true);
    } catch (error) {
      $("join-error").textContent = `⚠ ${error.message}`;
    }
  });
  $("send-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (ui.composing) return; // never send half a syllable (see the keydown handler below)
    const text = $("input").value;
    if (!text.trim()) return;
    ui.service.send(text);
    $("input").value = "";
    clearTimeout(typingTimer);
    ui.service.typing(false);
    lastTyping = 0;
  });
  $("input").addEventListener("input", onInput);
  // The input is a textarea (Markdown has lines): Enter sends, Shift+Enter is a new line.
  // IME input (Korean, Japanese, Chinese…): the Enter that finishes composing a syllable is not
  // "send" (nor a new line) — `isComposing` is the standard flag; keyCode 229 is what Safari and
  // older browsers report for that Enter instead.
  $("input").addEventListener("keydown", (event) => {
    if (event.key !== "Enter" || event.shiftKey) return;
    event.preventDefault();
    if (event.isComposing || event.keyCode === 229) return;
    $("send-form").requestSubmit();
  });
  // Composing is typing too (some IMEs fire no input event until a syllable is committed).
  $("input").addEventListener("compositionstart", () => { ui.composing = true; onInput(); });
  $("input").addEventListener("compositionupdate", onInput);
  $("input").addEventListener("compositionend", () => { ui.composing = false; });
  document.addEventListener("chatkit:language", () => { // i18n.js switched: re-render dynamic text
    renderState();
    renderOnline();
    renderTyping();
    for (const node of $("list").children) {
      const meta = node.querySelector(".meta");
      if (meta) meta.textContent = metaText(node);
      renderReceipt(node, Number(node.dataset.id));
    }
  });
  $("older").addEventListener("click", () => loadOlder());
  $("stop").addEventListener("click", () => ui.service.stop());
  $("leave").addEventListener("click", () => {
    ui.service.disconnect();
    $("chat").hidden = true;
    $("join").hidden = false;
  });

  // ?room=&user=&transport= joins at once (links to share with a class).
  const params = new URLSearchParams(location.search);
  if (params.get("room")) $("room").value = params.get("room");
  if (params.get("user")) $("user").value = params.get("user");
  if (params.get("transport") === "sse") document.querySelector('input[value="sse"]').checked = true;
  // With sign-in on (config.json's sign_in), the page asks for the join code instead.
  fetch(new URL("config.json", location.href)).then((r) => r.json()).then((config) => {
    ui.signIn = config.sign_in === "join_code";
    $("code-label").hidden = !ui.signIn;
    $("code").required = ui.signIn;
    if (!ui.signIn && params.get("room") && params.get("user")) {
      join(params.get("room"), params.get("user"), params.get("transport") || "ws");
    }
  });
})();
