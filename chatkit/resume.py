"""Exactly-once delivery and the outbox — the client's rules, with no I/O.

Like :mod:`chatkit.protocol`, this module never touches a socket, a clock or an
event loop: callers feed it frames and the current time, and it answers with
events and decisions. :class:`~chatkit.client.ChatClient` (WebSocket),
:class:`~chatkit.sse.SSEClient` and the notebook widgets share it, and the
browser page has a copy of :class:`ResumeState` in ``chatkit/web/resume.js``;
both are checked against the same test vectors (``tests/vectors/resume.json``).

- :class:`ResumeState` turns a resumable stream of server frames (with
  replays after each reconnect) into events delivered exactly once, and knows
  the cursor to resume from.
- :class:`Outbox` keeps the messages the server has not acknowledged yet,
  decides when each may be (re)sent — paced to the server's stated
  :class:`~chatkit.protocol.Limits`, after the ``retry_after_ms`` of a refusal —
  and matches ``message`` and ``error`` frames to them by ``client_id``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from .errors import ClientError
from .protocol import RETRY_CODES, AttachmentRef, Limits

__all__ = [
    "ResumeState",
    "Outbox",
    "Pending",
    "Pacer",
    "Acknowledged",
    "Refused",
    "Retrying",
    "OutboxEvent",
    "DEFAULT_RETRY_MS",
]

Event = dict[str, Any]

DEFAULT_RETRY_MS = 1000
"""How long to wait before re-sending after a retryable refusal that states no delay."""


class ResumeState:
    """Exactly-once delivery over a resumable stream of frames (WebSocket or SSE).

    Feed it every frame with :meth:`accept` (and a ``connection`` frame also to
    :meth:`connected`); it returns the event to give the application, or
    ``None`` for a duplicate. It knows the resume cursor: the newest delivered
    id, or one less than a reply still streaming — or begun: a ``message``
    naming its ``reply_id``, an empty ``snapshot`` — so a reply cut off
    mid-stream, or before its first chunk, is replayed. A ``snapshot`` chunk (sent on resume) is turned
    into the delta the application has not seen yet, and a finished reply
    replayed as a ``message`` completes a reply seen streaming with a
    synthesized ``ai_complete``.
    """

    def __init__(self, after: int | None = None) -> None:
        self._cursor = after
        self.delivered: set[int] = set()
        self.partial: dict[int, str] = {}

    @property
    def cursor(self) -> int | None:
        if self.partial:
            return min(self.partial) - 1
        return self._cursor

    def connected(self, frame: Event) -> None:
        """Take the room's ``last_id`` from a ``connection`` frame as the first cursor."""
        last = frame.get("last_id")
        if isinstance(last, int) and not isinstance(last, bool) and self._cursor is None:
            self._cursor = last

    def _mark(self, msg_id: int) -> None:
        self.delivered.add(msg_id)
        if self._cursor is None or msg_id > self._cursor:
            self._cursor = msg_id

    def accept(self, frame: Event) -> Event | None:
        kind = frame.get("type")
        msg_id = frame.get("id")
        if not isinstance(msg_id, int) or isinstance(msg_id, bool):
            return frame
        if msg_id in self.delivered:
            return None  # a replay, or the answer to a re-send, of something delivered
        if kind == "message":
            reply_id = frame.get("reply_id")
            if isinstance(reply_id, int) and reply_id not in self.delivered:
                self.partial.setdefault(reply_id, "")  # its reply has begun: stay below it
            if msg_id in self.partial and not frame.get("is_user", True):
                # a reply we saw streaming, finished while we were away
                self.partial.pop(msg_id)
                status = frame.get("status", "complete")
                frame = {
                    "type": "ai_complete",
                    "message": frame.get("message", ""),
                    "id": msg_id,
                    "status": status,
                    "cancelled": status == "cancelled",
                    "replayed": True,
                }
            self._mark(msg_id)
        elif kind == "ai_chunk":
            have = self.partial.get(msg_id, "")
            text = frame.get("chunk", "")
            if not isinstance(text, str):
                return None
            if frame.get("snapshot"):
                self.partial.setdefault(msg_id, have)  # streaming or queued: stay below it
                if not text.startswith(have) or text == have:
                    return None  # nothing new (a diverging snapshot cannot happen with one server)
                self.partial[msg_id] = text
                return {"type": "ai_chunk", "chunk": text[len(have) :], "id": msg_id}
            self.partial[msg_id] = have + text
        elif kind == "ai_complete":
            self.partial.pop(msg_id, None)
            self._mark(msg_id)
        return frame


