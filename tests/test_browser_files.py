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

pytestmark = pytest.mark.timeout(120)

WAIT = 20_000  # ms: one constant for every wait on the page
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
async def open_page(browser, url: str, init_script: str | None = None, frames: list[dict] | None = None):
    context = await browser.new_context()
    if init_script:
        await context.add_init_script(init_script)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    if frames is not None:  # every WebSocket frame the page receives
        page.on("websocket", lambda ws: ws.on("framereceived", lambda f: frames.append(json.loads(f))))
    await page.goto(url)
    try:
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
