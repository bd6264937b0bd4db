"""Images, files and voice messages in the page, in headless Chromium (docs/protocol.md "Files").

Two pages (one on the WebSocket, one on SSE + POST) exchange an image with a Markdown caption, a
reaction and a voice message recorded with MediaRecorder from Chromium's fake microphone; a third
page that joins later sees all three. Uploads the server refuses (too big, HTML named ``.png``)
show their code in the page and nothing is sent.
"""

from __future__ import annotations

import io
import json
from contextlib import asynccontextmanager

import pytest

from chatkit.llm import EchoStreamer

from .browser import CHROMIUM_ARGS, chromium_path, screenshot_path
from .conftest import TIMEOUT

pytestmark = pytest.mark.timeout(120)

WAIT = int(2 * TIMEOUT * 1000)  # ms: one constant for every wait on the page
# A fake microphone (a beeping tone) that needs no permission prompt.
MEDIA_ARGS = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
MAX_UPLOAD = 5 * 1024 * 1024  # the server's default --max-upload-bytes (FILES-CONTRACT / protocol.md)
MINE = "#list .message.user"


@pytest.fixture
async def browser():
    executable = chromium_path()
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        b = await p.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS + MEDIA_ARGS
        )
        yield b
        await b.close()


@asynccontextmanager
async def open_page(
    browser, url: str, init_script: str | None = None, frames: list[dict] | None = None, locale: str = "en-US"
):
    context = await browser.new_context(locale=locale)
    if init_script:
        await context.add_init_script(init_script)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: print(f"console {m.type}: {m.text}"))  # shown when a test fails (CSP…)
    if frames is not None:  # every WebSocket frame the page receives
        page.on("websocket", lambda ws: ws.on("framereceived", lambda f: frames.append(json.loads(f))))
    await page.goto(url)
    try:
        if "room=" in url:  # joins at once (no sign-in)
            await page.wait_for_selector("#status[data-state='open']", timeout=WAIT)
        yield page
    finally:
        assert errors == [], errors
        await context.close()


def room_url(srv, room: str, user: str, transport: str = "ws") -> str:
    return f"{srv.url}?room={room}&user={user}&transport={transport}"


def png(size: tuple[int, int] = (320, 200), color: str = "orange") -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


async def attach(page, name: str, data: bytes, mime: str) -> None:
    """Pick a file the way a user does: the attach button opens the file chooser."""
    async with page.expect_file_chooser(timeout=WAIT) as chooser:
        await page.click("#attach")
    await (await chooser.value).set_files({"name": name, "mimeType": mime, "buffer": data})


async def send(page, text: str) -> None:
    await page.fill("#input", text)
    await page.press("#input", "Enter")


async def image_loaded(page, selector: str) -> None:
    """The thumbnail really loaded (CSP, CORS and the download route let it through)."""
    img = await page.wait_for_selector(selector, timeout=WAIT)
    await page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img, timeout=WAIT)


async def record_voice(page) -> None:
    """Record about one second from the fake microphone: start, wait for the clock to say 0:01, stop."""
    await page.click("#record")
    await page.wait_for_selector("#record[aria-pressed='true']", timeout=WAIT)
    await page.wait_for_selector("#record-time >> text=0:01", timeout=WAIT)
    await page.click("#record")
    await page.wait_for_selector("#record[aria-pressed='false']", timeout=WAIT)


