"""Checkers for the notebooks' "Try it" exercises.

Each ``check_*`` function runs the learner's code on named cases and prints a report: ``✅`` when every
case passes; ``❌`` with the first failing case — what went in, what was expected, what came back, a hint
aimed at the usual mistake, and how many cases passed before it; ``⏳`` while the exercise is not started
(its body still raises ``NotImplementedError``), so the scaffold cells of the course run from start to
finish. A checker returns ``True``, ``False`` or ``None`` accordingly and never raises for a wrong answer:
the learner reads a report, not a traceback.

The words come from :mod:`chatkit.exercise_messages`, by language: ``set_language("ko")`` for the whole
session, or ``lang="ko"`` for one call. Checkers whose name starts with ``await`` in the notebooks are
async (they run the learner's async code, some against a real server on loopback).

The solutions in ``notebooks/solutions/`` pass every checker, and CI runs them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import html
import html.parser
import inspect
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import i18n
from .exercise_messages import CATALOGS

__all__ = [
    "ExerciseReport",
    "check_accept_key",
    "check_backend_choice",
    "check_backoff",
    "check_choose",
    "check_collect_reply",
    "check_cursor",
    "check_debouncer",
    "check_dedup",
    "check_escape",
    "check_frame_header",
    "check_mask",
    "check_message_frame",
    "check_rate",
    "check_reaction",
    "check_reconnect",
    "check_room_names",
    "check_room_server",
    "check_room_url",
    "check_sse_encoder",
    "check_sse_parser",
    "check_streamer",
    "check_take",
    "check_ttft",
    "check_typing_line",
    "get_language",
    "set_language",
]

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TIMEOUT = 10.0
"""Seconds a checker waits for an event from a server before it reports the case as failed."""

_language: str | None = None
"""Set by :func:`set_language`; ``None`` follows :func:`chatkit.i18n.get_language` (``CHATKIT_LANG``,
or the ``chatkit.toml`` of the Korean course's folder), so the Korean notebooks need no extra code."""


def set_language(lang: str | None) -> None:
    """Choose the language of every checker's report (``"en"``, ``"ko"``); ``None``: chatkit's setting."""
    global _language
    if lang is not None and lang not in CATALOGS:
        raise ValueError(f"no checker messages in {lang!r}; available: {', '.join(sorted(CATALOGS))}")
    _language = lang


def get_language() -> str:
    lang = _language or i18n.get_language()
    return lang if lang in CATALOGS else "en"


def _t(key: str, lang: str | None = None, **values: Any) -> str:
    """The sentence ``key`` in ``lang`` (falling back to English), filled with ``values``."""
    catalog = CATALOGS.get(lang or get_language(), {})
    text = catalog.get(key) or CATALOGS["en"].get(key, key)
    return text.format(**values) if values else text


# -- the report -------------------------------------------------------------------------


class _Pending(Exception):
    """The learner has not started: their code raised NotImplementedError."""


@dataclass
class _Failure(Exception):
    case: str
    expected: Any = None
    got: Any = None
    hint: str = ""
    given: Any = None
    got_text: str | None = None


@dataclass
class ExerciseReport:
    """What a checker found: ``passed`` cases of ``total``, and the first failure (if any), as text."""

    name: str
    total: int
    passed: int = 0
    ok: bool | None = None
    lines: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(self.lines)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 300 else text[:297] + "..."


class _Session:
    """Runs the cases of one checker and writes its report."""

    def __init__(self, name_key: str, total: int, lang: str | None) -> None:
        self.lang = lang
        self.report = ExerciseReport(_t(name_key, lang), total)

    def t(self, key: str, **values: Any) -> str:
        return _t(key, self.lang, **values)

    def passed(self) -> None:
        self.report.passed += 1

    def finish(self, failure: BaseException | None) -> bool | None:
        r = self.report
        if isinstance(failure, _Pending):
            r.ok = None
            r.lines = [self.t("pending", name=r.name)]
        elif isinstance(failure, _Failure):
            r.ok = False
            width = max(len(self.t(k)) for k in ("case", "input", "expected", "got", "hint"))
            row = lambda k, v: f"   {self.t(k) + ':':<{width + 1}} {v}"  # noqa: E731
            r.lines = [
                self.t("failed", name=r.name, index=r.passed + 1, total=r.total, passed=r.passed),
                row("case", failure.case),
            ]
            if failure.given is not None:
                r.lines.append(row("input", _show(failure.given)))
            r.lines.append(row("expected", _show(failure.expected)))
            r.lines.append(
                row("got", failure.got_text if failure.got_text is not None else _show(failure.got))
            )
            if failure.hint:
                r.lines.append(row("hint", failure.hint))
        else:
            r.ok = True
            r.lines = [self.t("passed", name=r.name, total=r.total)]
        print(r)
        return r.ok

    def call(
        self,
        fn: Callable,
        *args: Any,
        case: str,
        given: Any = None,
        expected: Any = None,
        kwargs: dict | None = None,
    ) -> Any:
        """Call the learner's plain function; its exceptions become a failure of ``case``."""
        if inspect.iscoroutinefunction(fn):
            raise _Failure(case, expected, given=given, got_text=self.t("not_async"))
        try:
            result = fn(*args, **(kwargs or {}))
        except NotImplementedError:
            raise _Pending() from None
        except Exception as exc:  # the learner's bug, reported as a case
            raise _Failure(
                case, expected, given=given, got_text=self.t("raised", error=f"{type(exc).__name__}: {exc}")
            ) from None
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):  # close it: no "never awaited" warning
                with contextlib.suppress(Exception):
                    result.close()
            raise _Failure(case, expected, given=given, got_text=self.t("not_async"))
        return result

    async def acall(self, fn: Callable, *args: Any, case: str, expected: Any = None) -> Any:
        """Await the learner's async function; its exceptions become a failure of ``case``."""
        if not (inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)):
            raise _Failure(case, expected, got_text=self.t("want_async"))
        try:
            return await fn(*args)
        except NotImplementedError:
            raise _Pending() from None
        except (TimeoutError, Exception) as exc:
            raise _Failure(
                case, expected, got_text=self.t("raised", error=f"{type(exc).__name__}: {exc}")
            ) from None

    def expect(
        self,
        got: Any,
        expected: Any,
        *,
        case: str,
        given: Any = None,
        hint: str = "",
        diagnose: Callable[[Any], str | None] | None = None,
    ) -> None:
        """Pass when ``got`` equals ``expected`` with the same types; else fail with a hint."""
        if _same(got, expected):
            self.passed()
            return
        specific = diagnose(got) if diagnose else None
        if not specific and _same_value_other_type(got, expected):
            specific = self.t(
                "type_differs", got_type=type(got).__name__, expected_type=type(expected).__name__
            )
        raise _Failure(case, expected, got, specific or hint, given)


