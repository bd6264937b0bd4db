"""The exercise checkers teach: every checker passes a right answer (an unusual one, too), fails at least two
plausible wrong answers with a report that names the case, shows expected vs got and the hint aimed at that
mistake, and says ⏳ for an untouched scaffold. No wrong answer surfaces as a bare exception."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import html
import json
import random
import re
import unicodedata
from pathlib import Path

import nbformat
import pytest
import websockets
from websockets.asyncio.client import connect

from chatkit import exercises
from chatkit.exercise_messages import CATALOGS, EN

from . import feedback

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WRONG_ANSWER_TIMEOUT = exercises.TIMEOUT / 4
"""How long a checker waits for an event that a wrong answer never produces (right answers get the full one)."""


def run(checker, answer, capsys):
    """(result, printed report) of a sync checker."""
    result = checker(answer)
    return result, capsys.readouterr().out


async def arun(checker, answer, capsys):
    result = await checker(answer)
    return result, capsys.readouterr().out


# Notebooks 00–06's checkers run live exchanges (a room server, a stream, a reconnect): some
# cases have no single input to print.
assert_fails = functools.partial(feedback.assert_fails, shows_input=False)


def assert_passes(result, out):
    assert result is True, out
    assert out.startswith("✅") and "cases passed" in out, out


# -- the report, the catalog -------------------------------------------------------------


def test_stub_reports_not_done(capsys):
    def stub(*_):
        raise NotImplementedError

    assert exercises.check_accept_key(stub) is None
    assert "not done yet" in capsys.readouterr().out


def test_every_key_used_by_a_checker_is_in_the_english_catalog():
    import inspect

    from chatkit import exercises_scale, exercises_security

    source = "".join(inspect.getsource(m) for m in (exercises, exercises_scale, exercises_security))
    used = set(re.findall(r'(?:s\.t|_t|_run_cases|_arun_cases)\(\s*"([a-z_.0-9]+)"', source))
    assert used, "no keys found"
    # keys named in case tables ("scale.online.expired", ...) and looked up later by variable
    namespaces = {key.split(".")[0] for key in EN if "." in key}
    used |= {k for k in re.findall(r'"([a-z_]+\.[a-z_.0-9]+)"', source) if k.split(".")[0] in namespaces}
    assert used <= EN.keys(), sorted(used - EN.keys())


def test_language_setting_and_fallback(capsys, monkeypatch):
    monkeypatch.setitem(CATALOGS, "xx", {"passed": "OK {name} {total}", "room_url": "URL"})
    exercises.set_language("xx")
    try:
        assert exercises.check_room_url(lambda h, p, r: f"ws://{h}:{p}/ws/chat/{r}/") is True
        assert capsys.readouterr().out.strip() == "OK URL 2"
        exercises.check_room_url(lambda h, p, r: f"ws://{h}:{p}/ws/chat/{r}")
        out = capsys.readouterr().out
        assert "trailing slash" in out  # a key missing in "xx" falls back to English
    finally:
        exercises.set_language("en")
    assert exercises.check_room_url(lambda h, p, r: f"ws://{h}:{p}/ws/chat/{r}/", lang="xx") is True
    assert capsys.readouterr().out.startswith("OK URL")
    with pytest.raises(ValueError, match="available"):
        exercises.set_language("tlh")


def test_an_exception_in_the_learners_code_is_a_reported_case(capsys):
    result, out = run(
        exercises.check_collect_reply, lambda frames: "".join(f["chunk"] for f in frames), capsys
    )
    assert_fails(result, out, "raised KeyError: 'chunk'")


def test_an_async_answer_to_a_plain_exercise_is_explained(capsys):
    async def ttft(sent, times):
        return times[0] - sent

    result, out = run(exercises.check_ttft, ttft, capsys)
    assert_fails(result, out, "plain function")


# -- 00 ----------------------------------------------------------------------------------


def test_room_url(capsys):
    assert_passes(
        *run(
            exercises.check_room_url,
            lambda h, p, r: "ws://" + "/".join([f"{h}:{p}", "ws", "chat", r, ""]),
            capsys,
        )
    )
    assert_fails(
        *run(exercises.check_room_url, lambda h, p, r: f"ws://{h}:{p}/ws/chat/{r}", capsys), "trailing slash"
    )
    assert_fails(
        *run(exercises.check_room_url, lambda h, p, r: f"http://{h}:{p}/ws/chat/{r}/", capsys), "ws://"
    )


def test_backend_choice(capsys):
    assert_passes(
        *run(
            exercises.check_backend_choice,
            lambda env: (
                "openai" if any(env.get(k) for k in ("OPENAI_API_KEY", "OPENAI_BASE_URL")) else "offline"
            ),
            capsys,
        )
    )
    assert_fails(
        *run(
            exercises.check_backend_choice,
            lambda env: "openai" if "OPENAI_API_KEY" in env else "offline",
            capsys,
        ),
        "no key needed",
    )
    assert_fails(
        *run(
            exercises.check_backend_choice,
            lambda env: "openai" if {"OPENAI_API_KEY", "OPENAI_BASE_URL"} & env.keys() else "offline",
            capsys,
        ),
        "empty variable",
    )


def test_collect_reply(capsys):
    assert_passes(
        *run(
            exercises.check_collect_reply,
            lambda frames: "".join(
                map(lambda f: f.get("chunk", "") if f["type"] == "ai_chunk" else "", frames)
            ),
            capsys,
        )
    )
    assert_fails(
        *run(
            exercises.check_collect_reply,
            lambda frames: "".join(f.get("chunk", f.get("message", "")) for f in frames),
            capsys,
        ),
        "ai_chunk",
    )
    assert_fails(
        *run(
            exercises.check_collect_reply,
            lambda frames: "".join(
                f.get("chunk") or f.get("message", "")
                for f in frames
                if f["type"] in ("ai_chunk", "ai_complete")
            ),
            capsys,
        ),
        "repeats the full text",
    )


# -- 01 ----------------------------------------------------------------------------------


def test_accept_key(capsys):
    assert_passes(
        *run(
            exercises.check_accept_key,
            lambda key: base64.standard_b64encode(
                hashlib.new("sha1", (key + GUID).encode("ascii")).digest()
            ).decode(),
            capsys,
        )
    )
    assert_fails(
        *run(
            exercises.check_accept_key,
            lambda key: base64.b64encode(hashlib.sha1(key.encode()).digest()).decode(),
            capsys,
        ),
        "append the GUID",
    )
    assert_fails(
        *run(
            exercises.check_accept_key,
            lambda key: base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()),
            capsys,
        ),
        "type is bytes",
    )


def test_frame_header(capsys):
    def right(data):
        n = data[1] & 0x7F
        n = {
            126: lambda: int.from_bytes(data[2:4], "big"),
            127: lambda: int.from_bytes(data[2:10], "big"),
        }.get(n, lambda: n)()
        return {"length": n, "masked": data[1] >= 128, "opcode": data[0] % 16, "fin": data[0] >= 128}

    def no_extended(data):
        return {
            "fin": bool(data[0] & 0x80),
            "opcode": data[0] & 0x0F,
            "masked": bool(data[1] & 0x80),
            "length": data[1] & 0x7F,
        }

    def bits_not_bools(data):
        return {**right(data), "fin": data[0] & 0x80, "masked": data[1] & 0x80}

    assert_passes(*run(exercises.check_frame_header, right, capsys))
    assert_fails(*run(exercises.check_frame_header, no_extended, capsys), "announce a 2- or 8-byte")
    assert_fails(*run(exercises.check_frame_header, bits_not_bools, capsys), "True/False")


def test_mask(capsys):
    assert_passes(
        *run(
            exercises.check_mask,
            lambda p, k: (
                int.from_bytes(p, "big") ^ int.from_bytes((k * (len(p) // 4 + 1))[: len(p)], "big")
            ).to_bytes(len(p), "big"),
            capsys,
        )
    )
    assert_fails(*run(exercises.check_mask, lambda p, k: bytes(b ^ k[0] for b in p), capsys), "i % 4")
    assert_fails(
        *run(exercises.check_mask, lambda p, k: [b ^ k[i % 4] for i, b in enumerate(p)], capsys),
        "type is list",
    )


# -- 02 ----------------------------------------------------------------------------------


def test_message_frame(capsys):
    def right(text, client_id=None):
        return json.dumps(
            {"type": "message", "message": text} | ({"client_id": client_id} if client_id else {})
        )

    assert_passes(*run(exercises.check_message_frame, right, capsys))
    assert_fails(
        *run(
            exercises.check_message_frame,
            lambda text, client_id=None: (
                '{"message": "%s", "client_id": "%s"}' % (text, client_id)
                if client_id
                else '{"message": "%s"}' % text
            ),
            capsys,
        ),
        "json.dumps",
    )
    assert_fails(
        *run(exercises.check_message_frame, lambda text, client_id=None: {"message": text}, capsys),
        "not the dict",
    )
    assert_fails(
        *run(
            exercises.check_message_frame, lambda text, client_id=None: json.dumps({"message": text}), capsys
        ),
        "client_id",
    )


FILLERS = {"\u115f", "\u1160", "\u3164", "\uffa0"}


def _room_rule(name, *, nfc=True, count_bytes=True, marks=True):
    """The server's room-name rule written out (the solution), with switches for the usual slips."""
    if nfc:
        name = unicodedata.normalize("NFC", name)
    if not 1 <= len(name) <= 64 or (count_bytes and len(name.encode("utf-8")) > 192):
        return False
    previous = ""
    for c in name:
        category = unicodedata.category(c)
        if c in "_-" or ((category[0] == "L" or category == "Nd") and c not in FILLERS):
            previous = category
        elif not (marks and category in ("Mn", "Mc") and previous.startswith("L")):
            return False
    return True


