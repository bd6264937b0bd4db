"""The chat page in a real browser (headless Chromium driven by Playwright)."""

from __future__ import annotations

from contextlib import asynccontextmanager

import pytest

from chatkit.client import ChatClient
from chatkit.llm import EchoStreamer, OfflineTutor
from chatkit.rooms import HubConfig

from .browser import CHROMIUM_ARGS, chromium_path, screenshot_path
from .conftest import TIMEOUT, peer
from .fakes import Gate, ScriptedStreamer
from .proxy import PrefixProxy

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def browser():
    executable = chromium_path()
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield b
        await b.close()


@asynccontextmanager
async def open_page(browser, url: str):
    context = await browser.new_context()
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(url)
    try:
        yield page
    finally:
        assert errors == [], errors
        await context.close()


def room_url(server, room: str, user: str, transport: str = "ws", base: str | None = None) -> str:
    return f"{base or server.url}?room={room}&user={user}&transport={transport}"


async def send(page, text: str) -> None:
    await page.fill("#input", text)
    await page.press("#input", "Enter")


async def test_two_pages_chat_and_stream(browser, servers):
    # The model stops mid-reply until both pages have shown it streaming: Playwright polls the page
    # (up to every 0.5 s), so a reply that streams for a moment could end between two looks.
    midway = Gate()
    words = ["hello ", "bob ", "this ", midway, "reply ", "streams ", "word ", "by ", "word"]
    srv = await servers(http_port=0, streamer=ScriptedStreamer(words))
    async with (
        open_page(browser, room_url(srv, "duo", "ann")) as ann,
        open_page(browser, room_url(srv, "duo", "bob")) as bob,
    ):
        for page in (ann, bob):
            await page.wait_for_selector("#status[data-state='open']")
        assert await ann.text_content("#status") == "Connected"
        await send(ann, "hello bob this reply streams word by word")
        await midway.wait_reached()
        await bob.wait_for_selector(".message.ai.streaming .cursor")  # the reply streams in both pages
        await ann.wait_for_selector(".message.ai.streaming .text >> text=hello bob this")
        midway.open()
        for page in (ann, bob):
            await page.wait_for_selector(
                "#list .message.ai .text >> text=hello bob this reply streams word by word"
            )
        await bob.screenshot(path=screenshot_path("two_pages_bob"))
        user_msgs = await bob.locator("#list .message.user .text").all_text_contents()
        assert user_msgs == ["hello bob this reply streams word by word"]
        await ann.wait_for_selector(".receipt >> text=✓✓ read by bob")
        await ann.screenshot(path=screenshot_path("two_pages_ann"))


async def test_sse_page_and_websocket_page_see_the_same(browser, servers):
    srv = await servers(http_port=0, streamer=EchoStreamer())
    async with (
        open_page(browser, room_url(srv, "mix", "sam", "sse")) as sam,
        open_page(browser, room_url(srv, "mix", "ann", "ws")) as ann,
    ):
        for page in (ann, sam):
            await page.wait_for_selector("#status[data-state='open']")
        await send(sam, "posted over SSE")
        await send(ann, "sent over WebSocket")
        for page in (ann, sam):
            await page.wait_for_selector("#list .message.ai .text >> text=sent over WebSocket")
            await page.wait_for_selector("#list .message.ai .text >> text=posted over SSE")
        ids = [
            await p.eval_on_selector_all("#list .message", "ns => ns.map(n => n.dataset.id)")
            for p in (ann, sam)
        ]
        assert ids[0] == ids[1] and len(ids[0]) == 4
        await sam.screenshot(path=screenshot_path("sse_page"))


