"""Checkers for the notebooks' "Try it" exercises.

Each ``check_*`` function takes the student's code, runs it on several cases
and prints ``✅`` when it is right. A wrong answer raises ``AssertionError``
with a hint; an exercise not started yet (its body raises
``NotImplementedError``) prints ``⏳`` and returns ``None``, so the scaffold
cells of the course run from start to finish. The solutions in
``notebooks/solutions/`` pass every checker, and CI runs them.
"""

from __future__ import annotations

import base64
import hashlib
import html
import inspect
import json
import os
import random
from typing import Any, Callable

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _run(fn: Callable, *args: Any) -> Any:
    result = fn(*args)
    if inspect.isawaitable(result):
        raise TypeError("this exercise expects a plain function, not async")
    return result


def _exercise(name: str) -> Callable[[Callable[..., None]], Callable[..., bool | None]]:
    def wrap(body: Callable[..., None]) -> Callable[..., bool | None]:
        def checker(*student: Any) -> bool | None:
            try:
                body(*student)
            except NotImplementedError:
                print(f"⏳ {name}: not done yet — replace `raise NotImplementedError` with your code.")
                return None
            print(f"✅ {name}: correct!")
            return True

        checker.__name__ = body.__name__
        checker.__doc__ = body.__doc__
        return checker

    return wrap


# -- 00 start here ---------------------------------------------------------


@_exercise("room URL")
def check_room_url(room_url: Callable[[str, int, str], str]) -> None:
    """``room_url(host, port, room)`` → ``ws://host:port/ws/chat/room/``."""
    assert _run(room_url, "127.0.0.1", 8765, "demo") == "ws://127.0.0.1:8765/ws/chat/demo/", \
        "expected ws://127.0.0.1:8765/ws/chat/demo/ — mind the trailing slash"
    assert _run(room_url, "example.org", 80, "a_b-1") == "ws://example.org:80/ws/chat/a_b-1/"


@_exercise("backend choice")
def check_backend_choice(choose: Callable[[dict], str]) -> None:
    """``choose(environ)`` → ``"openai"`` when OPENAI_API_KEY or OPENAI_BASE_URL is set, else ``"offline"``."""
    assert _run(choose, {}) == "offline", "no variables set: the offline tutor"
    assert _run(choose, {"OPENAI_API_KEY": "sk-x"}) == "openai"
    assert _run(choose, {"OPENAI_BASE_URL": "http://127.0.0.1:11434/v1"}) == "openai", "Ollama needs no key"
    assert _run(choose, {"OPENAI_API_KEY": ""}) == "offline", "an empty variable is not set"


@_exercise("collect a reply")
def check_collect_reply(collect: Callable[[list[dict]], str]) -> None:
    """``collect(frames)`` → the reply text from its ``ai_chunk`` frames (ignore other frames)."""
    frames = [{"type": "message", "message": "hi", "id": 1}, {"type": "ai_chunk", "chunk": "He", "id": 2},
              {"type": "typing", "user": "x", "is_typing": True}, {"type": "ai_chunk", "chunk": "llo", "id": 2},
              {"type": "ai_complete", "message": "Hello", "id": 2}]
    assert _run(collect, frames) == "Hello", "join the 'chunk' fields of the ai_chunk frames, in order"
    assert _run(collect, []) == ""


# -- 01 the handshake --------------------------------------------------------


