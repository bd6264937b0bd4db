"""Outgoing frames and the sinks that carry them to members — no I/O here.

The hub hands every frame to members through a :class:`Sink`. A frame is
encoded once per fan-out into an :class:`Outgoing`, which carries the frame's
``type`` and ``id`` beside the JSON text, so a transport that needs them (the
SSE ``event:``/``id:`` lines) never parses JSON again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Self

from .protocol import encode

__all__ = ["Groups", "Outgoing", "Sink", "fanout", "group_sinks", "send_groups"]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One server frame, encoded: its ``type``, its message ``id`` (if any) and the JSON text;
    ``reply_id`` is the reply reserved for a ``message`` (its resume cursor must stay below)."""

    type: str
    id: int | None
    text: str
    reply_id: int | None = None

    @classmethod
    def encode(cls, frame: dict[str, Any]) -> Outgoing:
        """Encode a frame built by :mod:`chatkit.protocol` (once; every sink gets the same object)."""
        msg_id = frame.get("id")
        reply_id = frame.get("reply_id")
        return cls(
            frame.get("type", "message"),
            msg_id if isinstance(msg_id, int) else None,
            encode(frame),
            reply_id if isinstance(reply_id, int) else None,
        )


class Sink(Protocol):
    """Where a member's frames go. Neither method may block or await.

    ``send_many`` hands one frame to many sinks of the same class at once (the
    WebSocket sink turns it into one ``websockets.broadcast`` call); a class
    that subclasses :class:`Sink` inherits a loop over :meth:`send`.
    """

    def send(self, frame: Outgoing) -> None: ...

    @classmethod
    def send_many(cls, sinks: Sequence[Self], frame: Outgoing) -> None:
        for sink in sinks:
            sink.send(frame)


class _HasSink(Protocol):
    sink: Sink


Groups = list[tuple[type[Sink], list[Sink]]]
"""Sinks grouped by class: one ``send_many`` call per group."""


def group_sinks(members: Iterable[_HasSink], exclude: object = None) -> Groups:
    """Members' sinks grouped by sink class (``exclude``: one member left out)."""
    by_class: dict[type[Sink], list[Sink]] = {}
    for member in members:
        if member is not exclude:
            by_class.setdefault(type(member.sink), []).append(member.sink)
    return list(by_class.items())


def send_groups(groups: Groups, frame: Outgoing) -> None:
    """Hand one encoded frame to every sink of the groups."""
    for cls, sinks in groups:
        cls.send_many(sinks, frame)


def fanout(members: Iterable[_HasSink], frame: Outgoing, exclude: object = None) -> None:
    """Hand one encoded frame to every member's sink, batched per sink class."""
    send_groups(group_sinks(members, exclude), frame)