async def test_restart_turns_red_then_green_and_catches_up_once(browser, servers):
    srv = await servers(http_port=0, streamer=EchoStreamer())
    port, http_port = srv.port, srv.http_port
    async with open_page(browser, room_url(srv, "crash", "ann")) as page:
        await page.wait_for_selector("#status[data-state='open']")
        await send(page, "before the restart")
        await page.wait_for_selector("#list .message.ai .text >> text=before the restart")
        await srv.stop()
        await page.wait_for_selector("#status[data-state='reconnecting']")
        assert "Reconnecting in" in await page.text_content("#status")
        await page.screenshot(path=screenshot_path("restart_red"))
        srv2 = await servers(port=port, http_port=http_port)
        async with ChatClient(srv2.ws_url("crash"), user="bob") as bob:
            await bob.send("said while ann was away")
        await page.wait_for_selector("#status[data-state='open']", timeout=2 * TIMEOUT * 1000)
        await page.wait_for_selector("#list .message.user .text >> text=said while ann was away")
        await page.wait_for_selector("#list .message.ai .text >> text=said while ann was away")
        texts = await page.locator("#list .message .text").all_text_contents()
        assert texts.count("said while ann was away") == 2  # the message and its echo, once each
        assert texts.count("before the restart") == 2
        await page.screenshot(path=screenshot_path("restart_green"))


async def test_html_is_shown_as_text(browser, servers):
    srv = await servers(http_port=0, streamer=EchoStreamer())
    async with open_page(browser, room_url(srv, "xss", "eve")) as page:
        await page.wait_for_selector("#status[data-state='open']")
        await page.evaluate("window.pwned = false")
        payload = '<img src=x onerror="window.pwned=true">'
        await send(page, payload)
        await page.wait_for_selector("#list .message.ai")
        assert await page.locator("#list img").count() == 0
        assert payload in await page.locator("#list .message.user .text").all_text_contents()
        # An ordering point: an image of our own with the same broken source fails after the
        # payload's would have (had it ever become an element), so its handler would have run.
        await page.evaluate(
            "() => new Promise(done => { const img = new Image(); img.onerror = img.onload = done; img.src = 'x'; })"
        )
        assert await page.evaluate("window.pwned") is False


async def test_page_works_behind_a_path_prefix(browser, servers):
    srv = await servers(http_port=0, streamer=EchoStreamer())
    async with PrefixProxy() as proxy:
        base = f"http://127.0.0.1:{proxy.port}/proxy/{srv.port}/"
        for transport in ("ws", "sse"):
            async with open_page(browser, room_url(srv, f"pre-{transport}", "ann", transport, base)) as page:
                await page.wait_for_selector("#status[data-state='open']")
                await send(page, f"through the proxy over {transport}")
                await page.wait_for_selector(
                    f"#list .message.ai .text >> text=through the proxy over {transport}"
                )
                await page.screenshot(path=screenshot_path(f"prefix_{transport}"))
        assert any(path.startswith("/ws/chat/pre-ws/") for path in proxy.requests)
        assert any(path.startswith("/sse/chat/pre-sse/") for path in proxy.requests)


async def test_a_big_room_shows_the_first_names_and_how_many_more(browser, servers):
    # A room bigger than --online-list-max (2 here): the page's `connection` frame lists the first
    # names with `online_count`, and each `presence` frame's `count` keeps the number exact.
    srv = await servers(http_port=0, hub=HubConfig(online_list_max=2))
    batch = "&presence=batch"
    async with (
        peer(srv.ws_url("big", user="ann") + batch) as ann,
        peer(srv.ws_url("big", user="bob") + batch) as bob,
    ):
        await ann.until("connection")
        await bob.until("connection")
        async with peer(srv.ws_url("big", user="cat") + batch) as cat:
            await cat.until("connection")
            async with open_page(browser, room_url(srv, "big", "zed")) as page:
                await page.wait_for_selector("#status[data-state='open']")
                # ann and bob listed, cat and zed counted; then the tick's presence frame
                # names zed's own join: zed is listed, cat is still only counted
                await page.wait_for_selector("#online >> text=online: ann, bob, zed and 1 more")
        # cat and the first page left (their leaves may still be on their way): a new page
        async with open_page(browser, room_url(srv, "big", "amy")) as page:
            await page.wait_for_selector("#online >> text=online: amy, ann and 1 more")  # bob
            async with peer(srv.ws_url("big", user="dan") + batch) as dan:
                await dan.until("connection")
                await page.wait_for_selector("#online >> text=online: amy, ann, dan and 1 more")
            await page.wait_for_selector("#online >> text=online: amy, ann and 1 more")
            await page.select_option("#lang", "ko")
            assert await page.text_content("#online") == "접속 중: amy, ann 외 1명"


