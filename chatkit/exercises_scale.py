"""Checkers for notebook 07 · Scaling out (the rules that make several processes one chat).

Same reports as :mod:`chatkit.exercises` (✅ / ❌ with the first failing case and a hint / ⏳ while
the scaffold still raises ``NotImplementedError``); the English sentences are added to the shared
catalog under ``scale.*`` keys, so a language that translates them (``"ko"``) picks them up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .exercise_messages import CATALOGS
from .exercises import _run_cases, _Session

__all__ = ["check_next_step", "check_online", "check_fenced_finish"]

MESSAGES: dict[str, str] = {
    "scale.next_step": "next step for a remote row",
    "scale.next_step.next": "the very next id",
    "scale.next_step.old": "an id already delivered",
    "scale.next_step.same": "the last id again",
    "scale.next_step.jump": "an id further on",
    "scale.next_step.hint_dup": "an id ≤ last_id was delivered already: 'duplicate'",
    "scale.next_step.hint_next": "last_id + 1 cannot hide a gap: 'deliver' at once",
    "scale.next_step.hint_fill": "any other larger id may hide rows of this room (ids are global): 'fill' from the store",
    "scale.online": "online list across processes",
    "scale.online.local": "only this process",
    "scale.online.union": "members on two processes",
    "scale.online.expired": "a dead process's entry expired",
    "scale.online.both": "a user on two processes",
    "scale.online.hint_union": "the list is this process's users plus every remote user, once each, sorted",
    "scale.online.hint_expiry": "an entry whose expiry is not after `now` belongs to a process that stopped refreshing: leave it out",
    "scale.online.hint_split": "entries are 'node\\x1fuser': keep the part after the separator",
    "scale.fenced": "fenced finish",
    "scale.fenced.streaming": "finish a reply still streaming",
    "scale.fenced.finished": "a late finish after a takeover",
    "scale.fenced.unknown": "an id that is not in the store",
    "scale.fenced.hint_only_streaming": "write only when the row is still 'streaming' — otherwise return False and change nothing",
    "scale.fenced.hint_return": "return True when you wrote the row, False when you did not",
}
for _key, _text in MESSAGES.items():
    CATALOGS["en"].setdefault(_key, _text)


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
