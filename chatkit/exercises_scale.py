"""Checkers for notebook 07 · Scaling out (the rules that make several processes one chat).

Same reports as :mod:`chatkit.exercises` (✅ / ❌ with the first failing case and a hint / ⏳ while
the scaffold still raises ``NotImplementedError``); the sentences are in the shared catalog
(:mod:`chatkit.exercise_messages`) under ``scale.*`` keys, so a language that translates them picks them up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .exercises import _run_cases, _Session

__all__ = ["check_next_step", "check_online", "check_fenced_finish"]


def check_next_step(next_step: Callable[[int, int], str], *, lang: str | None = None) -> bool | None:
    """``next_step(last_id, incoming_id)`` → ``"duplicate"``, ``"deliver"`` or ``"fill"``: what a process
    does with a row another process published, given the newest id it delivered to its members."""
    cases = [
        ("scale.next_step.next", (41, 42), "deliver", "scale.next_step.hint_next"),
        ("scale.next_step.old", (41, 12), "duplicate", "scale.next_step.hint_dup"),
        ("scale.next_step.same", (41, 41), "duplicate", "scale.next_step.hint_dup"),
        ("scale.next_step.jump", (41, 45), "fill", "scale.next_step.hint_fill"),
    ]

    def body(s: _Session) -> None:
        for key, args, want, hint in cases:
            got = s.call(next_step, *args, case=s.t(key), given=args, expected=want)
            s.expect(got, want, case=s.t(key), given=args, hint=s.t(hint))

    return _run_cases("scale.next_step", len(cases), lang, body)


def check_online(
    online: Callable[[set[str], dict[str, float], float], list[str]], *, lang: str | None = None
) -> bool | None:
    """``online(local, entries, now)`` → the sorted list of users online in a room: this process's
    ``local`` users, plus every user of ``entries`` (``"node\\x1fuser" → expiry time``) not expired at ``now``."""
    sep = "\x1f"
    cases: list[tuple[str, tuple[set[str], dict[str, float], float], list[str], str]] = [
        ("scale.online.local", ({"ann"}, {}, 100.0), ["ann"], "scale.online.hint_union"),
        (
            "scale.online.union",
            ({"ann"}, {f"b{sep}bob": 105.0, f"b{sep}cho": 104.0}, 100.0),
            ["ann", "bob", "cho"],
            "scale.online.hint_split",
        ),
        (
            "scale.online.expired",
            ({"ann"}, {f"b{sep}bob": 105.0, f"c{sep}dan": 99.0, f"c{sep}eve": 100.0}, 100.0),
            ["ann", "bob"],
            "scale.online.hint_expiry",
        ),
        (
            "scale.online.both",
            ({"ann"}, {f"b{sep}ann": 103.0, f"c{sep}ann": 104.0}, 100.0),
            ["ann"],
            "scale.online.hint_union",
        ),
    ]

    def body(s: _Session) -> None:
        for key, (local, entries, now), want, hint in cases:
            given = (sorted(local), entries, now)
            got = s.call(online, set(local), dict(entries), now, case=s.t(key), given=given, expected=want)
            s.expect(got, want, case=s.t(key), given=given, hint=s.t(hint))

    return _run_cases("scale.online", len(cases), lang, body)


def check_fenced_finish(
    finish: Callable[[dict[int, dict[str, Any]], int, str, str], bool], *, lang: str | None = None
) -> bool | None:
    """``finish(rows, reply_id, text, status)`` stores a reply's text and status in ``rows`` (id → row
    dict with ``"content"`` and ``"status"``) only if that row is still ``"streaming"``, and returns whether
    it wrote — the compare-and-set that keeps a process that lost its lease from overwriting a survivor."""

    def fresh() -> dict[int, dict[str, Any]]:
        return {
            7: {"content": "", "status": "streaming"},
            8: {"content": "half an ans", "status": "interrupted"},
        }

    cases = [
        (
            "scale.fenced.streaming",
            (7, "the answer", "complete"),
            True,
            {
                7: {"content": "the answer", "status": "complete"},
                8: {"content": "half an ans", "status": "interrupted"},
            },
        ),
        ("scale.fenced.finished", (8, "half an answer, late", "complete"), False, fresh()),
        ("scale.fenced.unknown", (9, "x", "complete"), False, fresh()),
    ]

    def body(s: _Session) -> None:
        for key, args, want_result, want_rows in cases:
            rows = fresh()
            got = s.call(finish, rows, *args, case=s.t(key), given=args, expected=want_result)
            s.expect(rows, want_rows, case=s.t(key), given=args, hint=s.t("scale.fenced.hint_only_streaming"))
            s.report.passed -= 1  # one case, two checks
            s.expect(got, want_result, case=s.t(key), given=args, hint=s.t("scale.fenced.hint_return"))

    return _run_cases("scale.fenced", len(cases), lang, body)