def test_room_names_expect_what_the_server_accepts(capsys):
    assert_passes(*run(exercises.check_room_names, _room_rule, capsys))
    # the unusual right answer: ask the server's own validator
    from chatkit.protocol import ProtocolError, validate_session_id

    def ask_the_server(name):
        try:
            validate_session_id(name)
        except ProtocolError:
            return False
        return True

    assert_passes(*run(exercises.check_room_names, ask_the_server, capsys))


def test_room_names_wrong_answers(capsys):
    # the old ASCII-only rule: Korean rooms are valid now
    assert_fails(
        *run(
            exercises.check_room_names,
            lambda name: re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name) is not None,
            capsys,
        ),
        "'방'",
        "every script",
    )
    # counting before normalizing: jamo typed one by one are three code points per syllable
    assert_fails(*run(exercises.check_room_names, lambda name: _room_rule(name, nfc=False), capsys), "NFC")
    # characters only, no byte limit
    assert_fails(
        *run(exercises.check_room_names, lambda name: _room_rule(name, count_bytes=False), capsys),
        "192 bytes",
    )
    # isalnum(): '²' and the Hangul filler pass, marks fail
    assert_fails(
        *run(
            exercises.check_room_names,
            lambda name: 0 < len(name) <= 64 and all(c.isalnum() or c in "_-" for c in name),
            capsys,
        ),
        "combining mark",
    )
    # no marks allowed at all: Hindi needs them
    assert_fails(*run(exercises.check_room_names, lambda name: _room_rule(name, marks=False), capsys), "'Mn'")
    # a match object instead of a bool
    assert_fails(
        *run(exercises.check_room_names, lambda name: re.fullmatch(r"[\w-]{1,64}", name), capsys),
        "not a match object",
    )


