// chatkit's message rendering for the page: Markdown -> sanitized DOM, highlighted code, SVG avatars.
// Plain JavaScript, no build step. Uses the vendored markdown-it, DOMPurify and highlight.js
// (chatkit/web/vendor/, versions in vendor/README.md) with the same rules as chatkit/render.py:
//   - markdown-it with raw HTML off: "<img onerror=...>" in a message is text, never a tag;
//   - DOMPurify over the result with an allow-list of tags, attributes and URL schemes
//     (http, https, mailto, relative; no javascript:, no data:), returned as a DOM fragment
//     (no second HTML parse of the string, so no mutation XSS);
//   - every link opens in a new tab with rel="noopener noreferrer";
//   - Markdown images become links (a message must not make readers' browsers fetch URLs).
"use strict";

(() => {
  const MAX_RENDER_CHARS = 20000; // longer text is shown as plain text, as in chatkit/render.py
  const ALLOWED_TAGS = ["p", "br", "hr", "em", "strong", "s", "del", "code", "pre", "blockquote",
    "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6", "a", "span", "div",
    "table", "thead", "tbody", "tr", "th", "td"];
  const ALLOWED_ATTR = ["href", "title", "class", "start", "style"];
  const SAFE_URI = /^(?:(?:https?|mailto):|[^a-z]|[a-z+.-]+(?:[^a-z+.\-:]|$))/i;
  const ALIGN = /^text-align:\s*(left|right|center);?$/;

  const hasLibs = typeof window.markdownit === "function" && typeof window.DOMPurify === "function";

  let md = null, purify = null;
  if (hasLibs) {
    md = window.markdownit("commonmark", {
      html: false, breaks: true, linkify: false, typographer: false,
      highlight(code, lang) {
        const name = (lang || "").trim().split(/\s+/)[0].toLowerCase();
        if (!name || !window.hljs || !window.hljs.getLanguage(name)) return ""; // escaped by markdown-it
        const body = window.hljs.highlight(code, { language: name, ignoreIllegals: true }).value;
        return `<pre class="highlight"><code class="hljs language-${md.utils.escapeHtml(name)}">${body}</code></pre>\n`;
      },
    }).enable(["table", "strikethrough"]);
    md.renderer.rules.image = (tokens, idx, options, env, self) => {
      const token = tokens[idx];
      const alt = self.renderInlineAsText(token.children || [], options, env);
      const src = token.attrGet("src") || "";
      return `<a href="${md.utils.escapeHtml(src)}">${md.utils.escapeHtml(alt || src)}</a>`;
    };
    purify = window.DOMPurify(window); // an instance of our own: its hooks touch nobody else's
    purify.addHook("uponSanitizeAttribute", (node, data) => {
      if (data.attrName === "style") {
        data.keepAttr = (node.nodeName === "TH" || node.nodeName === "TD") && ALIGN.test(data.attrValue.trim());
      }
    });
    purify.addHook("afterSanitizeAttributes", (node) => {
      if (node.nodeName === "A") {
        node.setAttribute("target", "_blank");
        node.setAttribute("rel", "noopener noreferrer");
      }
    });
  }

  const CONFIG = {
    ALLOWED_TAGS, ALLOWED_ATTR, ALLOWED_URI_REGEXP: SAFE_URI,
    ALLOW_DATA_ATTR: false, ALLOW_ARIA_ATTR: false, RETURN_DOM_FRAGMENT: true,
  };

  // Chat text as a sanitized DocumentFragment.
  function markdown(text) {
    text = String(text ?? "");
    if (!hasLibs || text.length > MAX_RENDER_CHARS) {
      const p = document.createElement("p");
      p.textContent = text;
      const fragment = document.createDocumentFragment();
      fragment.append(p);
      return fragment;
    }
    return purify.sanitize(md.render(text).trim(), CONFIG);
  }

  // Replace a node's content with the rendered text (the node gets the ck-md class).
  function renderInto(node, text) {
    node.classList.add("ck-md");
    node.replaceChildren(markdown(text));
    return node;
  }

  // The innermost last block of rendered text, where a streaming cursor reads naturally.
  function lastBlock(node) {
    let block = node;
    for (;;) {
      const last = block.lastElementChild;
      if (!last || !["P", "LI", "UL", "OL", "BLOCKQUOTE", "H1", "H2", "H3", "H4", "H5", "H6"].includes(last.nodeName)) return block;
      block = last;
    }
  }

  // Avatars as inline SVG (no emoji font needed): a person for users, a robot for the AI.
  const SVG_NS = "http://www.w3.org/2000/svg";
  const SHAPES = {
    user: [["circle", { cx: 16, cy: 16, r: 16, fill: "#007bff" }], ["circle", { cx: 16, cy: 12, r: 6, fill: "#fff" }],
           ["path", { d: "M6 27c1.5-6 6-8 10-8s8.5 2 10 8", fill: "#fff" }]],
    ai: [["circle", { cx: 16, cy: 16, r: 16, fill: "#6f42c1" }], ["rect", { x: 8, y: 10, width: 16, height: 13, rx: 3, fill: "#fff" }],
         ["circle", { cx: 12.5, cy: 16, r: 2, fill: "#6f42c1" }], ["circle", { cx: 19.5, cy: 16, r: 2, fill: "#6f42c1" }],
         ["rect", { x: 15, y: 5, width: 2, height: 5, fill: "#fff" }], ["circle", { cx: 16, cy: 5, r: 2, fill: "#fff" }]],
  };
  function avatar(kind, label) {
    const box = document.createElement("div");
    box.className = `avatar avatar-${kind}`;
    const svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("viewBox", "0 0 32 32");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", label || kind);
    for (const [tag, attrs] of SHAPES[kind]) {
      const shape = document.createElementNS(SVG_NS, tag);
      for (const [k, v] of Object.entries(attrs)) shape.setAttribute(k, String(v));
      svg.append(shape);
    }
    box.append(svg);
    return box;
  }

  // Reactions under a message: one chip per emoji ("👍 2", who in the title; "mine" when the user
  // is among them), and a "+" that opens a small palette. Clicking toggles through onToggle(emoji).
  const QUICK_REACTIONS = ["👍", "❤️", "😂", "🎉", "😮", "😢"];
  function reactionBar(box, reactions, me, onToggle) {
    box.replaceChildren();
    for (const r of reactions || []) {
      const chip = document.createElement("button");
      chip.type = "button";
      chip.className = `chip${r.users.includes(me) ? " mine" : ""}`;
      chip.dataset.emoji = r.emoji;
      chip.textContent = `${r.emoji} ${r.count}`; // text, never markup
      chip.title = r.users.join(", ");
      chip.addEventListener("click", () => onToggle(r.emoji));
      box.append(chip);
    }
    const add = document.createElement("button");
    add.type = "button";
    add.className = "add-reaction";
    add.textContent = "+";
    add.title = window.chatkitI18n ? window.chatkitI18n.t("reaction.add") : "react";
    add.dataset.i18nTitle = "reaction.add"; // i18n.js re-labels it when the language changes
    const palette = document.createElement("span");
    palette.className = "palette";
    palette.hidden = true;
    for (const emoji of QUICK_REACTIONS) {
      const pick = document.createElement("button");
      pick.type = "button";
      pick.dataset.emoji = emoji;
      pick.textContent = emoji;
      pick.addEventListener("click", () => { palette.hidden = true; onToggle(emoji); });
      palette.append(pick);
    }
    add.addEventListener("click", () => { palette.hidden = !palette.hidden; });
    box.append(add, palette);
    return box;
  }

  window.chatkitRender = { markdown, renderInto, lastBlock, avatar, reactionBar, QUICK_REACTIONS, ready: hasLibs };
})();
