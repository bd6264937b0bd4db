// chatkit's client rules for the page: the JavaScript copy of chatkit/resume.py (ResumeState:
// exactly-once delivery; Outbox: unacknowledged messages, paced re-sends, refusals matched by
// client_id). No DOM, no network, no clock: the page loads it with a plain <script> (it defines
// window.ChatkitResume), Node loads it with require() (module.exports), and tests/test_resume.py
// replays tests/vectors/resume.json and outbox.json against both copies.
"use strict";

(function (root, factory) {
  const api = factory();
  if (typeof module === "object" && module.exports) module.exports = api;
  else root.ChatkitResume = api;
})(typeof self !== "undefined" ? self : this, function () {
  // Feed every frame to accept() (a `connection` frame to connected() first). accept() returns
  // the event to show, or null for a duplicate. `cursor` is what to resume after (?after=):
  // the newest delivered id, or one less than a reply still streaming.
  class ResumeState {
    constructor(after = null) {
      this._cursor = after;
      this.delivered = new Set();
      this.partial = new Map(); // reply id -> text seen so far
    }

    get cursor() {
      if (this.partial.size) return Math.min(...this.partial.keys()) - 1;
      return this._cursor;
    }

    connected(frame) {
      if (this._cursor === null && Number.isInteger(frame.last_id)) this._cursor = frame.last_id;
    }

    mark(id) {
      this.delivered.add(id);
      if (this._cursor === null || id > this._cursor) this._cursor = id;
    }

    accept(frame) {
      const id = frame.id;
      if (!Number.isInteger(id)) return frame;
      if (this.delivered.has(id)) return null; // a replay, or the answer to a re-send
      if (frame.type === "message") {
        const replyId = frame.reply_id;
        if (Number.isInteger(replyId) && !this.delivered.has(replyId) && !this.partial.has(replyId)) {
          this.partial.set(replyId, ""); // its reply has begun: stay below it
        }
        if (this.partial.has(id) && !(frame.is_user ?? true)) {
          // a reply we saw streaming, finished while we were away
          this.partial.delete(id);
          const status = frame.status ?? "complete";
          frame = { type: "ai_complete", message: frame.message ?? "", id, status,
                    cancelled: status === "cancelled", replayed: true };
        }
        this.mark(id);
      } else if (frame.type === "ai_chunk") {
        const have = this.partial.get(id) ?? "";
        const text = frame.chunk ?? "";
        if (typeof text !== "string") return null;
        if (frame.snapshot) {
          if (!this.partial.has(id)) this.partial.set(id, have); // streaming or queued: stay below it
          if (!text.startsWith(have) || text === have) return null; // nothing new
          this.partial.set(id, text);
          return { type: "ai_chunk", chunk: text.slice(have.length), id };
        }
        this.partial.set(id, have + text);
      } else if (frame.type === "ai_complete") {
        this.partial.delete(id);
        this.mark(id);
      }
      return frame;
    }
  }

  // --- the outbox (times are seconds on any monotonic clock) ---------------------------------
  const RETRY_CODES = new Set(["rate_limited", "busy", "shutting_down", "store_full", "store_error"]);
  const DEFAULT_RETRY_MS = 1000;
  const DEFAULT_LIMITS = Object.freeze({ max_text: 4000, messages_per_s: 5, message_burst: 10,
                                         frames_per_s: 50, frame_burst: 100 });

  // The `limits` of a connection frame; missing or malformed fields keep the defaults.
  function limitsFrom(obj) {
    const limits = { ...DEFAULT_LIMITS };
    if (obj && typeof obj === "object" && !Array.isArray(obj)) {
      for (const name of Object.keys(DEFAULT_LIMITS)) {
        const value = obj[name];
        if (typeof value === "number" && value > 0) limits[name] = value;
      }
    }
    return limits;
  }

  // A token bucket a little slower (margin) than the server's, so clock jitter is not refused.
  class Pacer {
    constructor(rate, burst, now, margin = 0.9) {
      this.rate = rate * margin;
      this.burst = Math.max(1, Math.trunc(burst));
      this.tokens = this.burst;
      this.stamp = now;
    }
    refill(now) {
      this.tokens = Math.min(this.burst, this.tokens + Math.max(0, now - this.stamp) * this.rate);
      this.stamp = now;
    }
    take(now) {
      this.refill(now);
      if (this.tokens >= 1) { this.tokens -= 1; return true; }
      return false;
    }
    wait(now) { this.refill(now); return this.tokens >= 1 ? 0 : (1 - this.tokens) / this.rate; }
    drain(now) { this.refill(now); this.tokens = 0; }
  }

  class Outbox {
    constructor(limit = 100, limits = null, now = 0) {
      this.limit = limit;
      this.limits = limits || { ...DEFAULT_LIMITS };
      this.pacer = new Pacer(this.limits.messages_per_s, this.limits.message_burst, now);
      this.items = new Map(); // client_id -> {client_id, text, sent, not_before, attempts}, in order
      this.online = false; // nothing is due while offline
    }
    get size() { return this.items.size; }
    get texts() { return [...this.items.values()].map((p) => p.text); }
    add(clientId, text) {
      const refuse = (code, message) => Object.assign(new Error(message), { code });
      if (this.items.has(clientId)) throw refuse("duplicate_client_id", `client_id ${clientId} is already waiting`);
      if (this.items.size >= this.limit) throw refuse("outbox_full", `outbox full (${this.limit} unsent messages)`);
      const pending = { client_id: clientId, text, sent: false, not_before: 0, attempts: 0 };
      this.items.set(clientId, pending);
      return pending;
    }
    remove(clientId) { const p = this.items.get(clientId) || null; this.items.delete(clientId); return p; }
    connected(limits, now) {
      this.limits = limits;
      this.pacer = new Pacer(limits.messages_per_s, limits.message_burst, now);
      this.online = true;
      for (const p of this.items.values()) p.sent = false;
    }
    disconnected() { this.online = false; for (const p of this.items.values()) p.sent = false; }
    // What to send now (marked sent), and the seconds until the next one is due (null: none waits).
    due(now) {
      const send = [];
      let wait = null;
      if (!this.online) return { send, wait };
      for (const p of this.items.values()) {
        if (p.sent) continue;
        if (p.not_before > now) {
          const delay = p.not_before - now;
          wait = wait === null ? delay : Math.min(wait, delay);
          continue;
        }
        if (!this.pacer.take(now)) {
          const delay = this.pacer.wait(now);
          wait = wait === null ? delay : Math.min(wait, delay);
          break; // keep the order
        }
        p.sent = true;
        p.attempts += 1;
        send.push(p);
      }
      return { send, wait };
    }
    // Match a server frame to a waiting message: {kind: "acknowledged" | "refused" | "retrying", ...}
    // or null. The same rules as chatkit/resume.py's Outbox.receive.
    receive(frame, now) {
      const clientId = frame.client_id;
      if (frame.type === "message") {
        if (typeof clientId === "string" && this.items.has(clientId) && (frame.is_user ?? true)) {
          const pending = this.remove(clientId);
          return { kind: "acknowledged", pending, frame };
        }
        return null;
      }
      if (frame.type !== "error") return null;
      const code = typeof frame.code === "string" ? frame.code : "error";
      let delayMs = frame.retry_after_ms;
      if (typeof delayMs !== "number" || !(delayMs >= 0)) delayMs = DEFAULT_RETRY_MS;
      const at = now + delayMs / 1000;
      if (typeof clientId === "string") {
        const pending = this.items.get(clientId);
        if (!pending) return null;
        if (RETRY_CODES.has(code)) {
          pending.sent = false;
          pending.not_before = at;
          if (code === "rate_limited") this.pacer.drain(now);
          return { kind: "retrying", pending, code, at };
        }
        this.items.delete(clientId);
        return { kind: "refused", pending, code, message: String(frame.message ?? "") };
      }
      if (RETRY_CODES.has(code)) {
        if (code === "rate_limited") this.pacer.drain(now);
        let first = null;
        for (const p of this.items.values()) {
          if (p.sent) {
            p.sent = false;
            p.not_before = at;
            first = first || { kind: "retrying", pending: p, code, at };
          }
        }
        return first;
      }
      return null;
    }
  }

  return { ResumeState, Outbox, Pacer, limitsFrom, RETRY_CODES, DEFAULT_LIMITS, DEFAULT_RETRY_MS };
});