def test_room_names_checker_agrees_with_the_server():
    """The checker's expected answers come from the validator: a case that flips when the server's rule changes
    flips in the checker too, and the cases cover both answers."""
    from chatkit.protocol import ProtocolError, validate_session_id

    answers = []

    def spy(name):
        try:
            validate_session_id(name)
            answers.append(True)
        except ProtocolError:
            answers.append(False)
        return answers[-1]

    assert exercises.check_room_names(spy, lang="en") is True
    assert answers.count(True) >= 8 and answers.count(False) >= 10


async def _room_server_right(websocket, rooms={}):  # noqa: B006 - the unusual right answer keeps its rooms here
    room = rooms.setdefault(websocket.request.path, set())
    room.add(websocket)
    try:
        async for message in websocket:
            websockets.broadcast(room, message)
    finally:
        room.discard(websocket)


async def test_room_server(capsys, monkeypatch):
    assert_passes(*await arun(exercises.check_room_server, _room_server_right, capsys))
    monkeypatch.setattr(exercises, "TIMEOUT", WRONG_ANSWER_TIMEOUT)  # wrong answers make the checker wait

    everyone: set = set()

    async def one_room_for_all(websocket):
        everyone.add(websocket)
        try:
            async for message in websocket:
                websockets.broadcast(everyone, message)
        finally:
            everyone.discard(websocket)

    assert_fails(
        *await arun(exercises.check_room_server, one_room_for_all, capsys), "one set of connections per room"
    )

    rooms: dict = {}

    async def others_only(websocket):
        room = rooms.setdefault(websocket.request.path, set())
        room.add(websocket)
        try:
            async for message in websocket:
                for other in room - {websocket}:
                    await other.send(message)
        finally:
            room.discard(websocket)

    assert_fails(*await arun(exercises.check_room_server, others_only, capsys), "including the sender")

    rooms2: dict = {}

    async def never_leaves(websocket):
        room = rooms2.setdefault(websocket.request.path, [])
        room.append(websocket)
        async for message in websocket:
            for member in room:
                await member.send(message)

    assert_fails(*await arun(exercises.check_room_server, never_leaves, capsys), "finally")

    async def stub(websocket):
        raise NotImplementedError

    assert await exercises.check_room_server(stub) is None
    assert "not done yet" in capsys.readouterr().out