async def test_disconnect_does_not_reconnect(browser, servers):
    srv = await servers(http_port=0, streamer=EchoStreamer())
    async with peer(srv.ws_url("bye", user="bob")) as bob:
        await bob.until("connection")
        async with open_page(browser, room_url(srv, "bye", "ann")) as page:
            await page.wait_for_selector("#status[data-state='open']")
            await bob.until("user_join", username="ann")
            await page.evaluate("window.leaving = window.chatkit.service.socket")
            await page.click("#leave")
            # The socket's close event has been handled (the page's own handler runs first):
            # had it scheduled a reconnect, the attempt would be counted and the state shown.
            await page.evaluate(
                """() => new Promise(done => window.leaving.readyState === WebSocket.CLOSED
                    ? done() : window.leaving.addEventListener("close", () => done()))"""
            )
            assert await page.evaluate("window.chatkit.service.socket") is None
            assert await page.evaluate("window.chatkit.service.attempt") == 0
            assert await page.get_attribute("#status", "data-state") == "closed"
            await bob.until("user_leave", username="ann")
            assert srv.hub.online("bye") == ["bob"]


async def test_load_older_pages_and_stop_button(browser, servers):
    srv = await servers(http_port=0, streamer=EchoStreamer(chunks=400, delay=0.02))
    for i in range(30):
        await srv.store.append("paging", "teacher", f"earlier {i}")
    async with open_page(browser, room_url(srv, "paging", "ann")) as page:
        await page.wait_for_selector("#status[data-state='open']")
        await page.wait_for_selector("#list .message >> nth=19")
        assert await page.locator("#list .message").count() == 20
        await page.click("#older")
        await page.wait_for_selector("#list .message >> nth=29")
        texts = await page.locator("#list .message .text").all_text_contents()
        assert texts == [f"earlier {i}" for i in range(30)]
        assert await page.locator("#older").is_hidden()
        await send(page, "a long one")
        await page.wait_for_selector("#stop:not([hidden])")
        await page.click("#stop")
        await page.wait_for_selector("#list .message.ai .meta >> text=[cancelled]")
        assert await page.locator("#stop").is_hidden()


# Each payload must show as text: no element, attribute or URL from it becomes live.
XSS_MARKDOWN = [
    "[click](javascript:window.pwned=true)",
    "[click](JaVaScRiPt:window.pwned=true)",
    "<javascript:window.pwned=true>",
    '<img src=x onerror="window.pwned=true">',
    '`<img src=x onerror="window.pwned=true">`',
    '```html\n<img src=x onerror="window.pwned=true"><script>window.pwned=true</script>\n```',
    "[data](data:text/html;base64,PHNjcmlwdD53aW5kb3cucHduZWQ9dHJ1ZTwvc2NyaXB0Pg==)",
    "![pic](data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9IndpbmRvdy5wd25lZD10cnVlIj4=)",
    "![pixel](https://tracker.invalid/p.gif)",
    "<svg onload=window.pwned=true>",
]