async def test_two_pages_exchange_an_image_a_reaction_and_a_voice_message_and_a_later_page_sees_them(
    browser, servers
):
    srv = await servers(http_port=0, streamer=EchoStreamer())
    image = f"{MINE} .attachment img.thumb[alt='cat.png'][src]"
    audio = f"{MINE} .attachment audio[src]"
    async with (
        open_page(browser, room_url(srv, "files", "ann")) as ann,
        open_page(browser, room_url(srv, "files", "bob", "sse")) as bob,
    ):
        assert await bob.is_visible("#record")  # MediaRecorder and a (fake) microphone are there
        # ann (WebSocket) types a caption, then attaches an image: one message with both.
        await ann.fill("#input", "our **cat**")
        await attach(ann, "cat.png", png(), "image/png")
        for page in (ann, bob):
            await image_loaded(page, image)
            await page.wait_for_selector(f"{MINE} .text strong >> text=cat", timeout=WAIT)
        assert await ann.input_value("#input") == ""  # the caption went with the image
        link = bob.locator(f"{MINE} .attachment a.image")
        href = await link.get_attribute("href")
        assert await link.get_attribute("target") == "_blank"
        assert await link.get_attribute("rel") == "noopener noreferrer"
        full = await bob.request.get(href)
        assert full.status == 200 and full.headers["content-type"] == "image/png"
        assert full.headers["x-content-type-options"] == "nosniff"
        assert await full.body() == png()  # the full image, byte for byte; the thumbnail is the <img>

        # bob (SSE: the reaction is POSTed) reacts to the image with 👍.
        await bob.click(f"{MINE} .reactions .add-reaction")
        await bob.click(f"{MINE} .reactions .palette button[data-emoji='👍']")
        await ann.wait_for_selector(f"{MINE} .reactions .chip[data-emoji='👍'] >> text=👍 1", timeout=WAIT)

        # bob records a voice message (uploaded, then POSTed with the attachment); ann can play it.
        await record_voice(bob)
        for page in (ann, bob):
            await page.wait_for_selector(audio, timeout=WAIT)
        player = await ann.wait_for_selector(audio, timeout=WAIT)
        src = await player.get_attribute("src")
        voice = await ann.request.get(src)
        assert voice.status == 200
        assert voice.headers["content-type"].startswith("audio/"), voice.headers["content-type"]
        assert len(await voice.body()) > 1000  # about a second of opus, not an empty file
        assert "voice-" in await player.get_attribute("aria-label")
        # the <audio> element itself loads it (media-src allows the HTTP port)
        await ann.wait_for_function("a => a.readyState >= 1 && !a.error", arg=player, timeout=WAIT)
        await ann.screenshot(path=screenshot_path("files_ann"))

        # cat joins later: the image with its caption, the reaction and the voice message are there.
        async with open_page(browser, room_url(srv, "files", "cat")) as cat:
            await image_loaded(cat, image)
            await cat.wait_for_selector(f"{MINE} .text strong >> text=cat", timeout=WAIT)
            await cat.wait_for_selector(
                f"{MINE} .reactions .chip[data-emoji='👍'] >> text=👍 1", timeout=WAIT
            )
            assert await cat.get_attribute(f"{MINE} .reactions .chip[data-emoji='👍']", "title") == "bob"
            await cat.wait_for_selector(audio, timeout=WAIT)
            assert await cat.locator(f"{MINE} .attachment").count() == 2
            # presence frames (?presence=batch) keep the online lists right
            await ann.wait_for_selector("#online:text-is('online: ann, bob, cat')", timeout=WAIT)
            await cat.screenshot(path=screenshot_path("files_cat"))
        await ann.wait_for_selector("#online:text-is('online: ann, bob')", timeout=WAIT)