class Pacer:
    """A token bucket kept on the client's side of the server's message rate limit.

    It runs slightly slower than the server allows (``margin``), so that jitter
    between the two clocks does not make the server refuse a message.
    """

    def __init__(self, rate: float, burst: int, now: float, *, margin: float = 0.9) -> None:
        self.rate = rate * margin
        self.burst = max(1, int(burst))
        self.tokens = float(self.burst)
        self.stamp = now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, now: float) -> bool:
        self._refill(now)
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def wait(self, now: float) -> float:
        """Seconds until a token is available (0 if one is)."""
        self._refill(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def drain(self, now: float) -> None:
        """The server said we were too fast: start again from an empty bucket."""
        self._refill(now)
        self.tokens = 0.0


@dataclass
class Pending:
    """A message waiting for the server's acknowledgement."""

    client_id: str
    text: str
    sent: bool = False
    """Sent on the current connection (and not refused since)."""
    not_before: float = 0.0
    """Earliest time to send it (again), after a retryable refusal."""
    attempts: int = 0
    attachment: AttachmentRef | None = None
    """The uploaded file the message carries, if any."""


@dataclass(frozen=True)
class Acknowledged:
    """The server stored the message: ``frame`` is its ``message`` frame."""

    pending: Pending
    frame: Event


@dataclass(frozen=True)
class Refused:
    """The server refused the message for good (it left the outbox)."""

    pending: Pending
    code: str
    message: str


@dataclass(frozen=True)
class Retrying:
    """The server refused the message for now; it is re-sent at ``at``."""

    pending: Pending
    code: str
    at: float


OutboxEvent = Acknowledged | Refused | Retrying


class Outbox:
    """The messages sent but not acknowledged yet, in order, and when to (re)send each.

    Use: :meth:`add` a message; after each connection's ``connection`` frame,
    :meth:`connected`; call :meth:`due` to learn what to send now and how long
    until the next send; give every ``message`` and ``error`` frame to
    :meth:`receive`. Times are whatever monotonic clock the caller uses.
    """

    def __init__(self, limit: int = 100, limits: Limits | None = None, now: float = 0.0) -> None:
        self.limit = limit
        self.limits = limits or Limits()
        self.pacer = Pacer(self.limits.messages_per_s, self.limits.message_burst, now)
        self._items: OrderedDict[str, Pending] = OrderedDict()
        self.online = False
        """Between :meth:`connected` and :meth:`disconnected`: nothing is due while offline."""

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._items

    @property
    def texts(self) -> list[str]:
        return [p.text for p in self._items.values()]

    def add(self, client_id: str, text: str, attachment: AttachmentRef | None = None) -> Pending:
        """Queue a message (``outbox_full`` past ``limit``; ``duplicate_client_id`` if queued)."""
        if client_id in self._items:
            raise ClientError(f"client_id {client_id!r} is already waiting", code="duplicate_client_id")
        if len(self._items) >= self.limit:
            raise ClientError(f"outbox full ({self.limit} unsent messages)", code="outbox_full")
        pending = self._items[client_id] = Pending(client_id, text, attachment=attachment)
        return pending

    def remove(self, client_id: str) -> Pending | None:
        """Withdraw a message (its deadline passed, or its sender gave up)."""
        return self._items.pop(client_id, None)

    def connected(self, limits: Limits, now: float) -> None:
        """A new connection is open: every waiting message must be sent on it, paced
        to ``limits`` (the server's bucket starts full for a new connection)."""
        self.limits = limits
        self.pacer = Pacer(limits.messages_per_s, limits.message_burst, now)
        self.online = True
        for pending in self._items.values():
            pending.sent = False

    def disconnected(self) -> None:
        self.online = False
        for pending in self._items.values():
            pending.sent = False

    def due(self, now: float) -> tuple[list[Pending], float | None]:
        """The messages to send now (marked sent), and the seconds until the next one
        is due (``None`` when nothing waits to be sent)."""
        out: list[Pending] = []
        wake: float | None = None
        if not self.online:
            return out, None
        for pending in self._items.values():
            if pending.sent:
                continue
            if pending.not_before > now:
                delay = pending.not_before - now
                wake = delay if wake is None else min(wake, delay)
                continue
            if not self.pacer.take(now):
                delay = self.pacer.wait(now)
                wake = delay if wake is None else min(wake, delay)
                break  # keep the order: nothing after it jumps the queue
            pending.sent = True
            pending.attempts += 1
            out.append(pending)
        return out, wake

    def receive(self, frame: Event, now: float) -> OutboxEvent | None:
        """Match a server frame to a waiting message (``None`` if it is not about one).

        A ``message`` frame with a waiting ``client_id`` acknowledges it. An
        ``error`` frame with one refuses it: for good, or (codes in
        :data:`~chatkit.protocol.RETRY_CODES`) until ``retry_after_ms`` has
        passed. An older server sends retryable errors without ``client_id``:
        then every message sent and not acknowledged is re-sent after the delay
        (the server stores each ``client_id`` once, so a re-send is harmless).
        """
        kind = frame.get("type")
        client_id = frame.get("client_id")
        if kind == "message":
            if isinstance(client_id, str) and client_id in self._items and frame.get("is_user", True):
                return Acknowledged(self._items.pop(client_id), frame)
            return None
        if kind != "error":
            return None
        code = frame.get("code")
        code = code if isinstance(code, str) else "error"
        delay_ms = frame.get("retry_after_ms")
        if not isinstance(delay_ms, (int, float)) or isinstance(delay_ms, bool) or delay_ms < 0:
            delay_ms = DEFAULT_RETRY_MS
        at = now + delay_ms / 1000
        if isinstance(client_id, str):
            pending = self._items.get(client_id)
            if pending is None:
                return None
            if code in RETRY_CODES:
                pending.sent = False
                pending.not_before = at
                if code == "rate_limited":
                    self.pacer.drain(now)
                return Retrying(pending, code, at)
            del self._items[client_id]
            return Refused(pending, code, str(frame.get("message", "")))
        if code in RETRY_CODES:
            if code == "rate_limited":
                self.pacer.drain(now)
            first: Retrying | None = None
            for pending in self._items.values():
                if pending.sent:
                    pending.sent = False
                    pending.not_before = at
                    first = first or Retrying(pending, code, at)
            return first
        return None