async def test_markdown_xss_cases_are_shown_as_text(browser, servers):
    srv = await servers(http_port=0, streamer=EchoStreamer())
    async with open_page(browser, room_url(srv, "mdxss", "eve")) as page:
        await page.wait_for_selector("#status[data-state='open']")
        assert await page.evaluate("window.chatkitRender.ready") is True
        await page.evaluate("window.pwned = false")
        for payload in XSS_MARKDOWN:
            await send(page, payload)
        await page.wait_for_selector(f"#list .message >> nth={2 * len(XSS_MARKDOWN) - 1}")
        await page.wait_for_function("document.querySelectorAll('#streams .message').length === 0")
        assert (
            await page.locator("#list img, #list script, #list svg:not(.avatar svg), #list iframe").count()
            == 0
        )
        hrefs = await page.eval_on_selector_all("#list .text a", "ns => ns.map(n => n.getAttribute('href'))")
        assert all(h is None or h.startswith(("http:", "https:")) for h in hrefs), hrefs
        rels = await page.eval_on_selector_all("#list .text a", "ns => ns.map(n => [n.target, n.rel])")
        assert all(r == ["_blank", "noopener noreferrer"] for r in rels), rels
        handlers = await page.evaluate(
            "[...document.querySelectorAll('#list *')].flatMap(n => [...n.attributes].map(a => a.name))"
            ".filter(a => a.startsWith('on'))"
        )
        assert handlers == []
        # The code span and the code block show the HTML as text, in the user's message and in the echo.
        codes = await page.locator("#list .text code").all_text_contents()
        assert codes.count('<img src=x onerror="window.pwned=true">') == 2
        assert sum("<script>window.pwned=true</script>" in c for c in codes) == 2
        await page.screenshot(path=screenshot_path("markdown_xss"))
        assert await page.evaluate("window.pwned") is False


async def test_markdown_renders_while_streaming_with_highlighted_code(browser, servers):
    text = (
        "The accept key:\n\n```python\nimport base64, hashlib\n"
        "def accept(key):\n    return base64.b64encode(hashlib.sha1(key).digest())\n```\n"
        "See **RFC 6455** and [the spec](https://www.rfc-editor.org/rfc/rfc6455)."
    )
    # The model stops inside the code block (the fence still open) until the test has looked.
    inside = text.index("def accept")
    midway = Gate()
    srv = await servers(http_port=0, streamer=ScriptedStreamer([text[:inside], midway, text[inside:]]))
    async with open_page(browser, room_url(srv, "md", "ann")) as page:
        await page.wait_for_selector("#status[data-state='open']")
        await send(page, text)
        await midway.wait_reached()
        # mid-stream: the open fence is already a highlighted code block, the backticks are gone
        await page.wait_for_selector("#streams .message.ai.streaming pre code.hljs .hljs-keyword")
        streaming = await page.text_content("#streams .message.ai.streaming .text")
        assert "```" not in streaming
        node = await page.query_selector("#streams .message.ai.streaming")
        midway.open()
        await page.wait_for_selector("#list .message.ai .text strong >> text=RFC 6455")
        assert (
            await node.evaluate("n => n.isConnected") is False
        )  # the stream node was replaced once, at the end
        for row in ("#list .message.user", "#list .message.ai"):  # users' own messages render the same way
            assert await page.locator(f"{row} pre code.hljs .hljs-keyword").count() >= 2
            link = page.locator(f"{row} .text a")
            assert await link.get_attribute("href") == "https://www.rfc-editor.org/rfc/rfc6455"
            assert await link.get_attribute("target") == "_blank"
            assert await link.get_attribute("rel") == "noopener noreferrer"
        # avatars and the status dot are drawn without emoji
        assert await page.locator("#list .message .avatar svg").count() == 2
        dot = await page.evaluate(
            "getComputedStyle(document.querySelector('#status'), '::before').backgroundColor"
        )
        assert dot == "rgb(40, 167, 69)"
        assert "🤖" not in await page.content() and "🟢" not in await page.content()
        await page.screenshot(path=screenshot_path("markdown_code"))


async def test_tutor_answer_shows_highlighted_code(browser, servers):
    srv = await servers(http_port=0, streamer=OfflineTutor(first_token_ms=0, tokens_per_s=200))
    async with open_page(browser, room_url(srv, "tutor", "ann")) as page:
        await page.wait_for_selector("#status[data-state='open']")
        await send(page, "How do I compute Sec-WebSocket-Accept?")
        await page.wait_for_selector(
            "#list .message.ai pre code.language-python .hljs-keyword >> text=import"
        )
        answer = page.locator("#list .message.ai .text")
        assert await answer.locator("code >> text=Sec-WebSocket-Key").count() >= 1
        assert "`" not in await answer.text_content()
        await page.screenshot(path=screenshot_path("tutor_code"))


