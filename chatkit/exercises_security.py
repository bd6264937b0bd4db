"""Checkers for notebook 08 · Security (kept apart from :mod:`chatkit.exercises`, same reports).

- :func:`check_origin_allowed` — the origin policy: who may use the server from a browser;
- :func:`check_valid_name` — user names: NFC, no invisible characters, reserved names refused;
- :func:`check_bucket` — a token bucket keyed on who you are, not on what you call yourself.

Each runs the learner's function on named cases and prints ✅, ❌ with the first failing case
(input, expected, got, hint), or ⏳ while the body still raises ``NotImplementedError``. The sentences
are in the shared catalog (:mod:`chatkit.exercise_messages`) under ``sec.*`` keys.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .exercises import _run_cases, _Session

__all__ = ["check_origin_allowed", "check_valid_name", "check_bucket"]


def check_origin_allowed(
    is_allowed: Callable[[str | None, set[str]], bool], *, lang: str | None = None
) -> bool | None:
    """``is_allowed(origin, own)`` → may a request with this ``Origin`` header use the server?

    ``own`` is the set of the server's own page origins; ``origin`` is ``None`` when the
    request has no ``Origin`` header.
    """
    own = {"http://127.0.0.1:8765", "http://127.0.0.1:8766", "http://localhost:8765", "http://localhost:8766"}
    cases = [
        ("sec.origin.none", None, True, "sec.origin.hint_none"),
        ("sec.origin.own", "http://127.0.0.1:8765", True, ""),
        ("sec.origin.own_other_port", "http://localhost:8766", True, ""),
        ("sec.origin.evil_site", "http://evil.example", False, ""),
        ("sec.origin.evil_port", "http://127.0.0.1:9", False, "sec.origin.hint_port"),
        ("sec.origin.null", "null", False, "sec.origin.hint_null"),
    ]

    def body(s: _Session) -> None:
        for key, origin, want, hint in cases:
            given = (origin, sorted(own))  # (origin, own): None is shown too
            got = s.call(is_allowed, origin, set(own), case=s.t(key), given=given, expected=want)
            s.expect(got, want, case=s.t(key), given=given, hint=s.t(hint) if hint else "")

    return _run_cases("sec.origin_allowed", len(cases), lang, body)


def check_valid_name(valid_name: Callable[[str], str | None], *, lang: str | None = None) -> bool | None:
    """``valid_name(name)`` → the NFC form of an acceptable name, or ``None`` to refuse it."""
    cases = [
        ("sec.name.plain", "ann", "ann", ""),
        ("sec.name.korean", "김민준", "김민준", ""),
        ("sec.name.decomposed", "Jose\u0301", "Jos\u00e9", "sec.name.hint_nfc"),
        ("sec.name.ai", "AI", None, "sec.name.hint_reserved"),
        ("sec.name.ai_width", "ＡＩ", None, "sec.name.hint_reserved"),
        ("sec.name.rlo", "ann\u202egnp.exe", None, "sec.name.hint_category"),
        ("sec.name.zwsp", "te\u200bacher", None, "sec.name.hint_category"),
        ("sec.name.empty", "", None, ""),
        ("sec.name.long", "a" * 33, None, ""),
    ]

    def body(s: _Session) -> None:
        for key, name, want, hint in cases:
            got = s.call(valid_name, name, case=s.t(key), given=name, expected=want)
            s.expect(got, want, case=s.t(key), given=name, hint=s.t(hint) if hint else "")

    return _run_cases("sec.valid_name", len(cases), lang, body)


def check_bucket(
    take: Callable[[dict, Any, float, float, int], bool], *, lang: str | None = None
) -> bool | None:
    """``take(buckets, key, now, rate, burst)`` → ``True`` and spend a token of ``key``'s bucket,
    or ``False`` when it is empty. ``buckets`` is the learner's own dict, kept between calls."""

    # (key, now, what the calls return in a row, case, hint); the buckets carry over from step to step
    steps = [
        ("token:ann", 10.0, [True, True, False], "sec.take.burst", "sec.take.hint_burst"),
        ("token:bob", 10.0, [True], "sec.take.keys", "sec.take.hint_shared"),
        ("token:ann", 10.5, [True, False], "sec.take.refill", "sec.take.hint_refill"),
        ("token:bob", 20.0, [True, True, False], "sec.take.cap", "sec.take.hint_cap"),
    ]

    def body(s: _Session) -> None:
        buckets: dict = {}
        rate, burst = 2.0, 2
        for key, now, calls, case, hint in steps:
            # one call is shown as a value, several as the list of what they returned
            want: Any = calls if len(calls) > 1 else calls[0]
            got = [s.call(take, buckets, key, now, rate, burst, case=s.t(case), expected=want) for _ in calls]
            given = f"take({key!r}, now={now})"
            s.expect(
                got if len(calls) > 1 else got[0],
                want,
                case=s.t(case),
                given=f"{len(calls)} × {given}" if len(calls) > 1 else given,
                hint=s.t(hint),
            )

    return _run_cases("sec.take", len(steps), lang, body)
