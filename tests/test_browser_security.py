"""The origin policy and sign-in in a real browser (headless Chromium): a page from a second
local origin tries fetch POST, EventSource and WebSocket against chatkit and is refused,
while the real page signs in with the join code and chats; a teacher deletes a message and
both pages remove it."""

from __future__ import annotations

import asyncio
import logging

import pytest

from chatkit.auth import Authenticator
from chatkit.llm import EchoStreamer

from .browser import CHROMIUM_ARGS, chromium_path, screenshot_path

pytestmark = pytest.mark.timeout(120)

T = 15_000  # ms: the one timeout of this module (a loaded machine)

EVIL_PAGE = """<!doctype html><meta charset="utf-8"><title>evil</title><script>
const results = {};
window.results = results;
const ws = "%(ws)s", http = "%(http)s";
(async () => {
  try {
    const r = await fetch(http + "sse/chat/demo/messages", {method: "POST", credentials: "include",
      headers: {"Content-Type": "application/json"}, body: JSON.stringify({message: "evil json"})});
    results.fetch = "status " + r.status;
  } catch (e) { results.fetch = "blocked: " + e.name; }
  try {  // a "simple" request: no preflight, the page cannot read the answer, but would it be stored?
    await fetch(http + "sse/chat/demo/messages", {method: "POST", mode: "no-cors", credentials: "include",
      headers: {"Content-Type": "text/plain"}, body: JSON.stringify({message: "evil simple"})});
    results.simple = "sent";
  } catch (e) { results.simple = "blocked: " + e.name; }
  try {
    const r = await fetch(ws + "api/chat/demo/messages", {credentials: "include"});
    results.history = "status " + r.status + " " + (await r.text()).slice(0, 40);
  } catch (e) { results.history = "blocked: " + e.name; }
  await new Promise((done) => {
    const source = new EventSource(http + "sse/chat/demo/", {withCredentials: true});
    source.addEventListener("message", () => { results.sse = "opened"; source.close(); done(); });
    source.addEventListener("connection", () => { results.sse = "opened"; source.close(); done(); });
    source.onerror = () => { results.sse = results.sse || "refused"; source.close(); done(); };
  });
  await new Promise((done) => {
    const socket = new WebSocket(ws.replace("http", "ws") + "ws/chat/demo/");
    socket.onopen = () => { results.ws = "opened"; socket.close(); done(); };
    socket.onclose = () => { results.ws = results.ws || "refused"; done(); };
  });
  results.done = true;
})();
</script>"""


async def serve_page(html: str) -> asyncio.Server:
    """A second local origin serving one page (no framework: read a head, answer it)."""
    body = html.encode()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
        finally:
            writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0)


@pytest.fixture
async def browser():
    executable = chromium_path()
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield b
        await b.close()


async def sign_in(page, url: str, name: str, code: str, transport: str = "ws") -> None:
    await page.goto(url)
    await page.wait_for_selector("#code-label:not([hidden])", timeout=T)
    await page.fill("#room", "demo")
    await page.fill("#user", name)
    await page.fill("#code", code)
    if transport == "sse":
        await page.check("input[value='sse']")
    await page.click("#join button[type='submit']")
    await page.wait_for_selector("#status[data-state='open']", timeout=T)


async def say(page, text: str) -> None:
    await page.fill("#input", text)
    await page.press("#input", "Enter")


async def test_a_foreign_page_is_refused_while_the_real_page_signs_in_and_chats(browser, servers, caplog):
    caplog.set_level(logging.WARNING, logger="chatkit")
    srv = await servers(
        http_port=0,
        streamer=EchoStreamer(),
        auth=Authenticator.from_options(join_code="blue-42", teacher_code="staff-7"),
    )
    context = await browser.new_context()
    errors: list[str] = []
    real = await context.new_page()
    real.on("pageerror", lambda exc: errors.append(str(exc)))
    await sign_in(real, srv.url, "ann", "blue-42", transport="sse")
    await say(real, "hello from the real page")
    await real.wait_for_selector("#list .message.user .text >> text=hello from the real page", timeout=T)
    await real.wait_for_selector("#list .message.ai", timeout=T)
    # The same browser, signed in (its cookie would go along), opens a page on another local port.
    evil_server = await serve_page(EVIL_PAGE % {"ws": srv.url, "http": srv.http_url})
    try:
        evil = await context.new_page()
        await evil.goto(f"http://127.0.0.1:{evil_server.sockets[0].getsockname()[1]}/")
        await evil.wait_for_function("window.results && window.results.done", timeout=T)
        results = await evil.evaluate("window.results")
    finally:
        evil_server.close()
        await evil_server.wait_closed()
    await real.screenshot(path=screenshot_path("security_real_page"))
    assert results["fetch"].startswith("blocked"), results  # 403 without CORS: the page learns nothing
    assert results["history"].startswith("blocked"), results
    assert results["sse"] == "refused" and results["ws"] == "refused", results
    page = await srv.store.history_page("demo", before=None, limit=50)
    assert [m.content for m in page.messages if m.is_user] == [
        "hello from the real page"
    ]  # nothing evil stored
    assert "origin_not_allowed" in caplog.text
    assert caplog.text.count("403") >= 4  # fetch POST, simple POST, history, SSE, WebSocket refused
    assert errors == [], errors
    await context.close()


async def test_a_teacher_deletes_a_message_and_both_pages_remove_it(browser, servers):
    srv = await servers(
        http_port=0,
        streamer=EchoStreamer(),
        auth=Authenticator.from_options(join_code="blue-42", teacher_code="staff-7"),
    )
    student_ctx, teacher_ctx = await browser.new_context(), await browser.new_context()  # two cookie jars
    student, teacher = await student_ctx.new_page(), await teacher_ctx.new_page()
    await sign_in(student, srv.url, "ann", "blue-42")
    await sign_in(teacher, srv.url, "Ms Kim", "staff-7")
    await say(student, "an answer I should not share")
    selector = "#list .message.user:has-text('an answer I should not share')"
    for page in (student, teacher):
        await page.wait_for_selector(selector, timeout=T)
    assert await student.locator(f"{selector} .delete").count() == 0  # students have no delete button
    msg_id = int(await student.get_attribute(selector, "data-id"))
    await teacher.click(f"{selector} .delete")
    for page in (student, teacher):
        await page.wait_for_selector(selector, state="detached", timeout=T)
    await teacher.screenshot(path=screenshot_path("security_teacher_deleted"))
    stored = await srv.store.get(msg_id)
    assert (stored.status, stored.content) == ("deleted", "")  # a tombstone, not a gap
    # a page that joins later does not show it either (replay and history carry the tombstone)
    late_ctx = await browser.new_context()
    late = await late_ctx.new_page()
    await sign_in(late, srv.url, "bob", "blue-42")
    await late.wait_for_selector("#list .message.ai", timeout=T)
    assert await late.locator(selector).count() == 0
    for ctx in (student_ctx, teacher_ctx, late_ctx):
        await ctx.close()
