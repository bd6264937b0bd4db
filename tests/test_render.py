"""Markdown rendering and sanitizing (chatkit.render): formatting works, no XSS case becomes markup."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from chatkit.render import ALLOWED_SCHEMES, ALLOWED_TAGS, MAX_RENDER_CHARS, render_markdown

# Each case: a message a user (or a model) could send that must never become live markup.
XSS_CASES = {
    "javascript link": "[click me](javascript:alert(1))",
    "javascript link, mixed case": "[click me](JaVaScRiPt:alert(1))",
    "javascript link, entity-encoded": "[click me](jav&#x61;script:alert(1))",
    "javascript link, tab inside": "[click me](java\tscript:alert(1))",
    "javascript autolink": "<javascript:alert(1)>",
    "vbscript link": "[click me](vbscript:msgbox(1))",
    "img onerror": '<img src=x onerror="window.pwned=true">',
    "script tag": "<script>window.pwned=true</script>",
    "raw anchor": '<a href="javascript:alert(1)">x</a>',
    "svg onload": "<svg onload=alert(1)>",
    "iframe": '<iframe src="https://example.com"></iframe>',
    "data URL link": "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "data URL image": "![x](data:image/png;base64,iVBORw0KGgoAAAANSUhEUg==)",
    "data URL svg image": "![x](data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+)",
    "remote image": "![pixel](https://tracker.example/p.gif)",
    "html inside code span": '`<img src=x onerror="window.pwned=true">`',
    "html inside fenced code": "```html\n<script>window.pwned=true</script>\n```",
    "html inside unknown fence": "```nope\n<img src=x onerror=alert(1)>\n```",
    "link title breaking out": '[x](https://example.com "a\\" onmouseover=\\"alert(1)")',
    "style tag": "<style>body{display:none}</style>",
    "html comment": "<!-- <img src=x onerror=alert(1)> -->",
}


class Tags(HTMLParser):
    """Every start tag of a fragment with its attributes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(fragment: str) -> Tags:
    parser = Tags()
    parser.feed(fragment)
    parser.close()
    return parser


def assert_safe(fragment: str) -> Tags:
    parsed = parse(fragment)
    for tag, attrs in parsed.tags:
        assert tag in ALLOWED_TAGS, (tag, fragment)
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name, fragment)
            if name == "style":
                assert value is not None and value.replace(" ", "").startswith("text-align:"), fragment
        if tag == "a" and "href" in attrs:
            href = attrs["href"] or ""
            scheme = href.split(":", 1)[0].lower() if ":" in href.split("/", 1)[0] else None
            assert scheme is None or scheme in ALLOWED_SCHEMES, (href, fragment)
            assert attrs.get("target") == "_blank" and attrs.get("rel") == "noopener noreferrer", fragment
    return parsed


@pytest.mark.parametrize("text", XSS_CASES.values(), ids=XSS_CASES.keys())
def test_xss_case_is_never_markup(text):
    out = render_markdown(text)
    parsed = assert_safe(out)
    tags = {tag for tag, _ in parsed.tags}
    assert not tags & {"img", "script", "iframe", "svg", "style"}
    hrefs = [attrs.get("href") or "" for tag, attrs in parsed.tags if tag == "a"]
    assert not any(h.lower().startswith(("javascript", "data", "vbscript")) for h in hrefs), out


@pytest.mark.parametrize(
    "text",
    [
        '<img src=x onerror="window.pwned=true">',
        '`<img src=x onerror="window.pwned=true">`',
        "<script>window.pwned=true</script>",
    ],
)
def test_html_in_a_message_is_shown_as_its_text(text):
    shown = "".join(parse(render_markdown(text)).text).strip()
    assert shown == text.strip("`")


def test_html_in_fenced_code_is_highlighted_text():
    out = render_markdown("```html\n<script>alert(1)</script>\n```")
    parsed = assert_safe(out)
    assert "".join(parsed.text).strip() == "<script>alert(1)</script>"
    assert ("pre", {"class": "highlight"}) in parsed.tags


def test_formatting():
    out = render_markdown("**bold** _it_ ~~gone~~ `Sec-WebSocket-Key`\n\n- one\n- two\n\n> quoted")
    tags = [tag for tag, _ in assert_safe(out).tags]
    for tag in ("strong", "em", "s", "code", "ul", "li", "blockquote"):
        assert tag in tags, (tag, out)
    assert "`" not in out  # the backticks are markup, not text


def test_code_block_is_highlighted_with_pygments_classes():
    out = render_markdown("```python\nimport asyncio\nasync def main():\n    return 1\n```")
    parsed = assert_safe(out)
    classes = {attrs.get("class") for tag, attrs in parsed.tags if tag == "span"}
    assert {"tok-kn", "tok-k", "tok-nf"} <= classes, classes  # import keyword, keyword, function name
    assert ("code", {"class": "language-python"}) in parsed.tags


def test_links_open_in_a_new_tab_without_opener():
    for text in (
        "[docs](https://websockets.readthedocs.io/)",
        "<https://example.com/a?b=1>",
        "[mail](mailto:ann@example.com)",
        "[here](/api/chat/demo/messages)",
    ):
        parsed = assert_safe(render_markdown(text))
        links = [attrs for tag, attrs in parsed.tags if tag == "a"]
        assert len(links) == 1 and links[0]["href"], text


def test_newline_is_a_line_break_and_emoji_stay_text():
    out = render_markdown("line one\nline two 👍")
    assert "<br" in out and "👍" in out


def test_partial_markdown_mid_stream_renders():
    reply = "Here is the code:\n\n```python\ndef accept(key):\n    return base64(sha1(key + GUID))\n```\n\nDone **now**."
    for end in range(1, len(reply) + 1):
        assert_safe(render_markdown(reply[:end]))
    # An unclosed fence is already a code block; an unclosed ** is literal text.
    assert "<pre" in render_markdown(reply[:40])
    assert "**now" in render_markdown(reply[:-3]) and "<strong>now</strong>" in render_markdown(reply)


def test_very_long_text_is_escaped_plain_text():
    text = "<b>x</b>" * (MAX_RENDER_CHARS // 8 + 1)
    out = render_markdown(text)
    assert "<b>" not in out and out.startswith("<p>&lt;b&gt;")


async def test_page_serves_its_vendored_libraries(server):
    import re

    import httpx

    async with httpx.AsyncClient(base_url=server.url, trust_env=False) as http:
        page = (await http.get("/")).text
        scripts = re.findall(r'src="(vendor/[^"]+|render\.js)"', page)
        assert {
            "vendor/markdown-it.min.js",
            "vendor/purify.min.js",
            "vendor/highlight.min.js",
            "render.js",
        } <= set(scripts)
        for path in scripts + ["vendor/highlight-github.min.css"]:
            response = await http.get("/" + path)
            assert response.status_code == 200, path
            assert response.headers["content-type"].startswith(("text/javascript", "text/css")), path
        for path in (
            "/vendor/README.md",
            "/vendor/../server.py",
            "/vendor/x/purify.min.js",
            "/other/chat.js",
            "/vendor/",
        ):
            assert (await http.get(path)).status_code == 404, path
