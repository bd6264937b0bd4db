"""Checkers for notebook 08 · Security (kept apart from :mod:`chatkit.exercises`, same reports).

- :func:`check_origin_allowed` — the origin policy: who may use the server from a browser;
- :func:`check_valid_name` — user names: NFC, no invisible characters, reserved names refused;
- :func:`check_bucket` — a token bucket keyed on who you are, not on what you call yourself.

Each runs the learner's function on named cases and prints ✅, ❌ with the first failing case
(input, expected, got, hint), or ⏳ while the body still raises ``NotImplementedError``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .exercise_messages import CATALOGS
from .exercises import _run_cases, _Session, _t

__all__ = ["check_origin_allowed", "check_valid_name", "check_bucket"]

_EN = {
    "sec.origin_allowed": "origin policy",
    "sec.origin.none": "no Origin header (a script, curl, the openai client)",
    "sec.origin.own": "the server's own page",
    "sec.origin.own_other_port": "the server's page on its other port",
    "sec.origin.evil_site": "a page on another site",
    "sec.origin.evil_port": "a page on another local port (same site, other origin)",
    "sec.origin.null": "a sandboxed page or a file:// page (Origin: null)",
    "sec.origin.hint_none": "a request without Origin is not from a browser page: allow it (the token still applies)",
    "sec.origin.hint_port": "an origin is scheme + host + port: http://127.0.0.1:9 is not http://127.0.0.1:8765",
    "sec.origin.hint_null": "'null' is a real Origin value (sandboxed iframes, file://) and must not be trusted",
    "sec.valid_name": "user names",
    "sec.name.plain": "an ordinary name",
    "sec.name.korean": "a Korean name",
    "sec.name.decomposed": "é written as e + a combining accent (NFC makes it one character)",
    "sec.name.ai": "the reserved name AI",
    "sec.name.ai_width": "AI in full-width letters",
    "sec.name.rlo": "a RIGHT-TO-LEFT OVERRIDE inside (U+202E)",
    "sec.name.zwsp": "a ZERO WIDTH SPACE inside (U+200B)",
    "sec.name.empty": "an empty name",
    "sec.name.long": "33 characters",
    "sec.name.hint_nfc": "normalize first: unicodedata.normalize('NFC', name)",
    "sec.name.hint_reserved": "compare unicodedata.normalize('NFKC', name).casefold() with the reserved names",
    "sec.name.hint_category": "refuse characters whose unicodedata.category() starts with 'C' (Cc, Cf...)",
    "sec.take": "rate limit per key",
    "sec.take.burst": "a burst of 3 from one key (burst 2)",
    "sec.take.keys": "another key has its own bucket",
    "sec.take.refill": "half a second later at 2 per second",
    "sec.take.hint_shared": "one bucket per key: a dict from key to (tokens, last time)",
    "sec.take.hint_refill": "add (now - last) * rate tokens, at most burst, before taking one",
}
for _key, _text in _EN.items():
    CATALOGS["en"].setdefault(_key, _text)


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
            got = s.call(is_allowed, origin, set(own), case=s.t(key), given=origin, expected=want)
            s.expect(got, want, case=s.t(key), given=origin, hint=s.t(hint) if hint else "")

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

    def body(s: _Session) -> None:
        buckets: dict = {}
        rate, burst = 2.0, 2
        got = [
            s.call(
                take,
                buckets,
                "token:ann",
                10.0,
                rate,
                burst,
                case=s.t("sec.take.burst"),
                expected=[True, True, False],
            )
            for _ in range(3)
        ]
        s.expect(
            got, [True, True, False], case=s.t("sec.take.burst"), given="3 × take('token:ann', now=10.0)"
        )
        got2 = s.call(take, buckets, "token:bob", 10.0, rate, burst, case=s.t("sec.take.keys"), expected=True)
        s.expect(
            got2,
            True,
            case=s.t("sec.take.keys"),
            given="take('token:bob', now=10.0)",
            hint=s.t("sec.take.hint_shared"),
        )
        got3 = [
            s.call(
                take,
                buckets,
                "token:ann",
                10.5,
                rate,
                burst,
                case=s.t("sec.take.refill"),
                expected=[True, False],
            )
            for _ in range(2)
        ]
        s.expect(
            got3,
            [True, False],
            case=s.t("sec.take.refill"),
            given="2 × take('token:ann', now=10.5)",
            hint=s.t("sec.take.hint_refill"),
        )

    return _run_cases("sec.take", 3, lang, body)


_ = _t  # the catalog helper is shared with chatkit.exercises