# -- 03 ----------------------------------------------------------------------------------


def test_ttft(capsys):
    assert_passes(
        *run(
            exercises.check_ttft,
            lambda sent, times: min(times, default=sent - 1) - sent if times else None,
            capsys,
        )
    )
    assert_fails(*run(exercises.check_ttft, lambda sent, times: max(times) - sent, capsys), "first chunk")
    assert_fails(*run(exercises.check_ttft, lambda sent, times: times[0] - sent, capsys), "IndexError")


def test_rate(capsys):
    def right(times):
        span = times[-1] - times[0] if len(times) > 1 else 0
        return (len(times) - 1) / span if span else 0.0

    assert_passes(*run(exercises.check_rate, right, capsys))
    assert_fails(
        *run(exercises.check_rate, lambda t: len(t) / (t[-1] - t[0]) if len(t) > 1 else 0.0, capsys),
        "(n - 1) / (last - first)",
    )
    assert_fails(
        *run(exercises.check_rate, lambda t: (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 else 0.0, capsys),
        "ZeroDivisionError",
    )


async def test_take(capsys):
    async def right(stream, n):
        async with contextlib.aclosing(stream) as pieces:
            return [await anext(pieces) for _ in range(n)] if n else []

    async def right_short(stream, n):  # unusual: anext() in a loop, aclosing, a short stream ends it
        out = []
        async with contextlib.aclosing(stream):
            while len(out) < n:
                try:
                    out.append(await anext(stream))
                except StopAsyncIteration:
                    break
        return out

    assert_passes(*await arun(exercises.check_take, right_short, capsys))

    async def drain(stream, n):
        pieces = [p async for p in stream][:n]
        await stream.aclose()
        return pieces

    async def no_close(stream, n):
        out = []
        if n == 0:
            return out
        async for piece in stream:
            out.append(piece)
            if len(out) == n:
                break
        return out

    assert_fails(*await arun(exercises.check_take, drain, capsys), "pulled 100 pieces")
    assert_fails(*await arun(exercises.check_take, no_close, capsys), "aclose")
    assert_fails(*await arun(exercises.check_take, right, capsys), "StopAsyncIteration")


async def test_streamer(capsys):
    async def right(messages):
        question = [m for m in messages if m["role"] == "user"][-1]["content"]
        for word in re.findall(r"\S+\s*", question.upper()):
            await asyncio.sleep(0)
            yield word

    assert_passes(*await arun(exercises.check_streamer, right, capsys))

    async def first_message(messages):
        for word in messages[0]["content"].upper().split(" "):
            yield word + " "

    async def one_piece(messages):
        yield messages[-1]["content"].upper()

    async def not_a_generator(messages):
        return messages[-1]["content"].upper()

    assert_fails(*await arun(exercises.check_streamer, first_message, capsys), "messages[-1]")
    assert_fails(*await arun(exercises.check_streamer, one_piece, capsys), "several pieces")
    assert_fails(*await arun(exercises.check_streamer, not_a_generator, capsys), "async generator")


# -- 04 ----------------------------------------------------------------------------------


def test_escape(capsys):
    def right(user, text):
        esc = lambda s: "".join(f"&#{ord(c)};" if c in "<>&\"'" else c for c in s)  # noqa: E731
        return f"<b>{esc(user)}</b>: {esc(text)}"

    assert_passes(*run(exercises.check_escape, right, capsys))
    assert_fails(
        *run(exercises.check_escape, lambda u, t: f"<b>{u}</b>: {html.escape(t)}", capsys), "user name"
    )
    assert_fails(*run(exercises.check_escape, lambda u, t: f"<b>{u}</b>: {t}", capsys), "html.escape")
    assert_fails(
        *run(exercises.check_escape, lambda u, t: html.escape(f"<b>{u}</b>: {t}"), capsys), "exactly one <b>"
    )


def test_typing_line(capsys):
    def right(users):
        match users:
            case []:
                return ""
            case [one]:
                return f"{one} is typing…"
            case [a, b]:
                return f"{a} and {b} are typing\u2026"
        return f"{len(users)} people are typing…"

    assert_passes(*run(exercises.check_typing_line, right, capsys))
    assert_fails(*run(exercises.check_typing_line, lambda u: right(u).replace("…", "..."), capsys), "U+2026")
    assert_fails(
        *run(
            exercises.check_typing_line,
            lambda u: "" if not u else " and ".join(u) + (" is" if len(u) == 1 else " are") + " typing…",
            capsys,
        ),
        "people are typing",
    )


def test_debouncer(capsys):
    class Right:
        def __init__(self, interval, idle):
            self.interval, self.idle, self.sent_at, self.last, self.typing = interval, idle, None, None, False

        def keystroke(self, now):
            self.last = now
            if not self.typing or now - self.sent_at >= self.interval:
                self.typing, self.sent_at = True, now
                return [True]
            return []

        def poll(self, now):
            if self.typing and now - self.last >= self.idle:
                self.typing = False
                return [False]
            return []

    class EveryKeystroke(Right):
        def keystroke(self, now):
            self.last, self.typing = now, True
            return [True]

    class PollsForever(Right):
        def poll(self, now):
            return [False] if self.last is not None and now - self.last >= self.idle else []

    assert_passes(*run(exercises.check_debouncer, Right, capsys))
    assert_fails(*run(exercises.check_debouncer, EveryKeystroke, capsys), "at most once per interval")
    assert_fails(*run(exercises.check_debouncer, PollsForever, capsys), "[False] once")


# -- 05 ----------------------------------------------------------------------------------


def test_dedup(capsys):
    def right(frames):
        seen = set()
        return [f for f in frames if "id" not in f or not (f["id"] in seen or seen.add(f["id"]))]

    assert_passes(*run(exercises.check_dedup, right, capsys))
    assert_fails(
        *run(exercises.check_dedup, lambda frames: list({f.get("id"): f for f in frames}.values()), capsys),
        "without an id",
    )
    assert_fails(
        *run(
            exercises.check_dedup,
            lambda frames: [
                f
                for i, f in enumerate(frames)
                if not f.get("id") or f["id"] not in [g.get("id") for g in frames[:i]]
            ],
            capsys,
        ),
        "0 is an id",
    )


def test_cursor(capsys):
    assert_passes(
        *run(exercises.check_cursor, lambda last, streaming: min([last, *(s - 1 for s in streaming)]), capsys)
    )
    assert_fails(*run(exercises.check_cursor, lambda last, streaming: last, capsys), "min(streaming) - 1")
    assert_fails(
        *run(
            exercises.check_cursor, lambda last, streaming: max(streaming) - 1 if streaming else last, capsys
        ),
        "oldest one decides",
    )


def test_backoff(capsys):
    assert_passes(
        *run(
            exercises.check_backoff,
            lambda attempt, rng: min(30, 1 << min(attempt - 1, 10)) * (1 - rng.random() / 2),
            capsys,
        )
    )
    assert_fails(
        *run(exercises.check_backoff, lambda attempt, rng: min(30.0, 2.0 ** (attempt - 1)) * 0.75, capsys),
        "jitter",
    )
    assert_fails(
        *run(
            exercises.check_backoff, lambda attempt, rng: 2.0 ** (attempt - 1) * rng.uniform(0.5, 1.0), capsys
        ),
        "min(30",
    )
    assert_fails(
        *run(
            exercises.check_backoff,
            lambda attempt, rng: min(30, 2 ** (attempt - 1)) * random.uniform(0.5, 1),
            capsys,
        ),
        "the rng you are given",
    )


async def _follow_right(url, on_message):
    last, delay = None, 0.05
    while True:
        try:
            async with connect(url + (f"?after={last}" if last is not None else ""), proxy=None) as ws:
                delay = 0.05
                async for raw in ws:
                    frame = json.loads(raw)
                    if frame["type"] == "message" and (last is None or frame["id"] > last):
                        last = frame["id"]
                        on_message(frame)
                    elif frame["type"] == "connection" and last is None:
                        last = frame["last_id"]
        except (OSError, websockets.ConnectionClosed, TimeoutError):
            pass
        await asyncio.sleep(delay)
        delay = min(1.0, delay * 2)


async def test_reconnect(capsys, monkeypatch):
    assert_passes(*await arun(exercises.check_reconnect, _follow_right, capsys))
    monkeypatch.setattr(exercises, "TIMEOUT", WRONG_ANSWER_TIMEOUT)  # wrong answers make the checker wait

    async def no_retry(url, on_message):
        async with connect(url, proxy=None) as ws:
            async for raw in ws:
                frame = json.loads(raw)
                if frame["type"] == "message":
                    on_message(frame)

    async def no_resume(url, on_message):
        while True:
            try:
                async with connect(url, proxy=None) as ws:
                    async for raw in ws:
                        frame = json.loads(raw)
                        if frame["type"] == "message":
                            on_message(frame)
            except OSError:
                pass
            await asyncio.sleep(0.05)

    assert_fails(*await arun(exercises.check_reconnect, no_retry, capsys), "connect again")
    assert_fails(*await arun(exercises.check_reconnect, no_resume, capsys), "?after=")


# -- 06 ----------------------------------------------------------------------------------


def test_sse_encoder(capsys):
    def id_first(data, event=None, id=None):  # valid SSE: field order does not matter
        head = ([f"id:{id}"] if id is not None else []) + ([f"event:{event}"] if event else [])
        return "\r\n".join(head + [f"data:{line}" for line in data.split("\n")]) + "\r\n\r\n"

    assert_passes(*run(exercises.check_sse_encoder, id_first, capsys))
    assert_fails(
        *run(exercises.check_sse_encoder, lambda data, event=None, id=None: f"data: {data}\n\n", capsys),
        "one 'data:' line per line",
    )
    assert_fails(
        *run(
            exercises.check_sse_encoder,
            lambda data, event=None, id=None: (
                f"event: {event}\nid: {id}\n" + "".join(f"data: {x}\n" for x in data.split("\n")) + "\n"
            ),
            capsys,
        ),
        "None",
    )
    assert_fails(
        *run(
            exercises.check_sse_encoder,
            lambda data, event=None, id=None: "".join(f"data: {x}\n" for x in data.split("\n")),
            capsys,
        ),
        "'\\n\\n'",
    )


def test_choose(capsys):
    assert_passes(
        *run(
            exercises.check_choose,
            lambda n: ("sse", "websocket")[
                not n["through_strict_proxies"] and (n["binary"] or n["client_sends_often"])
            ],
            capsys,
        )
    )
    assert_fails(
        *run(
            exercises.check_choose,
            lambda n: "websocket" if n["binary"] or n["client_sends_often"] else "sse",
            capsys,
        ),
        "strict proxies",
    )
    assert_fails(*run(exercises.check_choose, lambda n: "websocket", capsys), "SSE is enough")
    assert_fails(
        *run(exercises.check_choose, lambda n: "sse" if n["through_strict_proxies"] else "websocket", capsys),
        "SSE is enough",
    )


def test_sse_parser(capsys):
    assert_passes(*run(exercises.check_sse_parser, exercises._parse_sse, capsys))

    def naive(text):
        events = []
        for block in text.split("\n\n"):
            lines = dict(
                line.split(": ", 1) for line in block.split("\n") if ": " in line and not line.startswith(":")
            )
            if "data" in lines:
                events.append(
                    {"event": lines.get("event", "message"), "data": lines["data"], "id": lines.get("id")}
                )
        return events

    def lstrips(text):
        return [
            {**e, "data": "\n".join(x.lstrip() for x in e["data"].split("\n"))}
            for e in exercises._parse_sse(text)
        ]

    assert_fails(*run(exercises.check_sse_parser, naive, capsys))
    assert_fails(*run(exercises.check_sse_parser, lstrips, capsys), "one leading space")


NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PAIRS = [
    (nb, NOTEBOOKS / "solutions" / f"{nb.stem}_solutions.ipynb")
    for nb in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if (NOTEBOOKS / "solutions" / f"{nb.stem}_solutions.ipynb").exists()
]


def _exercise_cells(path: Path, *, after_try_it: bool) -> list[str]:
    nb = nbformat.read(path, as_version=4)
    cells, started = [], not after_try_it
    for cell in nb.cells:
        if cell.cell_type == "markdown" and re.search(r"^## Try it", cell.source, re.M):
            started = True
        elif started and cell.cell_type == "code" and "exercises.check_" in cell.source:
            cells.append(cell.source)
    return cells


def _shape(sources: list[str]) -> list[tuple[str, tuple[str, ...]]]:
    """Per exercise: the checker it calls and the names it defines (functions, classes)."""
    return [
        (
            re.search(r"exercises\.(check_\w+)", src).group(1),
            tuple(re.findall(r"^(?:async def|def|class) (\w+)", src, re.M)),
        )
        for src in sources
    ]


@pytest.mark.parametrize("notebook, solutions", PAIRS, ids=[nb.stem for nb, _ in PAIRS])
def test_every_exercise_has_its_solution(notebook, solutions):
    """The solutions notebook answers the notebook's exercises: same checkers, same names, same order."""
    assert _shape(_exercise_cells(solutions, after_try_it=False)) == _shape(
        _exercise_cells(notebook, after_try_it=True)
    )
    assert len(PAIRS) >= 7


# -- 09 rich messages --------------------------------------------------------------------


def _decode_reaction(raw):
    import emoji

    obj = json.loads(raw)  # JSONDecodeError is a ValueError
    if not isinstance(obj, dict) or obj.get("type") != "reaction":
        raise ValueError("not a reaction frame")
    message_id = obj.get("messageId", obj.get("message_id"))
    if not isinstance(message_id, int) or isinstance(message_id, bool) or message_id <= 0:
        raise ValueError("messageId must be a positive integer")
    value = obj.get("emoji")
    if not isinstance(value, str) or not emoji.is_emoji(value):
        raise ValueError("emoji must be exactly one emoji")
    return {"message_id": message_id, "emoji": value}


def test_reaction_right_answers(capsys):
    assert_passes(*run(exercises.check_reaction, _decode_reaction, capsys))

    # the unusual right answer: let the server's own decoder judge, and translate its answer
    from chatkit.protocol import ProtocolError, Reaction, decode

    def by_the_server(raw):
        try:
            frame = decode(raw)
        except ProtocolError as exc:
            raise ValueError(str(exc)) from None
        if not isinstance(frame, Reaction):
            raise ValueError("not a reaction")
        return {"message_id": frame.message_id, "emoji": frame.emoji}

    assert_passes(*run(exercises.check_reaction, by_the_server, capsys))


def test_reaction_wrong_answers(capsys):
    def counting_characters(raw):  # len() == 1: a skin tone is two code points
        obj = json.loads(raw)
        if obj.get("type") != "reaction" or len(obj.get("emoji", "")) != 1:
            raise ValueError("bad")
        return {"message_id": obj.get("messageId", obj.get("message_id")), "emoji": obj["emoji"]}

    assert_fails(*run(exercises.check_reaction, counting_characters, capsys), "emoji.is_emoji")

    def bool_is_an_int(raw):  # isinstance(True, int) is True in Python
        import emoji

        obj = json.loads(raw)
        message_id = obj.get("messageId", obj.get("message_id"))
        if obj.get("type") != "reaction" or not isinstance(message_id, int) or message_id <= 0:
            raise ValueError("bad frame")
        if not emoji.is_emoji(obj.get("emoji", "")):
            raise ValueError("bad emoji")
        return {"message_id": message_id, "emoji": obj["emoji"]}

    assert_fails(*run(exercises.check_reaction, bool_is_an_int, capsys), "bool subclasses int")

    def any_type(raw):  # a message frame is not a reaction
        return _decode_reaction(raw.replace('"type": "message"', '"type": "reaction"'))

    assert_fails(*run(exercises.check_reaction, any_type, capsys), 'obj.get("type") == "reaction"')

    def key_error(raw):  # forgets the snake_case spelling: KeyError is not a refusal
        obj = json.loads(raw)
        return _decode_reaction(json.dumps({**obj, "messageId": obj["messageId"]}))

    assert_fails(*run(exercises.check_reaction, key_error, capsys), "raised KeyError")