def _same(got: Any, expected: Any) -> bool:
    """Equality that also compares types: True is not 1, b"x" is not "x", 2 is fine for 2.0."""
    if isinstance(expected, bool) or expected is None:
        return got is expected
    if isinstance(expected, float):
        return isinstance(got, (int, float)) and not isinstance(got, bool) and abs(got - expected) < 1e-9
    if isinstance(expected, dict):
        return (
            isinstance(got, dict)
            and got.keys() == expected.keys()
            and all(_same(got[k], expected[k]) for k in expected)
        )
    if isinstance(expected, (list, tuple)):
        return (
            isinstance(got, type(expected))
            and len(got) == len(expected)
            and all(_same(a, b) for a, b in zip(got, expected))
        )
    return type(got) is type(expected) and got == expected


def _same_value_other_type(got: Any, expected: Any) -> bool:
    """``got`` is ``expected`` in another type: ``1`` for ``True``, ``b"x"`` for ``"x"``, ``[1, 2]`` for ``b"\x01\x02"``."""
    if type(got) is type(expected):
        return False
    try:
        if isinstance(got, (bytes, bytearray)) and isinstance(expected, str):
            return got.decode("utf-8", "replace") == expected
        if isinstance(got, (list, tuple, bytearray)) and isinstance(expected, bytes):
            return bytes(got) == expected
        return bool(got == expected)
    except Exception:
        return False


def _run_cases(name_key: str, total: int, lang: str | None, body: Callable[[_Session], None]) -> bool | None:
    s = _Session(name_key, total, lang)
    try:
        body(s)
    except (_Pending, _Failure) as exc:
        return s.finish(exc)
    return s.finish(None)


async def _arun_cases(
    name_key: str, total: int, lang: str | None, body: Callable[[_Session], Any]
) -> bool | None:
    s = _Session(name_key, total, lang)
    try:
        await body(s)
    except (_Pending, _Failure) as exc:
        return s.finish(exc)
    return s.finish(None)


# -- 00 start here ---------------------------------------------------------------------


def check_room_url(room_url: Callable[[str, int, str], str], *, lang: str | None = None) -> bool | None:
    """``room_url(host, port, room)`` → ``"ws://HOST:PORT/ws/chat/ROOM/"``."""
    cases = [
        ("room_url.local", ("127.0.0.1", 8765, "demo"), "ws://127.0.0.1:8765/ws/chat/demo/"),
        ("room_url.other", ("example.org", 80, "a_b-1"), "ws://example.org:80/ws/chat/a_b-1/"),
    ]

    def diagnose(got: Any) -> str | None:
        if isinstance(got, str) and got.startswith("http"):
            return _t("room_url.hint_scheme", lang)
        if isinstance(got, str) and not got.endswith("/"):
            return _t("room_url.hint_slash", lang)
        return None

    def body(s: _Session) -> None:
        for key, args, want in cases:
            got = s.call(room_url, *args, case=s.t(key), given=args, expected=want)
            s.expect(got, want, case=s.t(key), given=args, diagnose=diagnose)

    return _run_cases("room_url", len(cases), lang, body)


def check_backend_choice(choose: Callable[[dict], str], *, lang: str | None = None) -> bool | None:
    """``choose(environ)`` → ``"openai"`` when OPENAI_API_KEY or OPENAI_BASE_URL is set (non-empty), else ``"offline"``."""
    cases = [
        ("backend.none", {}, "offline", ""),
        ("backend.key", {"OPENAI_API_KEY": "sk-x"}, "openai", ""),
        (
            "backend.base_url",
            {"OPENAI_BASE_URL": "http://127.0.0.1:11434/v1"},
            "openai",
            "backend.hint_base_url",
        ),
        ("backend.empty_key", {"OPENAI_API_KEY": ""}, "offline", "backend.hint_empty"),
        (
            "backend.both",
            {"OPENAI_API_KEY": "sk-x", "OPENAI_BASE_URL": "http://127.0.0.1:8000/v1"},
            "openai",
            "",
        ),
    ]

    def body(s: _Session) -> None:
        for key, env, want, hint in cases:
            got = s.call(choose, dict(env), case=s.t(key), given=env, expected=want)
            s.expect(got, want, case=s.t(key), given=env, hint=s.t(hint) if hint else "")

    return _run_cases("backend_choice", len(cases), lang, body)


def check_collect_reply(collect: Callable[[list[dict]], str], *, lang: str | None = None) -> bool | None:
    """``collect(frames)`` → the reply text: the ``chunk`` of every ``ai_chunk`` frame, in order."""
    mixed = [
        {"type": "message", "message": "hi", "id": 1},
        {"type": "ai_chunk", "chunk": "He", "id": 2},
        {"type": "typing", "user": "x", "is_typing": True},
        {"type": "ai_chunk", "chunk": "llo", "id": 2},
    ]
    complete = [
        {"type": "ai_chunk", "chunk": "Hel", "id": 2},
        {"type": "ai_chunk", "chunk": "lo", "id": 2},
        {"type": "ai_complete", "message": "Hello", "id": 2},
    ]
    cases = [
        ("collect.mixed", mixed, "Hello", "collect.hint_other"),
        ("collect.empty", [], "", ""),
        ("collect.complete", complete, "Hello", "collect.hint_complete"),
    ]

    def body(s: _Session) -> None:
        for key, frames, want, hint in cases:
            got = s.call(collect, [dict(f) for f in frames], case=s.t(key), given=frames, expected=want)
            s.expect(got, want, case=s.t(key), given=frames, hint=s.t(hint) if hint else "")

    return _run_cases("collect_reply", len(cases), lang, body)


# -- 01 the handshake ------------------------------------------------------------------


def _accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def check_accept_key(accept_key: Callable[[str], str], *, lang: str | None = None) -> bool | None:
    """``accept_key(key)`` → base64(SHA-1(key + GUID)) as a str."""
    rng = random.Random(6455)
    keys = ["dGhlIHNhbXBsZSBub25jZQ=="] + [base64.b64encode(rng.randbytes(16)).decode() for _ in range(3)]

    def body(s: _Session) -> None:
        for i, key in enumerate(keys):
            case = s.t("accept.rfc" if i == 0 else "accept.random")
            want = _accept(key)
            got = s.call(accept_key, key, case=case, given=key, expected=want)
            s.expect(got, want, case=case, given=key, hint=s.t("accept.hint"))

    return _run_cases("accept_key", len(keys), lang, body)