async def test_a_too_big_file_shows_the_coded_error_and_sends_nothing(browser, servers):
    srv = await servers(http_port=0, streamer=EchoStreamer())
    big = b"\x89PNG\r\n\x1a\n" + bytes(MAX_UPLOAD)
    async with (
        open_page(browser, room_url(srv, "big", "ann")) as ann,
        open_page(browser, room_url(srv, "big", "bob")) as bob,
    ):
        uploads: list[str] = []
        ann.on(
            "request", lambda r: uploads.append(r.url) if "/files" in r.url and r.method == "POST" else None
        )
        # The page knows the limit (config.json's max_upload_bytes): refused before uploading anything.
        assert await ann.evaluate("window.chatkit.maxUpload") == MAX_UPLOAD
        await attach(ann, "huge.png", big, "image/png")
        status = await ann.wait_for_selector("#upload-status[data-state='error']", timeout=WAIT)
        text = await status.text_content()
        assert "too_large" in text and "huge.png" in text and "MB" in text, text
        assert await status.get_attribute("role") == "status"
        assert uploads == []
        # A page that does not know the limit uploads it, and the server's 413 shows the same way.
        await ann.evaluate(
            "window.chatkit.maxUpload = null; document.querySelector('#upload-status').dataset.state = ''"
        )
        async with ann.expect_response(
            lambda r: "/files" in r.url and r.request.method == "POST", timeout=WAIT
        ) as info:
            await attach(ann, "huge2.png", big, "image/png")
        assert (await info.value).status == 413
        status = await ann.wait_for_selector("#upload-status[data-state='error']", timeout=WAIT)
        text = await status.text_content()
        assert "too_large" in text and "huge2.png" in text and "MB" in text, text
        await send(ann, "after the refused uploads")  # the room goes on; nothing was sent before it
        await bob.wait_for_selector(f"{MINE} .text >> text=after the refused uploads", timeout=WAIT)
        for page in (ann, bob):
            assert await page.locator("#list .attachment").count() == 0
        assert await bob.locator(MINE).count() == 1
        await ann.screenshot(path=screenshot_path("files_too_big"))


async def test_html_named_png_is_refused_and_nothing_renders(browser, servers):
    srv = await servers(http_port=0, streamer=EchoStreamer())
    html = b"<!doctype html><html><body><script>window.pwned = true</script><img src=x onerror=window.pwned=true>"
    async with (
        open_page(browser, room_url(srv, "disguise", "eve", "sse")) as eve,
        open_page(browser, room_url(srv, "disguise", "bob")) as bob,
    ):
        for page in (eve, bob):
            await page.evaluate("window.pwned = false")
        await attach(eve, "cat.png", html, "image/png")
        status = await eve.wait_for_selector("#upload-status[data-state='error']", timeout=WAIT)
        text = await status.text_content()
        assert "unsupported_type" in text and "cat.png" in text, text
        await send(eve, "still here")
        await bob.wait_for_selector(f"{MINE} .text >> text=still here", timeout=WAIT)
        for page in (eve, bob):
            assert await page.locator("#list .attachment, #list img, #list iframe").count() == 0
            assert await page.evaluate("window.pwned") is False
        assert await bob.locator(MINE).count() == 1


async def test_signed_in_pages_upload_and_see_files_with_their_cookie(browser, servers):
    """With sign-in on, the upload and the downloads go with the HttpOnly cookie (no token in the page)."""
    from chatkit.auth import Authenticator

    srv = await servers(
        http_port=0, streamer=EchoStreamer(), auth=Authenticator.from_options(join_code="blue-42")
    )
    async with open_page(browser, srv.url) as ann, open_page(browser, srv.url) as bob:
        for page, name in ((ann, "ann"), (bob, "bob")):
            await page.wait_for_selector("#code-label:not([hidden])", timeout=WAIT)
            await page.fill("#room", "class")
            await page.fill("#user", name)
            await page.fill("#code", "blue-42")
            await page.click("#join button[type='submit']")
            await page.wait_for_selector("#status[data-state='open']", timeout=WAIT)
        await attach(ann, "board.png", png((60, 40), "navy"), "image/png")
        await image_loaded(bob, f"{MINE} .attachment img.thumb[alt='board.png'][src]")
        src = await bob.get_attribute(f"{MINE} .attachment img.thumb", "src")
        anonymous = await browser.new_context()  # no cookie: the file is not served
        try:
            assert (await anonymous.request.get(src)).status == 401
        finally:
            await anonymous.close()


