"""Markdown → safe HTML for chat messages: parse, highlight, sanitize.

Chat text (a user's message or a model's reply, finished or still streaming)
is Markdown. :func:`render_markdown` turns it into an HTML fragment that can
be put into a page as markup:

1. ``markdown-it-py`` parses it (CommonMark plus tables and strikethrough;
   a single newline is a line break, as in every chat) with raw HTML **off**: ``<img onerror=…>`` in a message is text, not a tag.
   Its link validator already refuses ``javascript:``, ``vbscript:``,
   ``file:`` and ``data:`` URLs other than images.
2. Fenced code blocks are highlighted by ``pygments`` (CSS classes, no inline
   styles; :data:`PYGMENTS_CSS` styles them).
3. ``nh3`` (the Rust ``ammonia`` sanitizer) cleans the result against an
   allow-list of tags, attributes, classes and URL schemes (``http``,
   ``https``, ``mailto``; no ``data:``), and gives every link
   ``target="_blank" rel="noopener noreferrer"``. This is defence in depth:
   step 1 produces no dangerous markup by itself, step 3 would remove it if a
   parser bug or plug-in ever did.

Markdown images are shown as links (a message must not make every reader's
browser fetch a URL: tracking pixels); pictures are sent as attachments.

Partial Markdown (a reply mid-stream) renders too: an unclosed code fence is
a code block up to the end, an unclosed ``**`` is literal text until it
closes. The pane and the page re-render the whole reply at their throttle
rate. Results are cached by text, so re-rendering a message list is cheap.

The browser page does the same with ``markdown-it`` and ``DOMPurify``
(``chatkit/web/render.js``) and the same allow-list.
"""

from __future__ import annotations

import functools
from typing import Any

import nh3
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

__all__ = ["render_markdown", "ALLOWED_TAGS", "ALLOWED_SCHEMES", "PYGMENTS_CSS", "MAX_RENDER_CHARS"]

MAX_RENDER_CHARS = 20_000
"""Longer text is shown as escaped plain text (a bound on the work per render)."""

ALLOWED_TAGS = frozenset(
    {
        "p",
        "br",
        "hr",
        "em",
        "strong",
        "s",
        "del",
        "code",
        "pre",
        "blockquote",
        "ul",
        "ol",
        "li",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "a",
        "span",
        "div",
        "table",
        "thead",
        "tbody",
        "tr",
        "th",
        "td",
    }
)
"""Every tag the rendered HTML may contain (no ``img``, ``script``, ``style``, ``iframe``, forms…)."""

ALLOWED_SCHEMES = frozenset({"http", "https", "mailto"})
"""URL schemes a link may have; relative links are kept."""

_ATTRIBUTES = {
    "a": {"href", "title"},
    "ol": {"start"},
    "th": {"style"},
    "td": {"style"},
    "code": {"class"},
    "span": {"class"},
    "div": {"class"},
    "pre": {"class"},
}

_FORMATTER = HtmlFormatter(nowrap=True, classprefix="tok-")
PYGMENTS_CSS = "\n".join(
    line
    for line in HtmlFormatter(classprefix="tok-").get_style_defs(".ck-md .highlight").splitlines()
    if line.startswith(".ck-md")  # pygments also emits unscoped `pre` and line-number rules
)
"""CSS for highlighted code, scoped to ``.ck-md`` (the class of rendered Markdown)."""


def _highlight(code: str, lang: str, _attrs: Any) -> str:
    """markdown-it's ``highlight`` hook: a whole ``<pre>`` when pygments knows ``lang``."""
    name = (lang or "").strip().split()[0] if lang else ""
    if not name:
        return ""  # markdown-it escapes it and wraps it in <pre><code> itself
    try:
        lexer = get_lexer_by_name(name.lower())
    except ClassNotFound:
        return ""
    body = highlight(code, lexer, _FORMATTER)
    return f'<pre class="highlight"><code class="language-{lexer.aliases[0] if lexer.aliases else "text"}">{body}</code></pre>\n'


def _image_as_link(renderer: Any, tokens: list, idx: int, options: Any, env: Any) -> str:
    """Render ``![alt](url)`` as a link to the picture, never as an ``<img>``."""
    token = tokens[idx]
    alt = renderer.renderInlineAsText(token.children or [], options, env)
    src = str(token.attrGet("src") or "")
    return f'<a href="{escapeHtml(src)}">{escapeHtml(alt or src)}</a>'


md = MarkdownIt(
    "commonmark",
    {"html": False, "breaks": True, "linkify": False, "typographer": False, "highlight": _highlight},
).enable(["table", "strikethrough"])
md.add_render_rule("image", _image_as_link)


def _clean(fragment: str) -> str:
    return nh3.clean(
        fragment,
        tags=set(ALLOWED_TAGS),
        attributes={k: set(v) for k, v in _ATTRIBUTES.items()},
        url_schemes=set(ALLOWED_SCHEMES),
        link_rel="noopener noreferrer",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        filter_style_properties={"text-align"},
        strip_comments=True,
    )


@functools.lru_cache(maxsize=2048)
def render_markdown(text: str) -> str:
    """Chat text as a sanitized HTML fragment (safe to insert as markup)."""
    if len(text) > MAX_RENDER_CHARS:
        return f"<p>{escapeHtml(text)}</p>"
    return _clean(md.render(text)).strip()