def check_frame_header(parse_header: Callable[[bytes], dict], *, lang: str | None = None) -> bool | None:
    """``parse_header(data)`` → ``{"fin": bool, "opcode": int, "masked": bool, "length": int}``."""
    h = lambda fin, op, masked, n: {"fin": fin, "opcode": op, "masked": masked, "length": n}  # noqa: E731
    cases = [
        ("header.short", bytes([0x81, 0x05]) + b"hello", h(True, 1, False, 5), "header.hint_bits"),
        ("header.masked", bytes([0x01, 0x85]) + b"\x00" * 9, h(False, 1, True, 5), "header.hint_bits"),
        ("header.max7", bytes([0x82, 125]) + b"\x00" * 125, h(True, 2, False, 125), "header.hint_bits"),
        (
            "header.len16",
            bytes([0x82, 126, 0x01, 0x00]) + b"\x00" * 256,
            h(True, 2, False, 256),
            "header.hint_extended",
        ),
        (
            "header.len64",
            bytes([0x81, 127]) + (70000).to_bytes(8, "big"),
            h(True, 1, False, 70000),
            "header.hint_extended",
        ),
        ("header.ping", bytes([0x89, 0x84]) + b"\x00" * 8, h(True, 9, True, 4), "header.hint_bits"),
    ]

    def diagnose(got: Any) -> str | None:
        if isinstance(got, dict) and any(not isinstance(got.get(k), bool) for k in ("fin", "masked")):
            return _t("header.hint_bool", lang)
        return None

    def body(s: _Session) -> None:
        for key, data, want, hint in cases:
            shown = data[:12]
            got = s.call(parse_header, data, case=s.t(key), given=shown, expected=want)
            s.expect(got, want, case=s.t(key), given=shown, hint=s.t(hint), diagnose=diagnose)

    return _run_cases("frame_header", len(cases), lang, body)


def check_mask(mask: Callable[[bytes, bytes], bytes], *, lang: str | None = None) -> bool | None:
    """``mask(payload, key)`` → payload XOR key (the key repeated); masking twice gives the payload back."""
    rng = random.Random(57)
    data, key = rng.randbytes(50), rng.randbytes(4)
    xor = lambda p, k: bytes(b ^ k[i % 4] for i, b in enumerate(p))  # noqa: E731

    def body(s: _Session) -> None:
        case = s.t("mask.rfc")
        got = s.call(mask, b"Hello", b"\x37\xfa\x21\x3d", case=case, given=(b"Hello", b"\x37\xfa\x21\x3d"))
        s.expect(
            got,
            bytes.fromhex("7f9f4d5158"),
            case=case,
            given=(b"Hello", b"\x37\xfa\x21\x3d"),
            hint=s.t("mask.hint"),
        )
        case = s.t("mask.odd")
        got = s.call(mask, b"chatkit", b"\x01\x02\x03\x04", case=case)
        s.expect(
            got,
            xor(b"chatkit", b"\x01\x02\x03\x04"),
            case=case,
            given=(b"chatkit", b"\x01\x02\x03\x04"),
            hint=s.t("mask.hint"),
        )
        case = s.t("mask.roundtrip")
        once = s.call(mask, data, key, case=case)
        got = s.call(mask, once, key, case=case)
        s.expect(got, data, case=case, given=(data, key), hint=s.t("mask.hint"))
        case = s.t("mask.empty")
        s.expect(s.call(mask, b"", key, case=case), b"", case=case, given=(b"", key), hint=s.t("mask.hint"))

    return _run_cases("mask", 4, lang, body)


# -- 02 a chat server --------------------------------------------------------------------


def check_message_frame(make_frame: Callable[..., str], *, lang: str | None = None) -> bool | None:
    """``make_frame(text, client_id=None)`` → the JSON text a client sends: ``{"message": text}``,
    plus ``"client_id"`` when one is given (a ``"type": "message"`` field is optional)."""
    cases = [
        ("frame.plain", ("hi",), {"message": "hi"}),
        ("frame.client_id", ("안녕", "c-1"), {"message": "안녕", "client_id": "c-1"}),
        ("frame.quotes", ('she said "hi" \\o/',), {"message": 'she said "hi" \\o/'}),
    ]

    def body(s: _Session) -> None:
        for key, args, want in cases:
            case = s.t(key)
            got = s.call(
                make_frame, *args, case=case, given=args, expected=json.dumps(want, ensure_ascii=False)
            )
            if not isinstance(got, str):
                raise _Failure(case, json.dumps(want, ensure_ascii=False), got, s.t("frame.hint_str"), args)
            try:
                frame = json.loads(got)
            except ValueError:
                raise _Failure(
                    case, json.dumps(want, ensure_ascii=False), got, s.t("frame.hint_json"), args
                ) from None
            if isinstance(frame, dict) and frame.get("type", "message") == "message":
                frame = {k: v for k, v in frame.items() if k != "type"}
            hint = (
                s.t("frame.hint_client_id")
                if isinstance(frame, dict) and "client_id" in {*frame, *want}
                else ""
            )
            s.expect(frame, want, case=case, given=args, hint=hint)

    return _run_cases("message_frame", len(cases), lang, body)


def check_room_names(is_valid_room: Callable[[str], bool], *, lang: str | None = None) -> bool | None:
    """``is_valid_room(name)`` → would the server accept this room name? The expected answers are the
    server's own (:func:`chatkit.protocol.validate_session_id`): after NFC, 1 to 64 characters and at
    most 192 UTF-8 bytes of Unicode letters, decimal digits, ``_`` and ``-`` (combining marks after a
    letter), no control, format or invisible characters."""
    from .protocol import ProtocolError, validate_session_id

    def server_accepts(name: str) -> bool:
        try:
            validate_session_id(name)
        except ProtocolError:
            return False
        return True

    jamo_han = "\u1112\u1161\u11ab"  # 한 typed as three conjoining jamo: one character after NFC
    cases = [  # (case key, name, hint key when the answer is wrong)
        ("rooms.case.ascii", "demo", "rooms.hint_letters"),
        ("rooms.case.ascii_marks", "A_b-9", "rooms.hint_letters"),
        ("rooms.case.hangul", "방", "rooms.hint_unicode"),
        ("rooms.case.korean_words", "한국어-방", "rooms.hint_unicode"),
        ("rooms.case.arabic_digit", "room٣", "rooms.hint_digit"),
        ("rooms.case.marks", "नमस्ते", "rooms.hint_mark"),
        ("rooms.case.max_chars", "x" * 64, "rooms.hint_length"),
        ("rooms.case.max_bytes", "한" * 64, "rooms.hint_bytes"),
        ("rooms.case.jamo", jamo_han * 30, "rooms.hint_nfc"),
        ("rooms.case.empty", "", "rooms.hint_length"),
        ("rooms.case.too_long", "x" * 65, "rooms.hint_length"),
        ("rooms.case.too_many_bytes", "𝐀" * 64, "rooms.hint_bytes"),
        ("rooms.case.space", "a b", "rooms.hint_letters"),
        ("rooms.case.slash", "a/b", "rooms.hint_letters"),
        ("rooms.case.dot", "a.b", "rooms.hint_letters"),
        ("rooms.case.newline", "demo\n", "rooms.hint_newline"),
        ("rooms.case.zero_width", "te\u200bst", "rooms.hint_invisible"),
        ("rooms.case.bidi", "ab\u202ecd", "rooms.hint_invisible"),
        ("rooms.case.filler", "a\u3164b", "rooms.hint_filler"),
        ("rooms.case.superscript", "x²", "rooms.hint_digit"),
        ("rooms.case.emoji", "chat🙂", "rooms.hint_letters"),
        ("rooms.case.mark_after_underscore", "_\u0301", "rooms.hint_mark"),
    ]

    def body(s: _Session) -> None:
        for key, name, hint in cases:
            want = server_accepts(name)
            case = s.t(key)
            got = s.call(is_valid_room, name, case=case, given=name, expected=want)
            if got is not True and got is not False and bool(got) == want:
                raise _Failure(case, want, got, s.t("rooms.hint_bool"), name)
            s.expect(got, want, case=case, given=name, hint=s.t(hint))

    return _run_cases("room_names", len(cases), lang, body)