async def test_korean_page_names_the_buttons_and_the_refusal_in_korean(browser, servers):
    srv = await servers(http_port=0, streamer=EchoStreamer())
    async with open_page(browser, room_url(srv, "ko", "minji"), locale="ko-KR") as page:
        assert await page.get_attribute("#attach", "title") == "파일 첨부"
        assert await page.text_content("#record .sr-only") == "음성 메시지 녹음"
        await attach(page, "고양이.png", b"<!doctype html><title>not an image</title>", "image/png")
        status = await page.wait_for_selector("#upload-status[data-state='error']", timeout=WAIT)
        assert await status.text_content() == (
            "⚠ 보낼 수 없는 형식입니다: 고양이.png (이미지, 오디오, PDF만 가능) (unsupported_type)"
        )


async def test_paste_an_image_and_drop_a_pdf(browser, servers):
    srv = await servers(http_port=0, streamer=EchoStreamer())
    pdf = (
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Count 0/Kids[]>>endobj\n"
    )
    pdf += b"trailer<</Root 1 0 R>>\n%%EOF\n"
    async with (
        open_page(browser, room_url(srv, "paste", "ann")) as ann,
        open_page(browser, room_url(srv, "paste", "bob")) as bob,
    ):
        # A screenshot pasted into the message box goes as an image.
        await ann.evaluate(
            """bytes => {
                const data = new DataTransfer();
                data.items.add(new File([new Uint8Array(bytes)], "image.png", { type: "image/png" }));
                document.querySelector("#input").dispatchEvent(
                    new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true }));
            }""",
            list(png((40, 30), "teal")),
        )
        await image_loaded(bob, f"{MINE} .attachment img.thumb[alt='pasted.png'][src]")
        # A PDF dropped on the chat goes as a download link with its name and size.
        await ann.evaluate(
            """bytes => {
                const data = new DataTransfer();
                data.items.add(new File([new Uint8Array(bytes)], "notes.pdf", { type: "application/pdf" }));
                const target = document.querySelector("#messages");
                for (const type of ["dragover", "drop"]) {
                    target.dispatchEvent(new DragEvent(type, { dataTransfer: data, bubbles: true, cancelable: true }));
                }
            }""",
            list(pdf),
        )
        link = await bob.wait_for_selector(f"{MINE} .attachment a.file[href]", timeout=WAIT)
        assert await link.text_content() == f"notes.pdf ({len(pdf)} bytes)"
        download = await bob.request.get(await link.get_attribute("href"))
        assert download.headers["content-type"] == "application/pdf"
        assert download.headers["content-disposition"].startswith("attachment")
        assert await download.body() == pdf


async def test_no_record_button_without_media_recorder(browser, servers):
    srv = await servers(http_port=0, streamer=EchoStreamer())
    async with open_page(browser, room_url(srv, "old", "ann"), "delete window.MediaRecorder;") as page:
        assert await page.is_hidden("#record")
        assert await page.is_visible("#attach")
        assert await page.locator("#attach").get_attribute("title") == "Attach a file"
        assert await page.locator("#attach .sr-only").text_content() == "Attach a file"


async def test_online_list_follows_batched_presence_frames(browser, servers):
    """The page asks for ?presence=batch and applies the `presence` frames' joins and leaves."""
    srv = await servers(http_port=0, streamer=EchoStreamer())
    frames: list[dict] = []
    async with open_page(browser, room_url(srv, "here", "ann"), frames=frames) as ann:
        async with open_page(browser, room_url(srv, "here", "bob", "sse")) as bob:
            for page in (ann, bob):
                await page.wait_for_selector("#online:text-is('online: ann, bob')", timeout=WAIT)
            await bob.click("#leave")
            await ann.wait_for_selector("#online:text-is('online: ann')", timeout=WAIT)
            await ann.screenshot(path=screenshot_path("presence_batch"))
    kinds = {f["type"] for f in frames}
    assert "presence" in kinds and not kinds & {"user_join", "user_leave"}, kinds
