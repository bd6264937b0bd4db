// chatkit's exactly-once delivery rules for the page: the JavaScript copy of
// chatkit/resume.py's ResumeState. No DOM, no network: the page loads it with a plain
// <script> (it defines window.ChatkitResume), Node loads it with require() (module.exports),
// and tests/test_resume.py replays tests/vectors/resume.json against both copies.
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

  return { ResumeState };
});