@_exercise("Sec-WebSocket-Accept")
def check_accept_key(accept_key: Callable[[str], str]) -> None:
    """``accept_key(key)`` → base64(SHA-1(key + GUID))."""
    assert _run(accept_key, "dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", \
        "RFC 6455's example: append the GUID to the key, SHA-1, then base64 (a str)"
    for _ in range(5):
        key = base64.b64encode(os.urandom(16)).decode()
        expected = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        assert _run(accept_key, key) == expected


@_exercise("frame header")
def check_frame_header(parse_header: Callable[[bytes], dict]) -> None:
    """``parse_header(data)`` → ``{"fin", "opcode", "masked", "length"}`` for 7-, 16- and 64-bit lengths."""
    assert _run(parse_header, bytes([0x81, 0x05]) + b"hello") == {"fin": True, "opcode": 1, "masked": False, "length": 5}
    assert _run(parse_header, bytes([0x01, 0x85]) + b"\x00" * 9) == {"fin": False, "opcode": 1, "masked": True, "length": 5}
    assert _run(parse_header, bytes([0x82, 126, 0x01, 0x00]) + b"\x00" * 256) == \
        {"fin": True, "opcode": 2, "masked": False, "length": 256}, "length 126 means: a 16-bit length follows"
    assert _run(parse_header, bytes([0x81, 127]) + (70000).to_bytes(8, "big")) == \
        {"fin": True, "opcode": 1, "masked": False, "length": 70000}, "length 127 means: a 64-bit length follows"


@_exercise("masking")
def check_mask(mask: Callable[[bytes, bytes], bytes]) -> None:
    """``mask(payload, key)`` → payload XOR key (repeated); masking twice gives the payload back."""
    assert _run(mask, b"Hello", b"\x37\xfa\x21\x3d") == bytes.fromhex("7f9f4d5158"), "RFC 6455 §5.7's example"
    data = os.urandom(50)
    key = os.urandom(4)
    assert _run(mask, _run(mask, data, key), key) == data
    assert _run(mask, b"", key) == b""


# -- 02 a chat server --------------------------------------------------------


@_exercise("message frame")
def check_message_frame(make_frame: Callable[..., str]) -> None:
    """``make_frame(text, client_id=None)`` → the JSON text a client sends."""
    assert json.loads(_run(make_frame, "hi")) in ({"message": "hi"}, {"type": "message", "message": "hi"})
    frame = json.loads(_run(make_frame, "안녕", "c-1"))
    assert frame["message"] == "안녕" and frame["client_id"] == "c-1", "include client_id when given"


@_exercise("room names")
def check_room_names(is_valid_room: Callable[[str], bool]) -> None:
    """``is_valid_room(name)``: 1 to 64 letters, digits, ``_`` or ``-``."""
    for good in ("demo", "a", "A_b-9", "x" * 64):
        assert _run(is_valid_room, good) is True, f"{good!r} is valid"
    for bad in ("", "x" * 65, "a b", "a/b", "방", "a.b"):
        assert _run(is_valid_room, bad) is False, f"{bad!r} is not valid"


@_exercise("emoji reaction")
def check_reaction(decode_reaction: Callable[[str], dict]) -> None:
    """``decode_reaction(raw)`` → ``{"message_id": int, "emoji": str}`` or ``ValueError`` with a reason."""
    assert _run(decode_reaction, '{"type": "reaction", "messageId": 4, "emoji": "👍"}') == {"message_id": 4, "emoji": "👍"}
    assert _run(decode_reaction, '{"type": "reaction", "message_id": 9, "emoji": "🎉"}') == {"message_id": 9, "emoji": "🎉"}
    for bad in ("{", '{"type": "reaction", "emoji": "👍"}', '{"type": "reaction", "messageId": -1, "emoji": "👍"}',
                '{"type": "reaction", "messageId": 1, "emoji": ""}', '{"type": "reaction", "messageId": 1, "emoji": "' + "x" * 20 + '"}'):
        try:
            _run(decode_reaction, bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} must raise ValueError")


# -- 03 streaming ---------------------------------------------------------------


@_exercise("time to first token")
def check_ttft(ttft: Callable[[float, list[float]], float]) -> None:
    """``ttft(sent_at, chunk_times)`` → seconds from sending to the first chunk."""
    assert abs(_run(ttft, 10.0, [10.3, 10.35, 10.4]) - 0.3) < 1e-9
    assert abs(_run(ttft, 0.0, [2.5]) - 2.5) < 1e-9


@_exercise("tokens per second")
def check_rate(rate: Callable[[list[float]], float]) -> None:
    """``rate(chunk_times)`` → chunks per second after the first one (0.0 for fewer than 2)."""
    assert abs(_run(rate, [1.0, 1.5, 2.0, 2.5, 3.0]) - 2.0) < 1e-9, "4 intervals in 2 s: 2 per second"
    assert _run(rate, [1.0]) == 0.0 and _run(rate, []) == 0.0


async def check_take(take: Callable[[Any, int], Any]) -> bool | None:
    """``await take(stream, n)`` → the first ``n`` pieces of an async iterator, which it closes.

    An async checker: call it with ``await check_take(take)``."""
    closed: list[bool] = []

    async def stream():
        try:
            for i in range(100):
                yield f"p{i}"
        finally:
            closed.append(True)

    try:
        got = await take(stream(), 3)
    except NotImplementedError:
        print("⏳ stop after N: not done yet — replace `raise NotImplementedError` with your code.")
        return None
    assert list(got) == ["p0", "p1", "p2"], f"expected the first three pieces, got {got!r}"
    assert closed == [True], "close the stream (await stream.aclose()) so the model stops generating"
    print("✅ stop after N: correct!")
    return True


# -- 04 chat panes ---------------------------------------------------------------


@_exercise("typing debouncer")
def check_debouncer(Debouncer: type) -> None:
    """``Debouncer(interval, idle)``: ``.keystroke(now)`` → list of typing values to send;
    ``.poll(now)`` → ``[False]`` once ``idle`` seconds passed since the last keystroke, else ``[]``."""
    d = Debouncer(0.5, 3.0)
    assert _run(d.keystroke, 0.0) == [True], "the first keystroke sends typing: true"
    assert _run(d.keystroke, 0.2) == [], "within 500 ms: nothing"
    assert _run(d.keystroke, 0.6) == [True], "after 500 ms: send again (refreshes the server's expiry)"
    assert _run(d.poll, 2.0) == [], "not idle long enough"
    assert _run(d.poll, 3.7) == [False], "3 s after the last keystroke: typing: false"
    assert _run(d.poll, 5.0) == [], "only once"
    assert _run(d.keystroke, 6.0) == [True], "typing again starts over"


@_exercise("escape")
def check_escape(render: Callable[[str, str], str]) -> None:
    """``render(user, text)`` → ``<b>user</b>: text`` with both escaped."""
    out = _run(render, "ann", "<img src=x onerror=alert(1)>")
    assert "<img" not in out and "&lt;img" in out, "escape the text (html.escape)"
    assert _run(render, "<i>eve</i>", "hi") == f"<b>{html.escape('<i>eve</i>')}</b>: hi"


@_exercise("typing line")
def check_typing_line(typing_line: Callable[[list[str]], str]) -> None:
    """``typing_line(users)`` → "" / "ann is typing…" / "ann and bob are typing…" / "3 people are typing…"."""
    assert _run(typing_line, []) == ""
    assert _run(typing_line, ["ann"]) == "ann is typing…"
    assert _run(typing_line, ["ann", "bob"]) == "ann and bob are typing…"
    assert _run(typing_line, ["a", "b", "c"]) == "3 people are typing…"


# -- 05 reconnection ---------------------------------------------------------------


@_exercise("backoff policy")
def check_backoff(delay: Callable[[int, random.Random], float]) -> None:
    """``delay(attempt, rng)``: exponential from 1 s, doubling, capped at 30 s, with jitter in [50 %, 100 %]."""
    rng = random.Random(0)
    for attempt, base in [(1, 1), (2, 2), (3, 4), (5, 16), (6, 30), (20, 30)]:
        values = [_run(delay, attempt, rng) for _ in range(200)]
        assert all(base / 2 <= v <= base for v in values), f"attempt {attempt}: expected within [{base / 2}, {base}]"
        assert max(values) - min(values) > base / 10, f"attempt {attempt}: add jitter (rng.uniform)"


@_exercise("deduplicate")
def check_dedup(dedup: Callable[[list[dict]], list[dict]]) -> None:
    """``dedup(frames)`` → frames without repeated message ids (first one wins), order kept."""
    frames = [{"type": "message", "id": 1}, {"type": "message", "id": 2}, {"type": "message", "id": 1},
              {"type": "typing"}, {"type": "message", "id": 3}, {"type": "message", "id": 2}]
    assert _run(dedup, frames) == [frames[0], frames[1], frames[3], frames[4]], \
        "frames without an id (like typing) always pass"


@_exercise("resume cursor")
def check_cursor(cursor: Callable[[int, set[int]], int]) -> None:
    """``cursor(last_seen, streaming)`` → the ``?after=`` to reconnect with."""
    assert _run(cursor, 10, set()) == 10
    assert _run(cursor, 10, {8}) == 7, "a reply still streaming must be replayed: resume before it"
    assert _run(cursor, 12, {9, 11}) == 8


# -- 06 WebSocket vs SSE -----------------------------------------------------------


@_exercise("SSE parser")
def check_sse_parser(parse: Callable[[str], list[dict]]) -> None:
    """``parse(text)`` → events ``{"event", "data", "id"}`` by the WHATWG rules."""
    text = "retry: 3000\n\n: heartbeat\n\nevent: message\nid: 4\ndata: a\ndata: b\n\ndata: plain\n\n"
    assert _run(parse, text) == [
        {"event": "message", "data": "a\nb", "id": "4"},
        {"event": "message", "data": "plain", "id": "4"},
    ], "comments and retry-only blocks dispatch nothing; the id carries over; the default event is 'message'"
    assert _run(parse, "data:no-space\r\n\r\n") == [{"event": "message", "data": "no-space", "id": None}]


@_exercise("SSE encoder")
def check_sse_encoder(encode: Callable[..., str]) -> None:
    """``encode(data, event=None, id=None)`` → one event's text."""
    assert _run(encode, "hi") == "data: hi\n\n"
    assert _run(encode, "a\nb", "message", 3) == "event: message\nid: 3\ndata: a\ndata: b\n\n"


@_exercise("choose a transport")
def check_choose(choose: Callable[[dict], str]) -> None:
    """``choose(needs)`` → ``"websocket"`` or ``"sse"``."""
    assert _run(choose, {"client_sends_often": True, "binary": False, "through_strict_proxies": False}) == "websocket"
    assert _run(choose, {"client_sends_often": False, "binary": False, "through_strict_proxies": True}) == "sse"
    assert _run(choose, {"client_sends_often": False, "binary": True, "through_strict_proxies": False}) == "websocket", \
        "SSE carries text only"
    assert _run(choose, {"client_sends_often": False, "binary": False, "through_strict_proxies": False}) == "sse"


__all__ = sorted(n for n in dir() if n.startswith("check_"))
