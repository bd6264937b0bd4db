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
      url.searchParams.set("presence", "batch"); // joins/leaves as one `presence` frame per tick
      return url.toString();
    }

    // The SSE server has its own port, given by config.json. Behind a load balancer that routes
    // every path on one origin (config.json's same_origin, see deploy/nginx.conf) it is this page's
    // own base. Behind jupyter-server-proxy it is reached through .../proxy/<port>/ next to this
    // page's own proxied path.
    async sseBase() {
      if (this.httpBase) return this.httpBase;
      const config = await (await fetch(new URL("config.json", location.href))).json();
      const port = String(config.http_port);
      const page = new URL(".", location.href);
      const proxied = page.pathname.match(/^(.*\/proxy\/)(?:absolute\/)?\d+\/$/);
      if (config.same_origin) {
        this.httpBase = page.toString();                                         // load balancer
      } else if (proxied) {
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
        url.searchParams.set("presence", "batch");
        const source = new EventSource(url, { withCredentials: true }); // the sign-in cookie, cross-port
        this.source = source;
        const types = ["connection", "message", "ai_chunk", "ai_complete", "typing", "user_join",
                       "user_leave", "presence", "read_receipt", "reaction", "error", "message_deleted"];
        for (const type of types) {
          source.addEventListener(type, (event) => {
            if (event.data === undefined) return; // EventSource's own "error": the stream dropped
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
    // `attachment` ({id, name, …}: an upload's answer) makes it a file message; `text` is its caption.
    send(text, attachment = null) {
      const clientId = newClientId();
      const refuse = (code, message) => this.onEvent({ type: "refused", client_id: clientId, text, attachment, code, message });
      if (text.length > this.limits.max_text) {
        refuse("too_long", `message is ${text.length} characters; the limit is ${this.limits.max_text}`);
        return clientId;
      }
      try {
        const pending = this.outbox.add(clientId, text);
        if (attachment) pending.attachment = attachment; // re-sent with it, like the text
      } catch (error) { refuse(error.code, error.message); return clientId; }
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
                       attachment: outcome.pending.attachment, code: outcome.code, message: outcome.message });
      }
    }

    // Send what is due now; come back when the next message is due.
    flush() {
      clearTimeout(this.flushTimer);
      const { send, wait } = this.outbox.due(now());
      for (const pending of send) this.transmitMessage(pending.text, pending.client_id, pending.attachment);
      if (wait !== null) this.flushTimer = setTimeout(() => this.flush(), wait * 1000);
    }

    async transmitMessage(text, clientId, attachment) {
      const message = { message: text, client_id: clientId };
      if (attachment) message.attachment = { id: attachment.id }; // the server fills in the rest
      if (this.transport === "ws") {
        if (!this.sendFrame({ type: "message", ...message })) this.outbox.disconnected();
        return;
      }
      try {
        const response = await fetch(new URL(`sse/chat/${encodeURIComponent(this.room)}/messages`, await this.sseBase()), {
          method: "POST", headers: { "Content-Type": "application/json" }, credentials: "include",
          body: JSON.stringify(this.signedIn ? message : { ...message, user: this.user }),
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

    // Upload a file (raw body) to the HTTP port; resolves to the server's answer {id, name, type,
    // size, url, thumb, width, height}, or throws an Error with the server's `code` (413 too_large,
    // 415 unsupported_type, …) and its JSON body.
    async upload(blob, name) {
      const url = new URL("files", await this.sseBase());
      url.searchParams.set("room", this.room);
      const type = String(blob.type || "").split(";")[0].trim() || "application/octet-stream";
      let response;
      try {
        response = await fetch(url, {
          method: "POST", credentials: "include", body: blob,
          headers: { "Content-Type": type, "X-Filename": encodeURIComponent(name) },
        });
      } catch (error) {
        throw Object.assign(new Error(String(error.message || error)), { code: "upload_failed", body: {} });
      }
      const body = await response.json().catch(() => ({}));
      if (response.ok) return body;
      throw Object.assign(new Error(body.message || `HTTP ${response.status}`),
                          { code: body.code || `http_${response.status}`, status: response.status, body });
    }

    // A server path of a file ("/files/<sha256>"), as a URL on the HTTP port (behind a proxy too).
    async fileUrl(path) {
      return new URL(String(path).replace(/^\/+/, ""), await this.sseBase()).toString();
    }
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
    if (!response.ok) throw Object.assign(new Error(body.message || body.code), { code: body.code });
    return body; // { name, role, expires } (and the token, which the page does not keep)
  }

  // --- the interface --------------------------------------------------------------------------
  const ui = {
    service: null, user: "", older: null, online: new Set(), onlineCount: 0, hasMore: true, receipts: new Map(), typers: new Set(),
    streams: new Map(), countdown: null, deleted: new Set(), role: null, signIn: false, reactions: new Map(),
    state: { state: "closed", attempt: 0 }, composing: false, maxUpload: null,
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
    $("attach").disabled = !online;
    $("record").disabled = !online && !recorder.media; // a recording can always be stopped
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
    if (msg.attachment) content.append(attachmentView(msg.attachment));
    if (!msg.attachment || msg.message) content.append(render.renderInto(el("div", "text"), msg.message));
    content.append(el("div", "reactions"));
    if (msg.is_user && msg.user === ui.user) content.append(el("div", "receipt"));
    if (ui.role === "teacher") {
      const remove = el("button", "delete link", t("message.delete"));
      remove.type = "button";
      remove.title = t("message.delete_title");
      Object.assign(remove.dataset, { i18n: "message.delete", i18nTitle: "message.delete_title" }); // a switch re-labels it
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

  // --- attachments (docs/protocol.md "Files") --------------------------------------------------
  // The server describes a message's file: {id, name, type, size, url, thumb, width, height}, with
  // url/thumb paths on the HTTP port. Built with DOM APIs; the name is only ever text or alt text.
  const FILE_PATH = /^\/files\/[0-9a-f]{64}(?:\/thumb)?$/; // nothing else is loaded from a message
  const THUMB_PX = 240; // the box a thumbnail is shown in (CSS has the same)

  function formatSize(bytes) {
    const n = Number(bytes) || 0;
    const [value, unit] = n >= 1e6 ? [n / 1e6, "megabyte"] : n >= 1e3 ? [n / 1e3, "kilobyte"] : [n, "byte"];
    return new Intl.NumberFormat(i18n.language, { style: "unit", unit, unitDisplay: unit === "byte" ? "long" : "short",
                                                 maximumFractionDigits: 1 }).format(value);
  }

  function setFileUrl(node, attribute, path) {
    if (typeof path !== "string" || !FILE_PATH.test(path)) return;
    ui.service.fileUrl(path).then((url) => node.setAttribute(attribute, url));
  }

  function attachmentView(file) {
    const name = String(file.name || "file");
    const type = String(file.type || "");
    const box = el("div", "attachment");
    box.dataset.type = type;
    if (type.startsWith("image/")) {
      const link = el("a", "image");
      link.target = "_blank";
      link.rel = "noopener noreferrer"; // the full image in a new tab, no window.opener
      const img = el("img", "thumb");
      img.alt = name;
      img.title = name;
      img.decoding = "async";
      const w = Number(file.width), h = Number(file.height);
      if (w > 0 && h > 0) { // reserve the box, so the list does not jump when it loads
        const scale = Math.min(1, THUMB_PX / Math.max(w, h));
        img.width = Math.max(1, Math.round(w * scale));
        img.height = Math.max(1, Math.round(h * scale));
      }
      setFileUrl(link, "href", file.url);
      setFileUrl(img, "src", file.thumb || file.url);
      link.append(img);
      box.append(link);
    } else if (type.startsWith("audio/")) {
      const audio = el("audio");
      audio.controls = true;
      audio.preload = "metadata";
      audio.setAttribute("aria-label", t("attachment.audio", { name }));
      setFileUrl(audio, "src", file.url);
      box.append(audio);
    } else {
      const link = el("a", "file", `${name} (${formatSize(file.size)})`);
      link.rel = "noopener noreferrer";
      link.download = name; // and the server sends Content-Disposition: attachment
      setFileUrl(link, "href", file.url);
      box.append(link);
    }
    return box;
  }

  // Show how an upload goes: text for sighted users, role=status for screen readers.
  function uploadStatus(text, state) {
    const box = $("upload-status");
    box.textContent = text;
    box.dataset.state = state;
  }

  function uploadErrorText(error, name) {
    const { code, body = {} } = error;
    const known = { too_large: "upload.too_large", unsupported_type: "upload.unsupported_type",
                    unsupported_media_type: "upload.unsupported_type", bad_image: "upload.bad_image",
                    image_too_large: "upload.image_too_large", empty_file: "upload.empty_file",
                    upload_failed: "upload.failed" };
    const message = code in known
      ? t(known[code], { name, max: body.max ? formatSize(body.max) : "?" })
      : i18n.errorMessage(code, body.message || error.message); // e.g. expired_token, in the page's language
    return t("error.line", { code, message });
  }

  // Upload a file, then send it as a message (the text in the box is its caption when `caption`).
  async function sendFile(blob, name, { caption = true } = {}) {
    if (!ui.service) return;
    name = String(name || "file").normalize("NFC");
    if (ui.maxUpload && blob.size > ui.maxUpload) { // config.json's max_upload_bytes: do not send it to learn that
      uploadStatus(uploadErrorText({ code: "too_large", body: { max: ui.maxUpload } }, name), "error");
      return;
    }
    uploadStatus(t("upload.sending", { name }), "busy");
    let file;
    try {
      file = await ui.service.upload(blob, name);
    } catch (error) {
      uploadStatus(uploadErrorText(error, name), "error");
      return;
    }
    uploadStatus("", "done");
    const text = caption ? $("input").value : "";
    if (caption) $("input").value = "";
    ui.service.send(text, file);
  }

  // Voice messages: MediaRecorder where the browser offers it (a secure context: https or
  // localhost); the button stays hidden elsewhere. Toggle: the first press records, the second
  // stops and sends the recording as an audio attachment. Nothing is played from a blob: URL.
  const recorder = { media: null, discard: false, timer: null };
  const canRecord = () => Boolean(window.isSecureContext && window.MediaRecorder && navigator.mediaDevices
                                  && navigator.mediaDevices.getUserMedia);
  const RECORD_TYPES = [["audio/webm;codecs=opus", "webm"], ["audio/webm", "webm"],
                        ["audio/ogg;codecs=opus", "ogg"], ["audio/mp4", "m4a"]];

  function showRecording(on, started = 0) {
    const button = $("record");
    button.setAttribute("aria-pressed", on ? "true" : "false");
    button.dataset.state = on ? "recording" : "idle";
    const label = button.querySelector("[data-i18n]");
    label.dataset.i18n = on ? "input.record_stop" : "input.record";
    label.textContent = t(label.dataset.i18n);
    button.title = label.textContent;
    clearInterval(recorder.timer);
    const clock = $("record-time");
    clock.textContent = "";
    if (!on) return;
    const tick = () => {
      const s = Math.floor((Date.now() - started) / 1000);
      clock.textContent = `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
    };
    tick();
    recorder.timer = setInterval(tick, 250);
  }

  async function toggleRecording() {
    if (recorder.media) { recorder.media.stop(); return; }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (error) { // refused by the user, no microphone, …
      uploadStatus(t("error.line", { code: "microphone", message: t("record.unavailable", { error: error.name || error }) }), "error");
      return;
    }
    const [mimeType, extension] = RECORD_TYPES.find(([type]) => MediaRecorder.isTypeSupported(type)) || ["", "webm"];
    const media = new MediaRecorder(stream, mimeType ? { mimeType } : undefined);
    const chunks = [];
    media.addEventListener("dataavailable", (event) => { if (event.data.size) chunks.push(event.data); });
    media.addEventListener("stop", () => {
      for (const track of stream.getTracks()) track.stop(); // the browser's "recording" indicator goes off
      recorder.media = null;
      showRecording(false);
      $("record").disabled = ui.state.state !== "open";
      if (recorder.discard || !chunks.length) return;
      const type = (media.mimeType || mimeType || "audio/webm").split(";")[0];
      const stamp = new Date().toISOString().replace(/[:.]/g, "-");
      sendFile(new Blob(chunks, { type }), `voice-${stamp}.${extension}`, { caption: false });
    });
    recorder.media = media;
    recorder.discard = false;
    media.start();
    showRecording(true, Date.now());
  }

  function stopRecording(discard) {
    if (!recorder.media) return;
    recorder.discard = discard;
    recorder.media.stop();
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

  // A big room's `connection` frame lists only the first names (`online_count` says how many are
  // online) and each `presence` frame carries the exact `count`: the list stays a true subset, the
  // line says how many it leaves out.
  function setOnlineCount(count) {
    ui.onlineCount = Number.isInteger(count) && count >= 0 ? count : ui.online.size;
  }

  function renderOnline() {
    const users = [...ui.online].sort().join(", ");
    const more = ui.onlineCount - ui.online.size;
    $("online").textContent = more > 0 ? t("room.online_more", { users, count: more }) : t("room.online", { users });
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
        setOnlineCount(frame.online_count);
        renderOnline();
        break;
      case "user_join": // the seed's frame (and, with a broker, joins on other processes)
        if (!ui.online.has(frame.username)) { ui.online.add(frame.username); ui.onlineCount += 1; }
        renderOnline();
        break;
      case "user_leave":
        if (ui.online.delete(frame.username) || ui.onlineCount > ui.online.size) ui.onlineCount -= 1;
        renderOnline();
        // The typing line also shows the last error: redraw it only if a typer really left.
        if (ui.typers.delete(frame.username)) renderTyping();
        break;
      case "presence": { // ?presence=batch: a tick's joins and leaves in one frame, applied in order
        let typerLeft = false;
        for (const name of frame.joined || []) ui.online.add(name);
        for (const name of frame.left || []) {
          ui.online.delete(name);
          if (ui.typers.delete(name)) typerLeft = true;
        }
        setOnlineCount(frame.count);
        renderOnline();
        if (typerLeft) renderTyping();
        break;
      }
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
        content.append(el("div", "meta", t("message.not_sent", { code: frame.code, message: i18n.errorMessage(frame.code, frame.message) })));
        if (frame.attachment) content.append(el("div", "attachment-name", String(frame.attachment.name || "")));
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
      $("join-error").textContent = error.code ? i18n.errorText(error.code, error.message) // in the page's language
        : t("signin.unreachable", { error: error.message });
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
    $("record").title = t($("record").querySelector("[data-i18n]").dataset.i18n);
    for (const node of $("list").children) {
      const meta = node.querySelector(".meta");
      if (meta) meta.textContent = metaText(node);
      renderReceipt(node, Number(node.dataset.id));
    }
  });
  // Files: the attach button opens the (hidden) file input; an image pasted into the box or a
  // file dropped on the chat is sent the same way.
  $("attach").addEventListener("click", () => $("file").click());
  $("file").addEventListener("change", () => {
    const input = $("file");
    const [file] = input.files;
    if (file) sendFile(file, file.name);
    input.value = ""; // the same file may be picked again
  });
  $("input").addEventListener("paste", (event) => {
    const [file] = event.clipboardData ? event.clipboardData.files : [];
    if (!file || $("attach").disabled || $("attach").hidden) return; // plain text pastes as usual
    event.preventDefault();
    const extension = (file.type.split("/")[1] || "bin").replace(/[^a-z0-9]/gi, "");
    sendFile(file, file.name && file.name !== "image.png" ? file.name : `pasted.${extension}`);
  });
  $("chat").addEventListener("dragover", (event) => {
    if (!event.dataTransfer || !event.dataTransfer.types.includes("Files")) return;
    event.preventDefault(); // allow the drop
    event.dataTransfer.dropEffect = "copy";
  });
  $("chat").addEventListener("drop", (event) => {
    const [file] = event.dataTransfer ? event.dataTransfer.files : [];
    if (!file) return;
    event.preventDefault(); // never navigate away to the dropped file
    if (!$("attach").disabled && !$("attach").hidden) sendFile(file, file.name);
  });
  $("record").addEventListener("click", () => toggleRecording());
  $("older").addEventListener("click", () => loadOlder());
  $("stop").addEventListener("click", () => ui.service.stop());
  $("leave").addEventListener("click", () => {
    stopRecording(true);
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
    // A server that takes uploads states its limit; only then are the attach and record buttons shown.
    ui.maxUpload = Number(config.max_upload_bytes) || null;
    $("attach").hidden = !ui.maxUpload;
    $("record").hidden = !ui.maxUpload || !canRecord();
    $("code-label").hidden = !ui.signIn;
    $("code").required = ui.signIn;
    if (!ui.signIn && params.get("room") && params.get("user")) {
      join(params.get("room"), params.get("user"), params.get("transport") || "ws");
    }
  });
})();