async def check_room_server(handler: Callable[..., Any], *, lang: str | None = None) -> bool | None:
    """``handler(websocket)`` for ``websockets.asyncio.server.serve``: the room is the request path;
    every text message is sent to every connection in the same room (sender included); a client
    that leaves is forgotten. Runs against a real server on loopback. ``await`` it."""
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import serve

    async def body(s: _Session) -> None:
        if not inspect.iscoroutinefunction(handler):
            raise _Failure(s.t("server.connects"), "async def handler(websocket)", got_text=s.t("want_async"))
        errors: list[BaseException] = []

        async def guarded(ws: Any) -> None:
            try:
                await handler(ws)
            except NotImplementedError:
                errors.append(NotImplementedError())
                await ws.close(1011)
            except Exception as exc:
                errors.append(exc)
                raise

        async def recv(ws: Any, case: str, expected: str, hint: str) -> str:
            try:
                got = await asyncio.wait_for(ws.recv(), TIMEOUT)
            except TimeoutError:
                raise _Failure(
                    case, expected, got_text=s.t("server.timeout", seconds=TIMEOUT), hint=hint
                ) from None
            except Exception as exc:
                if errors and isinstance(errors[0], NotImplementedError):
                    raise _Pending() from None
                error = errors[0] if errors else exc
                raise _Failure(
                    case,
                    expected,
                    hint=hint,
                    got_text=s.t("raised", error=f"{type(error).__name__}: {error}"),
                ) from None
            if got != expected:
                raise _Failure(case, expected, got, hint)
            return got

        async def send(ws: Any, text: str, case: str, hint: str) -> None:
            try:
                await ws.send(text)
            except Exception as exc:
                if errors and isinstance(errors[0], NotImplementedError):
                    raise _Pending() from None
                error = errors[0] if errors else exc
                raise _Failure(
                    case, text, hint=hint, got_text=s.t("raised", error=f"{type(error).__name__}: {error}")
                ) from None

        async with serve(guarded, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            url = f"ws://127.0.0.1:{port}"
            async with contextlib.AsyncExitStack() as stack:
                case = s.t("server.connects")
                try:
                    ann = await stack.enter_async_context(connect(url + "/lobby", proxy=None))
                    bob = await stack.enter_async_context(connect(url + "/lobby", proxy=None))
                    cat = await stack.enter_async_context(connect(url + "/attic", proxy=None))
                except Exception as exc:
                    raise _Failure(
                        case, "101 Switching Protocols", got_text=f"{type(exc).__name__}: {exc}"
                    ) from None
                s.passed()

                case = s.t("server.broadcast")
                await send(ann, "hello lobby", case, s.t("server.hint_broadcast"))
                for ws in (bob, ann):
                    await recv(ws, case, "hello lobby", s.t("server.hint_broadcast"))
                s.passed()

                case = s.t("server.rooms")
                await send(
                    cat, "hello attic", case, s.t("server.hint_rooms")
                )  # cat's first frame must be its own, not the lobby's
                await recv(cat, case, "hello attic", s.t("server.hint_rooms"))
                s.passed()

                case = s.t("server.leave")
                await bob.close()
                for text in ("still here?", "and again?"):
                    await send(ann, text, case, s.t("server.hint_leave"))
                    await recv(ann, case, text, s.t("server.hint_leave"))
                s.passed()

    return await _arun_cases("room_server", 4, lang, body)


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


def check_reaction(decode_reaction: Callable[[str], dict], *, lang: str | None = None) -> bool | None:
    """``decode_reaction(raw)`` → ``{"message_id": int, "emoji": str}`` for a valid ``reaction`` frame,
    ``ValueError`` otherwise — the server's rules (:func:`chatkit.protocol.decode`): ``type`` is
    ``"reaction"``, the id (``messageId`` or ``message_id``) a positive integer (not ``true``, not
    ``2.5``), ``emoji`` exactly one emoji (skin tones, flags and ZWJ sequences included)."""
    good = [
        (
            "reaction.camel",
            '{"type": "reaction", "messageId": 4, "emoji": "👍"}',
            {"message_id": 4, "emoji": "👍"},
            "reaction.hint_valid",
        ),
        (
            "reaction.snake",
            '{"type": "reaction", "message_id": 9, "emoji": "🎉"}',
            {"message_id": 9, "emoji": "🎉"},
            "reaction.hint_valid",
        ),
        (
            "reaction.skin_tone",
            '{"type": "reaction", "messageId": 2, "emoji": "👍🏽"}',
            {"message_id": 2, "emoji": "👍🏽"},
            "reaction.hint_emoji",
        ),
        (
            "reaction.zwj",
            '{"type": "reaction", "messageId": 3, "emoji": "👨‍👩‍👧"}',
            {"message_id": 3, "emoji": "👨‍👩‍👧"},
            "reaction.hint_emoji",
        ),
        (
            "reaction.flag",
            '{"type": "reaction", "messageId": 5, "emoji": "🇰🇷"}',
            {"message_id": 5, "emoji": "🇰🇷"},
            "reaction.hint_emoji",
        ),
    ]
    bad = [
        ("reaction.not_json", "{", "reaction.hint_json"),
        ("reaction.message_type", '{"type": "message", "messageId": 4, "emoji": "👍"}', "reaction.hint_type"),
        ("reaction.no_id", '{"type": "reaction", "emoji": "👍"}', "reaction.hint_id"),
        ("reaction.bool_id", '{"type": "reaction", "messageId": true, "emoji": "👍"}', "reaction.hint_bool"),
        ("reaction.float_id", '{"type": "reaction", "messageId": 2.5, "emoji": "👍"}', "reaction.hint_float"),
        ("reaction.negative_id", '{"type": "reaction", "messageId": -1, "emoji": "👍"}', "reaction.hint_id"),
        ("reaction.zero_id", '{"type": "reaction", "messageId": 0, "emoji": "👍"}', "reaction.hint_id"),
        ("reaction.empty_emoji", '{"type": "reaction", "messageId": 1, "emoji": ""}', "reaction.hint_emoji"),
        ("reaction.letter", '{"type": "reaction", "messageId": 1, "emoji": "x"}', "reaction.hint_emoji"),
        (
            "reaction.two_emoji",
            '{"type": "reaction", "messageId": 1, "emoji": "👍👍"}',
            "reaction.hint_emoji",
        ),
    ]
    refused = "ValueError"

    def body(s: _Session) -> None:
        for key, raw, want, hint in good:
            try:
                got = s.call(decode_reaction, raw, case=s.t(key), given=raw, expected=want)
            except _Failure as failure:  # a valid frame refused: say which rule was too strict
                failure.hint = failure.hint or s.t(hint)
                raise
            s.expect(got, want, case=s.t(key), given=raw, hint=s.t(hint))
        for key, raw, hint in bad:
            case = s.t(key)
            try:
                got = decode_reaction(raw)
            except NotImplementedError:
                raise _Pending() from None
            except ValueError:
                s.passed()
                continue
            except Exception as exc:  # another exception: the server would crash, not refuse
                raise _Failure(
                    case,
                    refused,
                    given=raw,
                    hint=s.t("reaction.hint_valueerror"),
                    got_text=s.t("raised", error=f"{type(exc).__name__}: {exc}"),
                ) from None
            if inspect.isawaitable(got):
                if inspect.iscoroutine(got):  # close it: no "never awaited" warning
                    with contextlib.suppress(Exception):
                        got.close()
                raise _Failure(case, refused, given=raw, got_text=s.t("not_async"))
            raise _Failure(case, refused, got, s.t(hint), raw)

    return _run_cases("reaction", len(good) + len(bad), lang, body)


# -- 03 streaming -----------------------------------------------------------------------


def check_ttft(ttft: Callable[[float, list[float]], float | None], *, lang: str | None = None) -> bool | None:
    """``ttft(sent_at, chunk_times)`` → seconds from sending to the first chunk; ``None`` without chunks."""
    cases = [
        ("ttft.typical", (10.0, [10.3, 10.35, 10.4]), 0.3, "ttft.hint_first"),
        ("ttft.one", (0.0, [2.5]), 2.5, "ttft.hint_first"),
        ("ttft.none", (5.0, []), None, "ttft.hint_none"),
    ]

    def body(s: _Session) -> None:
        for key, args, want, hint in cases:
            got = s.call(ttft, args[0], list(args[1]), case=s.t(key), given=args, expected=want)
            s.expect(got, want, case=s.t(key), given=args, hint=s.t(hint))

    return _run_cases("ttft", len(cases), lang, body)


def check_rate(rate: Callable[[list[float]], float], *, lang: str | None = None) -> bool | None:
    """``rate(chunk_times)`` → chunks per second after the first: ``(n - 1) / (last - first)``;
    ``0.0`` for fewer than 2 chunks or no time between the first and the last."""
    cases = [
        ("rate.typical", [1.0, 1.5, 2.0, 2.5, 3.0], 2.0, "rate.hint_intervals"),
        ("rate.one", [1.0], 0.0, "rate.hint_zero"),
        ("rate.empty", [], 0.0, "rate.hint_zero"),
        ("rate.same_time", [2.0, 2.0], 0.0, "rate.hint_zero"),
    ]

    def body(s: _Session) -> None:
        for key, times, want, hint in cases:
            got = s.call(rate, list(times), case=s.t(key), given=times, expected=want)
            s.expect(got, want, case=s.t(key), given=times, hint=s.t(hint))

    return _run_cases("rate", len(cases), lang, body)


class _CountingStream:
    """An async iterator that counts the pieces pulled from it and whether it was closed."""

    def __init__(self, size: int) -> None:
        self.size, self.pulled, self.closed = size, 0, False

    def __aiter__(self) -> _CountingStream:
        return self

    async def __anext__(self) -> str:
        if self.closed or self.pulled >= self.size:
            raise StopAsyncIteration
        self.pulled += 1
        await asyncio.sleep(0)
        return f"p{self.pulled - 1}"

    async def aclose(self) -> None:
        self.closed = True


async def check_take(take: Callable[[Any, int], Any], *, lang: str | None = None) -> bool | None:
    """``await take(stream, n)`` → a list of the first ``n`` pieces of an async iterator; it pulls no more
    than ``n`` pieces and closes the stream. An async checker: ``await check_take(take)``."""
    cases = [("take.three", 100, 3), ("take.zero", 100, 0), ("take.short", 2, 5)]

    async def body(s: _Session) -> None:
        for key, size, n in cases:
            stream = _CountingStream(size)
            want = [f"p{i}" for i in range(min(size, n))]
            case = s.t(key)
            got = await s.acall(take, stream, n, case=case, expected=want)
            if not _same(got, want):
                raise _Failure(case, want, got, "", f"a stream of {size} pieces, n={n}")
            if stream.pulled > len(want):
                raise _Failure(
                    case,
                    f"{len(want)} pieces pulled",
                    got_text=f"{stream.pulled} pieces pulled",
                    hint=s.t("take.hint_pulled", pulled=stream.pulled, n=n),
                    given=f"a stream of {size} pieces, n={n}",
                )
            if not stream.closed:
                raise _Failure(
                    case,
                    "stream.aclose() called",
                    got_text="the stream was left open",
                    hint=s.t("take.hint_close"),
                    given=f"a stream of {size} pieces, n={n}",
                )
            s.passed()

    return await _arun_cases("take", len(cases), lang, body)


async def check_streamer(stream: Callable[[list[dict]], Any], *, lang: str | None = None) -> bool | None:
    """``async def stream(messages)`` yields the reply to the conversation ``messages`` (OpenAI shape,
    system prompt first, the question last): here, the question upper-cased, in several pieces.
    Plugged into ``ChatServer(streamer=…)`` and asked over a real WebSocket. ``await`` it."""
    from .client import ChatClient
    from .server import ChatServer

    class LearnerStreamer:
        name = "learner"

        def stream(self, messages: list[dict]) -> Any:
            return stream(messages)

    question = "stream me a reply"

    async def body(s: _Session) -> None:
        if not inspect.isasyncgenfunction(stream):
            probe = None
            with contextlib.suppress(Exception):
                probe = stream([{"role": "user", "content": "x"}])
            if inspect.iscoroutine(probe):
                probe.close()
            if not hasattr(probe, "__aiter__"):
                raise _Failure(
                    s.t("streamer.pieces"),
                    "an async generator",
                    got_text=type(probe).__name__,
                    hint=s.t("streamer.hint_async_gen"),
                )
        try:
            pieces = [
                p
                async for p in stream(
                    [{"role": "system", "content": "be brief"}, {"role": "user", "content": "ping"}]
                )
            ]
        except NotImplementedError:
            raise _Pending() from None
        except Exception as exc:
            raise _Failure(
                s.t("streamer.pieces"),
                "PING",
                got_text=s.t("raised", error=f"{type(exc).__name__}: {exc}"),
                hint=s.t("streamer.hint_last"),
            ) from None
        async with ChatServer(port=0, http_port=-1, db=":memory:", streamer=LearnerStreamer()) as server:
            async with ChatClient(server.ws_url("build-it"), user="checker") as chat:
                await chat.send(question)
                chunks: list[str] = []
                try:
                    async with asyncio.timeout(TIMEOUT):
                        while True:
                            event = await chat.next_event()
                            if event["type"] == "ai_chunk":
                                chunks.append(event["chunk"])
                            elif event["type"] == "error":
                                raise _Failure(
                                    s.t("streamer.text"),
                                    question.upper(),
                                    got_text=f"error frame: {event.get('code')}: {event.get('message')}",
                                    hint=s.t("streamer.hint_last"),
                                )
                            elif event["type"] == "ai_complete":
                                break
                except TimeoutError:
                    raise _Failure(
                        s.t("streamer.text"),
                        question.upper(),
                        got_text=s.t("server.timeout", seconds=TIMEOUT),
                    ) from None
        if len(chunks) < 2:
            raise _Failure(
                s.t("streamer.pieces"), "≥ 2 ai_chunk frames", got=chunks, hint=s.t("streamer.hint_pieces")
            )
        s.passed()
        s.expect(
            event["message"],
            question.upper(),
            case=s.t("streamer.text"),
            given=question,
            hint=s.t("streamer.hint_last"),
        )
        del pieces

    return await _arun_cases("streamer", 2, lang, body)


# -- 04 chat panes ------------------------------------------------------------------------


def check_debouncer(Debouncer: type, *, lang: str | None = None) -> bool | None:
    """``Debouncer(interval, idle)``: ``.keystroke(now)`` → typing values to send now (``[True]`` or ``[]``);
    ``.poll(now)`` → ``[False]`` once, when ``idle`` seconds passed since the last keystroke, else ``[]``."""
    steps = [
        ("debounce.poll_before", "poll", 0.0, [], "debounce.hint_idle"),
        ("debounce.first", "keystroke", 0.1, [True], "debounce.hint_interval"),
        ("debounce.soon", "keystroke", 0.3, [], "debounce.hint_interval"),
        ("debounce.refresh", "keystroke", 0.7, [True], "debounce.hint_interval"),
        ("debounce.poll_early", "poll", 2.1, [], "debounce.hint_idle"),
        ("debounce.poll_idle", "poll", 3.8, [False], "debounce.hint_idle"),
        ("debounce.poll_again", "poll", 5.0, [], "debounce.hint_idle"),
        ("debounce.again", "keystroke", 6.0, [True], "debounce.hint_interval"),
    ]

    def body(s: _Session) -> None:
        d = s.call(Debouncer, 0.5, 3.0, case="Debouncer(0.5, 3.0)")
        for key, method, now, want, hint in steps:
            case = f"{s.t(key)}: {s.t('debounce.step', call=method, now=now)}"
            got = s.call(getattr(d, method), now, case=case, given=now, expected=want)
            s.expect(got, want, case=case, given=f"{method}({now})", hint=s.t(hint))

    return _run_cases("debouncer", len(steps), lang, body)


class _Markup(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.events: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        self.events.append(("start", tag))

    def handle_endtag(self, tag: str) -> None:
        self.events.append(("end", tag))

    def handle_data(self, data: str) -> None:
        if self.events and self.events[-1][0] == "data":
            self.events[-1] = ("data", self.events[-1][1] + data)
        else:
            self.events.append(("data", data))


def _markup(text: str) -> list[tuple[str, str]]:
    parser = _Markup()
    parser.feed(text)
    parser.close()
    return parser.events


def check_escape(render: Callable[[str, str], str], *, lang: str | None = None) -> bool | None:
    """``render(user, text)`` → ``<b>user</b>: text`` where a browser shows ``user`` and ``text`` as written
    (both escaped: no tag of theirs survives)."""
    cases = [
        ("escape.text", ("ann", "<img src=x onerror=alert(1)>"), "escape.hint_text"),
        ("escape.user", ("<i>eve</i>", "hi"), "escape.hint_user"),
        ("escape.both", ('"tom" & jerry', "1 < 2 & 'yes'"), "escape.hint_text"),
    ]

    def body(s: _Session) -> None:
        for key, (user, text), hint in cases:
            want = f"<b>{html.escape(user)}</b>: {html.escape(text)}"
            case = s.t(key)
            got = s.call(render, user, text, case=case, given=(user, text), expected=want)
            if not isinstance(got, str):
                raise _Failure(
                    case,
                    want,
                    got,
                    s.t("type_differs", got_type=type(got).__name__, expected_type="str"),
                    (user, text),
                )
            markup = _markup(got)
            if markup != [("start", "b"), ("data", user), ("end", "b"), ("data", f": {text}")]:
                shape = bool(markup) and markup[0] == ("start", "b") and ("end", "b") in markup
                raise _Failure(
                    case, want, got, s.t(hint) if shape else s.t("escape.hint_shape"), (user, text)
                )
            s.passed()

    return _run_cases("escape", len(cases), lang, body)


def check_typing_line(typing_line: Callable[[list[str]], str], *, lang: str | None = None) -> bool | None:
    """``typing_line(users)`` → ``""`` / ``"ann is typing…"`` / ``"ann and bob are typing…"`` /
    ``"3 people are typing…"`` (``…`` is one character, U+2026)."""
    cases = [
        ("typing.none", [], ""),
        ("typing.one", ["ann"], "ann is typing…"),
        ("typing.two", ["ann", "bob"], "ann and bob are typing…"),
        ("typing.three", ["a", "b", "c"], "3 people are typing…"),
        ("typing.many", ["a", "b", "c", "d", "e"], "5 people are typing…"),
    ]

    def diagnose(got: Any) -> str | None:
        if isinstance(got, str) and "..." in got:
            return _t("typing.hint_ellipsis", lang)
        return None

    def body(s: _Session) -> None:
        for key, users, want in cases:
            got = s.call(typing_line, list(users), case=s.t(key), given=users, expected=want)
            s.expect(
                got,
                want,
                case=s.t(key),
                given=users,
                hint=s.t("typing.hint_many") if len(users) > 2 else "",
                diagnose=diagnose,
            )

    return _run_cases("typing_line", len(cases), lang, body)


# -- 05 reconnection ------------------------------------------------------------------------


def check_backoff(delay: Callable[[int, random.Random], float], *, lang: str | None = None) -> bool | None:
    """``delay(attempt, rng)`` → seconds before attempt ``attempt`` (1, 2, …): ``base = min(30, 2 ** (attempt - 1))``,
    times a jitter factor drawn with ``rng.uniform(0.5, 1.0)`` (so within ``[base / 2, base]``)."""
    schedule = [(1, 1), (2, 2), (3, 4), (5, 16), (6, 30), (20, 30)]

    def body(s: _Session) -> None:
        rng = random.Random(0)
        for attempt, base in schedule:
            case = s.t("backoff.schedule", attempt=attempt, low=base / 2, high=base)
            values = [s.call(delay, attempt, rng, case=case, given=attempt) for _ in range(200)]
            bad = next(
                (v for v in values if not (isinstance(v, (int, float)) and base / 2 <= v <= base)), None
            )
            if bad is not None:
                raise _Failure(case, f"{base / 2} ≤ delay ≤ {base}", bad, s.t("backoff.hint_range"), attempt)
            if max(values) - min(values) <= base / 10:
                raise _Failure(
                    s.t("backoff.spread", attempt=attempt),
                    f"delays spread over [{base / 2}, {base}]",
                    got_text=f"min {min(values):.3f}, max {max(values):.3f}",
                    hint=s.t("backoff.hint_jitter"),
                    given=attempt,
                )
            s.passed()
        case = s.t("backoff.rng")
        first = [s.call(delay, 3, random.Random(42), case=case) for _ in range(3)]
        again = [s.call(delay, 3, random.Random(42), case=case) for _ in range(3)]
        if first != again:
            raise _Failure(case, first, again, s.t("backoff.hint_rng"), "random.Random(42)")
        s.passed()

    return _run_cases("backoff", len(schedule) + 1, lang, body)


def check_dedup(dedup: Callable[[list[dict]], list[dict]], *, lang: str | None = None) -> bool | None:
    """``dedup(frames)`` → the frames without repeated ``id`` (the first one wins), order kept;
    frames without an ``id`` always pass."""
    Frames = list[dict[str, Any]]
    mixed: Frames = [
        {"type": "message", "id": 1},
        {"type": "message", "id": 2},
        {"type": "message", "id": 1},
        {"type": "typing"},
        {"type": "message", "id": 3},
        {"type": "message", "id": 2},
        {"type": "user_join", "username": "bob"},
    ]
    zero: Frames = [
        {"type": "message", "id": 0, "message": "first"},
        {"type": "message", "id": 0, "message": "again"},
    ]
    cases: list[tuple[str, Frames, Frames]] = [
        ("dedup.mixed", mixed, [mixed[i] for i in (0, 1, 3, 4, 6)]),
        ("dedup.zero", zero, zero[:1]),
    ]

    def body(s: _Session) -> None:
        for key, frames, want in cases:
            case = s.t(key)
            got: Any = s.call(dedup, [dict(f) for f in frames], case=case, given=frames, expected=want)
            hint = (
                s.t("dedup.hint_zero")
                if key == "dedup.zero"
                else (
                    s.t("dedup.hint_no_id")
                    if isinstance(got, list) and len(got) < len(want)
                    else s.t("dedup.hint_first")
                )
            )
            s.expect(got, want, case=case, given=frames, hint=hint)

    return _run_cases("dedup", len(cases), lang, body)


def check_cursor(cursor: Callable[[int, set[int]], int], *, lang: str | None = None) -> bool | None:
    """``cursor(last_seen, streaming)`` → the ``?after=`` id to reconnect with: ``last_seen`` when no reply is
    streaming, else one less than the oldest reply still streaming (so it is replayed whole)."""
    cases = [
        ("cursor.idle", (10, set()), 10, "cursor.hint_before"),
        ("cursor.one", (10, {8}), 7, "cursor.hint_before"),
        ("cursor.two", (12, {9, 11}), 8, "cursor.hint_oldest"),
    ]

    def body(s: _Session) -> None:
        for key, (last, streaming), want, hint in cases:
            got = s.call(cursor, last, set(streaming), case=s.t(key), given=(last, streaming), expected=want)
            s.expect(got, want, case=s.t(key), given=(last, streaming), hint=s.t(hint))

    return _run_cases("cursor", len(cases), lang, body)


async def check_reconnect(follow: Callable[..., Any], *, lang: str | None = None) -> bool | None:
    """``async def follow(url, on_message)`` connects to the room ``url`` with bare ``websockets``, calls
    ``on_message(frame)`` for every ``message`` frame, and whenever the connection ends (an error, or the
    server closing it) waits a little and reconnects to ``url + "?after=<last id seen>"``, never delivering an
    id twice. It runs until cancelled. The checker runs it against a real server that it stops, writes to
    while it is down, and restarts. ``await`` it."""
    import tempfile
    from pathlib import Path

    from .client import ChatClient
    from .server import ChatServer
    from .store import Store

    async def body(s: _Session) -> None:
        if not inspect.iscoroutinefunction(follow):
            raise _Failure(
                s.t("reconnect.first"), "async def follow(url, on_message)", got_text=s.t("want_async")
            )
        got: list[dict] = []
        changed = asyncio.Event()

        def on_message(frame: dict) -> None:
            got.append(frame)
            changed.set()

        def said() -> list[Any]:
            return [f.get("message") for f in got if isinstance(f, dict) and f.get("is_user", True)]

        async def wait_for(want: list[str], case: str, hint: str) -> None:
            assert task is not None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TIMEOUT):
                    while len(said()) < len(want) and not task.done():
                        changed.clear()
                        await changed.wait()
            if task.done() and len(said()) < len(want):
                exc = None if task.cancelled() else task.exception()
                if isinstance(exc, NotImplementedError):
                    raise _Pending()
                error = f"{type(exc).__name__}: {exc}" if exc else "follow() returned"
                raise _Failure(
                    case, want, got_text=s.t("raised", error=error), hint=s.t("reconnect.hint_retry")
                )
            ids = [f.get("id") for f in got if isinstance(f, dict)]
            if len(ids) != len(set(ids)):
                raise _Failure(case, want, said(), s.t("reconnect.hint_dup"))
            if said()[: len(want)] != want:
                raise _Failure(case, want, said(), hint)

        with tempfile.TemporaryDirectory() as tmp:
            db = str(Path(tmp) / "chat.db")
            opts: dict[str, Any] = dict(http_port=-1, db=db, llm="echo")
            server = await ChatServer(port=0, **opts).start()
            port, url = server.port, server.ws_url("follow")
            task: asyncio.Task | None = None
            try:
                case = s.t("reconnect.first")
                async with ChatClient(url, user="bob", presence="each") as bob:  # waits for a user_join
                    task = asyncio.get_running_loop().create_task(follow(url, on_message))
                    task.add_done_callback(lambda _t: changed.set())
                    joined = asyncio.ensure_future(bob.next_event("user_join"))  # the learner is in the room
                    await asyncio.wait([joined, task], timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
                    if not joined.done():
                        joined.cancel()
                        exc = task.exception() if task.done() and not task.cancelled() else None
                        if isinstance(exc, NotImplementedError):
                            raise _Pending()
                        got_msg = (
                            s.t("raised", error=f"{type(exc).__name__}: {exc}")
                            if exc
                            else s.t("server.timeout", seconds=TIMEOUT)
                        )
                        raise _Failure(
                            case,
                            "a connection to the room",
                            got_text=got_msg,
                            hint=s.t("reconnect.hint_retry"),
                        )
                    await bob.send("one")
                    await bob.send("two")
                await wait_for(["one", "two"], case, s.t("reconnect.hint_retry"))
                s.passed()

                case = s.t("reconnect.resume")
                await server.stop()
                store = await Store.open(db)
                try:
                    await store.append("follow", "bob", "said while you were away")
                    await store.append("follow", "bob", "and this too")
                finally:
                    await store.close()
                server = await ChatServer(port=port, **opts).start()
                want = ["one", "two", "said while you were away", "and this too"]
                await wait_for(want, case, s.t("reconnect.hint_after"))
                s.passed()

                case = s.t("reconnect.once")
                ids = [f.get("id") for f in got if isinstance(f, dict)]
                if len(ids) != len(set(ids)) or said() != want:
                    raise _Failure(case, want, said(), s.t("reconnect.hint_dup"))
                s.passed()
            finally:
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
                await server.stop()

    return await _arun_cases("reconnect", 3, lang, body)


# -- 06 WebSocket vs SSE ------------------------------------------------------------------------


def _parse_sse(text: str) -> list[dict]:
    """The WHATWG event-stream interpretation of ``text`` (the reference for the SSE checkers)."""
    events: list[dict] = []
    data: list[str] = []
    kind, last_id, seen_data = "", None, False
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")[:-1]:
        if line == "":
            if seen_data:
                events.append({"event": kind or "message", "data": "\n".join(data), "id": last_id})
            data, kind, seen_data = [], "", False
            continue
        if line.startswith(":"):
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
            seen_data = True
        elif name == "event":
            kind = value
        elif name == "id" and "\0" not in value:
            last_id = value
    return events


def check_sse_encoder(encode: Callable[..., str], *, lang: str | None = None) -> bool | None:
    """``encode(data, event=None, id=None)`` → the text of one SSE event: ``event:`` and ``id:`` lines when
    given (any order: the browser reads them the same), one ``data:`` line per line of ``data``, and one blank
    line at the end. Checked by parsing the output as a browser would."""
    cases = [
        ("encoder.plain", ("hi",), {}, [{"event": "message", "data": "hi", "id": None}]),
        (
            "encoder.full",
            ("a\nb",),
            {"event": "message", "id": 3},
            [{"event": "message", "data": "a\nb", "id": "3"}],
        ),
        (
            "encoder.blank_line",
            ("x\n\ny",),
            {"event": "ai_chunk", "id": 7},
            [{"event": "ai_chunk", "data": "x\n\ny", "id": "7"}],
        ),
    ]

    def body(s: _Session) -> None:
        for key, args, kwargs, want in cases:
            case = s.t(key)
            given = (
                f"encode({', '.join([repr(a) for a in args] + [f'{k}={v!r}' for k, v in kwargs.items()])})"
            )
            got = s.call(encode, *args, case=case, given=given, expected=want, kwargs=kwargs)
            lines = got.replace("\r\n", "\n").replace("\r", "\n") if isinstance(got, str) else ""
            if not lines.endswith("\n\n") or lines.endswith("\n\n\n"):
                raise _Failure(case, want, got, s.t("encoder.hint_end"), given)
            parsed = _parse_sse(got)
            if parsed != want:
                hint = s.t("encoder.hint_none") if "None" in got else s.t("encoder.hint_lines")
                raise _Failure(
                    case,
                    want,
                    got_text=f"{got!r} — {s.t('encoder.parsed_as')} {parsed!r}",
                    hint=hint,
                    given=given,
                )
            s.passed()

    return _run_cases("sse_encoder", len(cases), lang, body)


def _choose_rule(needs: dict) -> str:
    if needs["through_strict_proxies"]:
        return "sse"
    if needs["client_sends_often"] or needs["binary"]:
        return "websocket"
    return "sse"


def check_choose(choose: Callable[[dict], str], *, lang: str | None = None) -> bool | None:
    """``choose(needs)`` → ``"websocket"`` or ``"sse"``. ``needs`` has three booleans: ``client_sends_often``,
    ``binary`` and ``through_strict_proxies``. Strict proxies (no Upgrade) → ``"sse"``; otherwise a client that
    sends often or binary data → ``"websocket"``; otherwise ``"sse"``. Every combination is checked."""
    combos = [
        {"client_sends_often": a, "binary": b, "through_strict_proxies": c}
        for c in (False, True)
        for a in (True, False)
        for b in (False, True)
    ]

    def body(s: _Session) -> None:
        for needs in combos:
            want = _choose_rule(needs)
            case = s.t("choose.case", needs=", ".join(k for k, v in needs.items() if v) or "—")
            got = s.call(choose, dict(needs), case=case, given=needs, expected=want)
            hint = (
                s.t("choose.hint_proxies")
                if needs["through_strict_proxies"]
                else (s.t("choose.hint_twoway") if want == "websocket" else s.t("choose.hint_default"))
            )
            s.expect(got, want, case=case, given=needs, hint=hint)

    return _run_cases("choose", len(combos), lang, body)


def check_sse_parser(parse: Callable[[str], list[dict]], *, lang: str | None = None) -> bool | None:
    """``parse(text)`` → the events of an event stream as ``{"event", "data", "id"}`` dicts by the WHATWG rules:
    ``event`` defaults to ``"message"`` and resets after each event; ``id`` is ``None`` until an ``id:`` line and
    then carries over; blocks without ``data:`` dispatch nothing; comments (``:``) and unknown fields are
    ignored; lines end in ``\\n``, ``\\r\\n`` or ``\\r``; one space after the colon is removed."""
    cases = [
        (
            "parser.basic",
            "retry: 3000\n\n: heartbeat\n\nevent: message\nid: 4\ndata: a\ndata: b\n\ndata: plain\n\n",
            "parser.hint_id",
        ),
        ("parser.crlf", "data:no-space\r\n\r\n", "parser.hint_lines"),
        ("parser.cr", "data: one\r\rdata: two\r\r", "parser.hint_lines"),
        ("parser.event_reset", "event: ai_chunk\ndata: x\n\ndata: y\n\n", "parser.hint_event"),
        ("parser.space", "data:  two spaces\n\n", "parser.hint_space"),
        ("parser.no_colon", "data\n\n", "parser.hint_dispatch"),
        ("parser.unknown", "foo: bar\ndata: ok\n\n", "parser.hint_dispatch"),
        ("parser.unfinished", "data: complete\n\ndata: cut off", "parser.hint_dispatch"),
    ]

    def body(s: _Session) -> None:
        for key, text, hint in cases:
            want = _parse_sse(text)
            got = s.call(parse, text, case=s.t(key), given=text, expected=want)
            s.expect(got, want, case=s.t(key), given=text, hint=s.t(hint))

    return _run_cases("sse_parser", len(cases), lang, body)
