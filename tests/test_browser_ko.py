"""The chat page in Korean, in headless Chromium: the browser's language picks the strings, the
switch changes them live, a Hangul room works, and Korean typed through an IME (driven with the
Chrome DevTools Protocol's real composition events) is sent whole, once."""

from __future__ import annotations

import re
from contextlib import asynccontextmanager
from urllib.parse import quote

import pytest

from chatkit.llm import EchoStreamer

from .browser import screenshot_path
from .conftest import peer
from .test_browser import browser  # noqa: F401  (the fixture)

pytestmark = pytest.mark.timeout(120)

ROOM = "한국어-방"
WAIT = 20_000  # ms: one constant for every wait on the page


@asynccontextmanager
async def open_page(browser, url: str, locale: str):  # noqa: F811
    context = await browser.new_context(locale=locale)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(url)
    try:
        yield page
    finally:
        assert errors == [], errors
        await context.close()


def room_url(srv, room: str, user: str, transport: str = "ws") -> str:
    return f"{srv.url}?room={quote(room)}&user={quote(user)}&transport={transport}"


async def test_page_follows_the_browser_language_and_switches(browser, servers):  # noqa: F811
    srv = await servers(http_port=0, streamer=EchoStreamer())
    async with open_page(browser, srv.url, "ko-KR") as page:
        # The join form, before anything is connected.
        assert await page.evaluate("document.documentElement.lang") == "ko"
        assert await page.text_content("#join button[type=submit]") == "입장"
        assert await page.get_attribute("#user", "placeholder") == "이름을 입력하세요"
        assert await page.input_value("#lang") == "ko"
        # Join the Hangul room through the form (the room's pattern accepts Hangul).
        await page.fill("#room", ROOM)
        await page.fill("#user", "지민")
        await page.click("#join button[type=submit]")
        await page.wait_for_selector("#status[data-state='open']", timeout=WAIT)
        assert await page.text_content("#status") == "연결됨"
        assert await page.text_content("#send") == "전송"
        assert await page.get_attribute("#input", "placeholder") == "메시지를 입력하세요..."
        assert await page.text_content("#online") == "접속 중: 지민"
        await page.fill("#input", "한국어 방에서 인사합니다")
        await page.press("#input", "Enter")
        await page.wait_for_selector("#list .message.ai .text >> text=한국어 방에서 인사합니다", timeout=WAIT)
        meta = await page.text_content("#list .message.user .meta")
        assert meta.startswith("지민 · ") and ("오전" in meta or "오후" in meta)  # Intl, Korean CLDR
        await page.screenshot(path=screenshot_path("ko_page"))
        # The switch: every dynamic line follows, without reconnecting.
        await page.select_option("#lang", "en")
        assert await page.text_content("#status") == "Connected"
        assert await page.text_content("#send") == "Send"
        assert await page.text_content("#online") == "online: 지민"
        meta = await page.text_content("#list .message.user .meta")
        assert "AM" in meta or "PM" in meta
        assert await page.evaluate("document.documentElement.lang") == "en"
        assert await page.evaluate("window.chatkit.service.socket.readyState") == 1
        await page.select_option("#lang", "ko")
        assert await page.text_content("#status") == "연결됨"
    # The message went to the Hangul room, stored under its NFC name.
    assert [m.content for m in await srv.store.history(ROOM)] == ["한국어 방에서 인사합니다"] * 2


async def test_english_browser_gets_english_and_remembers_a_choice(browser, servers):  # noqa: F811
    srv = await servers(http_port=0, streamer=EchoStreamer())
    async with open_page(browser, room_url(srv, ROOM, "ann", "sse"), "en-US") as page:
        await page.wait_for_selector("#status[data-state='open']", timeout=WAIT)
        assert await page.text_content("#status") == "Connected"
        await page.select_option("#lang", "ko")
        await page.reload()
        await page.wait_for_selector("#status[data-state='open']", timeout=WAIT)
        assert await page.text_content("#status") == "연결됨"  # kept in localStorage
        await page.fill("#input", "SSE로 보낸 메시지")
        await page.press("#input", "Enter")
        await page.wait_for_selector("#list .message.ai .text >> text=SSE로 보낸 메시지", timeout=WAIT)


async def test_reconnect_countdown_and_errors_in_korean(browser, servers):  # noqa: F811
    srv = await servers(http_port=0, streamer=EchoStreamer())
    async with open_page(browser, room_url(srv, ROOM, "지민"), "ko-KR") as page:
        await page.wait_for_selector("#status[data-state='open']", timeout=WAIT)
        await page.evaluate("window.chatkit.service.sendFrame({message: ''})")  # refused: empty_message
        error_line = "#typing >> text=빈 메시지는 보낼 수 없습니다. (empty_message)"
        await page.wait_for_selector(error_line, timeout=WAIT)
        # Presence ticks (someone coming and going, not typing) must not wipe the error line.
        async with peer(srv.ws_url(ROOM, user="민준")) as minjun:
            await minjun.until("connection")
            await page.wait_for_selector("#online >> text=민준", timeout=WAIT)
        await page.wait_for_selector("#online:not(:has-text('민준'))", timeout=WAIT)
        assert await page.is_visible(error_line)
        await srv.stop()
        await page.wait_for_selector("#status[data-state='reconnecting']", timeout=WAIT)
        status = await page.text_content("#status")
        # the countdown in Korean; on a loaded machine the first attempt may already have failed
        assert re.fullmatch(r"\d+초 후 재연결 \(시도 \d+회\)", status.strip()), status
        await page.screenshot(path=screenshot_path("ko_reconnecting"))