async def test_a_message_in_a_background_tab_is_not_read_until_the_tab_has_focus(browser, servers):
    """Read receipts mean read: Bob's tab receives the message while it has no focus — delivered, not read."""
    srv = await servers(http_port=0, streamer=EchoStreamer())
    context = await browser.new_context()
    await context.add_init_script("window.__focused = false; document.hasFocus = () => window.__focused;")
    bob = await context.new_page()
    try:
        await bob.goto(room_url(srv, "tabs", "bob"))
        async with open_page(browser, room_url(srv, "tabs", "ann")) as ann:
            for page in (ann, bob):
                await page.wait_for_selector("#status[data-state='open']")
            await send(ann, "are you there?")
            await bob.wait_for_selector("#list .message.user .text >> text=are you there?")
            await bob.type("#input", "x")  # Bob's typing frame comes after any receipt his page sent
            await ann.wait_for_selector("#typing >> text=bob is typing")
            assert await ann.text_content("#list .message.user .receipt") == "✓"  # delivered, not read
            await bob.evaluate("window.__focused = true; window.dispatchEvent(new Event('focus'))")
            await ann.wait_for_selector(".receipt >> text=✓✓ read by bob")
    finally:
        await context.close()


async def test_two_pages_exchange_a_reaction_and_a_later_page_sees_it(browser, servers):
    srv = await servers(http_port=0, streamer=EchoStreamer())
    async with (
        open_page(browser, room_url(srv, "react", "ann")) as ann,
        open_page(browser, room_url(srv, "react", "bob", "sse")) as bob,
    ):
        for page in (ann, bob):
            await page.wait_for_selector("#status[data-state='open']")
        await send(ann, "react to this")
        mine = "#list .message.user"
        await bob.wait_for_selector(f"{mine} .text >> text=react to this")
        # bob (SSE page: the reaction is POSTed) picks 🎉 from the palette under ann's message
        await bob.click(f"{mine} .reactions .add-reaction")
        await bob.click(f"{mine} .reactions .palette button[data-emoji='🎉']")
        await ann.wait_for_selector(f"{mine} .reactions .chip[data-emoji='🎉'] >> text=🎉 1")
        assert await ann.get_attribute(f"{mine} .reactions .chip[data-emoji='🎉']", "title") == "bob"
        # ann (WebSocket page) clicks the chip: now two
        await ann.click(f"{mine} .reactions .chip[data-emoji='🎉']")
        await bob.wait_for_selector(f"{mine} .reactions .chip.mine[data-emoji='🎉'] >> text=🎉 2")
        await bob.screenshot(path=screenshot_path("reaction_bob"))
        async with open_page(browser, room_url(srv, "react", "cat")) as cat:
            await cat.wait_for_selector(f"{mine} .reactions .chip[data-emoji='🎉'] >> text=🎉 2")
            assert await cat.get_attribute(f"{mine} .reactions .chip[data-emoji='🎉']", "title") == "bob, ann"
        # clicking again removes ann's
        await ann.click(f"{mine} .reactions .chip[data-emoji='🎉']")
        await bob.wait_for_selector(f"{mine} .reactions .chip[data-emoji='🎉'] >> text=🎉 1")


async def test_a_refused_message_is_shown_as_not_sent(browser, servers):
    srv = await servers(streamer=EchoStreamer())
    async with open_page(browser, room_url(srv, "refuse", "ann")) as page:
        await page.wait_for_selector("#status[data-state='open']")
        await send(page, "x" * 5000)
        refused = await page.wait_for_selector(".message.refused")
        assert "too_long" in await refused.text_content()
        await send(page, "this one is fine")
        await page.wait_for_selector("#list .message.user .text >> text=this one is fine")
    assert await srv.store.count("refuse") == 2  # the fine message and its reply