async def test_ime_composition_sends_the_whole_message_once(browser, servers):  # noqa: F811
    srv = await servers(http_port=0, streamer=EchoStreamer())
    async with (
        open_page(browser, room_url(srv, ROOM, "지민"), "ko-KR") as jimin,
        open_page(browser, room_url(srv, ROOM, "민준"), "ko-KR") as minjun,
    ):
        for page in (jimin, minjun):
            await page.wait_for_selector("#status[data-state='open']", timeout=WAIT)
        cdp = await jimin.context.new_cdp_session(jimin)
        await jimin.focus("#input")

        async def compose(*stages: str) -> None:
            for stage in stages:
                await cdp.send(
                    "Input.imeSetComposition",
                    {"text": stage, "selectionStart": len(stage), "selectionEnd": len(stage)},
                )

        # 안녕하세요 as a Korean IME types it: each syllable grows jamo by jamo, then is committed.
        await compose("ㅇ")
        # Composition alone is typing: the other page shows the indicator before any commit.
        await minjun.wait_for_selector("#typing >> text=지민님이 입력 중…", timeout=WAIT)
        await compose("아", "안")
        await cdp.send("Input.insertText", {"text": "안"})
        for stages, syllable in [(("ㄴ", "녀", "녕"), "녕"), (("ㅎ", "하"), "하"), (("ㅅ", "세"), "세")]:
            await compose(*stages)
            await cdp.send("Input.insertText", {"text": syllable})
        await compose("ㅇ", "요")
        # Enter while 요 is still being composed: finishes nothing, sends nothing.
        assert await jimin.evaluate("window.chatkit.composing") is True
        await jimin.keyboard.press("Enter")
        await cdp.send("Input.insertText", {"text": "요"})  # the IME commits the last syllable
        # Safari reports the committing Enter after compositionend, with keyCode 229 (CDP cannot
        # produce that keyCode, so this one keydown is synthetic): the page cancels it too.
        cancelled = await jimin.evaluate("""() => !document.getElementById("input").dispatchEvent(
            new KeyboardEvent("keydown", {key: "Enter", keyCode: 229, bubbles: true, cancelable: true}))""")
        assert cancelled is True
        assert await jimin.input_value("#input") == "안녕하세요"
        await jimin.keyboard.press("Enter")  # the real send
        await minjun.wait_for_selector("#list .message.ai .text >> text=안녕하세요", timeout=WAIT)
        assert await jimin.input_value("#input") == ""
        await jimin.screenshot(path=screenshot_path("ko_ime"))
        texts = await minjun.locator("#list .message.user .text").all_text_contents()
    # Messages on one socket arrive in order: had an earlier Enter sent anything, it is stored by now.
    stored = [m.content for m in await srv.store.history(ROOM) if m.is_user]
    assert stored == ["안녕하세요"] and texts == ["안녕하세요"]


async def test_sign_in_errors_and_the_teachers_delete_button_in_korean(browser, servers):  # noqa: F811
    from chatkit.auth import Authenticator

    srv = await servers(
        http_port=0, auth=Authenticator.from_options(join_code="blue-42", teacher_code="staff-7")
    )
    async with open_page(browser, srv.url, "ko-KR") as page:
        await page.wait_for_selector("#code-label:not([hidden])", timeout=WAIT)
        assert await page.text_content("#code-label span") == "입장 코드"
        await page.fill("#room", ROOM)
        await page.fill("#user", "김 선생님")
        await page.fill("#code", "wrong")
        await page.click("#join button[type=submit]")
        await page.wait_for_selector("#join-error >> text=입장 코드가 틀렸습니다.", timeout=WAIT)
        assert await page.text_content("#join-error") == "⚠ 입장 코드가 틀렸습니다. (bad_join_code)"
        await page.fill("#user", "AI")  # a reserved name: refused by code, shown in Korean
        await page.fill("#code", "staff-7")
        await page.click("#join button[type=submit]")
        await page.wait_for_selector("#join-error >> text=(reserved_name)", timeout=WAIT)
        assert "쓸 수 없는 이름입니다" in await page.text_content("#join-error")
        await page.fill("#user", "김 선생님")
        await page.click("#join button[type=submit]")
        await page.wait_for_selector("#status[data-state='open']", timeout=WAIT)
        await page.fill("#input", "지울 메시지")
        await page.press("#input", "Enter")
        mine = "#list .message.user:has-text('지울 메시지')"
        await page.wait_for_selector(f"{mine} .delete", timeout=WAIT)
        assert await page.text_content(f"{mine} .delete") == "삭제"
        assert await page.get_attribute(f"{mine} .delete", "title") == "모두에게서 이 메시지 삭제"
        assert await page.get_attribute(f"{mine} .add-reaction", "title") == "반응 달기"
        await page.select_option("#lang", "en")  # a switch re-labels buttons already shown
        assert await page.text_content(f"{mine} .delete") == "delete"
        assert await page.get_attribute(f"{mine} .add-reaction", "title") == "react"
        await page.select_option("#lang", "ko")
        await page.screenshot(path=screenshot_path("ko_teacher"))
        await page.click(f"{mine} .delete")
        await page.wait_for_selector(mine, state="detached", timeout=WAIT)
