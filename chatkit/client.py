"""ChatClient: a WebSocket chat client that never loses or duplicates a message.

What the seed's ``WebSocketService`` does, done so that the application sees
every message exactly once, in id order, across drops and server restarts:

- **Reconnect** after any drop with a pluggable :class:`ReconnectPolicy`
  (exponential backoff with jitter by default, a fixed delay as in the seed);
  non-retryable refusals (400, 401, 403, 404) stop it with
  :class:`~chatkit.errors.HandshakeRefused`.
- **Resume**: it reconnects with ``?after=<cursor>`` and the server replays
  every stored message newer than the cursor before live traffic; a reply that
  was streaming is replayed as a snapshot of its text, then continues live.
- **Outbox**: every message carries a ``client_id`` and stays in a bounded
  outbox until the server's broadcast of it comes back; it is re-sent after a
  reconnect and the server stores it at most once.
- **Deduplication** by id: replays overlap what was already seen; the client
  drops what it has already delivered.

Events are plain dicts — the server's frames, plus ``{"type": "state", ...}``
connection-state events — delivered through ``async for event in client`` and
to callbacks registered with :meth:`ChatClient.on_event`. The client owns its
one background task and cancels it on exit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Literal, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from .errors import ClientClosed, ClientError, HandshakeRefused

__all__ = [
    "ChatClient",
    "ResumeState",
    "ConnectionState",
    "ReconnectPolicy",
    "ExponentialBackoff",
    "FixedDelay",
    "NON_RETRYABLE",
]

logger = logging.getLogger("chatkit.client")

State = Literal["connecting", "open", "reconnecting", "closed"]
Event = dict[str, Any]

NON_RETRYABLE = frozenset({400, 401, 403, 404})
"""Handshake statuses after which reconnecting cannot help."""


class ReconnectPolicy(Protocol):
    """Decides how long to wait before reconnection attempt ``attempt`` (1, 2, ...)."""

    def delay(self, attempt: int) -> float: ...


@dataclass
class ExponentialBackoff:
    """``initial * factor**(attempt-1)`` capped at ``cap``, times a random factor in
    ``[1 - jitter, 1 + jitter]`` (still capped): about 1 s, 2 s, 4 s ... 30 s, spread out
    so that many clients dropped together do not come back together."""

    initial: float = 1.0
    factor: float = 2.0
    cap: float = 30.0
    jitter: float = 0.5
    rng: random.Random | None = None

    def delay(self, attempt: int) -> float:
        base = min(self.cap, self.initial * self.factor ** max(0, attempt - 1))
        rng = self.rng or random
        return min(self.cap, base * rng.uniform(1 - self.jitter, 1 + self.jitter))


@dataclass
class FixedDelay:
    """The seed's policy: always the same delay (3 s)."""

    seconds: float = 3.0

    def delay(self, attempt: int) -> float:
        return self.seconds


@dataclass(frozen=True)
class ConnectionState:
    """The client's connection state, with the attempt number and the next delay."""

    state: State
    attempt: int = 0
    delay: float | None = None
    error: str | None = None

    def as_event(self) -> Event:
        return {"type": "state", "state": self.state, "attempt": self.attempt,
                "delay": self.delay, "error": self.error}


class ResumeState:
    """Exactly-once delivery over a resumable stream of frames (WebSocket or SSE).

    Feed it every frame with :meth:`accept`; it returns the event to give the
    application, or ``None`` for a duplicate. It knows the resume cursor: the
    newest delivered id, or one less than a reply still streaming (so a reply
    cut off mid-stream is replayed). A ``snapshot`` chunk (sent on resume) is
    turned into the delta the application has not seen yet, and a finished
    reply replayed as a ``message`` completes a reply seen streaming with a
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
        if isinstance(last, int) and self._cursor is None:
            self._cursor = last

    def _mark(self, msg_id: int) -> None:
        self.delivered.add(msg_id)
        if self._cursor is None or msg_id > self._cursor:
            self._cursor = msg_id

    def accept(self, frame: Event) -> Event | None:
        kind = frame.get("type")
        msg_id = frame.get("id")
        if not isinstance(msg_id, int):
            return frame
        if msg_id in self.delivered:
            return None  # a replay, or the answer to a re-send, of something delivered
        if kind == "message":
            if msg_id in self.partial and not frame.get("is_user", True):
                # a reply we saw streaming, finished while we were away
                self.partial.pop(msg_id)
                frame = {"type": "ai_complete", "message": frame["message"], "id": msg_id,
                         "status": frame.get("status", "complete"),
                         "cancelled": frame.get("status") == "cancelled", "replayed": True}
            self._mark(msg_id)
        elif kind == "ai_chunk":
            have = self.partial.get(msg_id, "")
            if frame.get("snapshot"):
                text = frame.get("chunk", "")
                if not text.startswith(have):
                    return None  # cannot happen with one server; keep what was shown
                self.partial[msg_id] = text
                if text == have:
                    return None
                return {"type": "ai_chunk", "chunk": text[len(have):], "id": msg_id}
            self.partial[msg_id] = have + frame.get("chunk", "")
        elif kind == "ai_complete":
            self.partial.pop(msg_id, None)
            self._mark(msg_id)
        return frame


@dataclass
class _Outgoing:
    text: str
    future: asyncio.Future


class ChatClient:
    """Connect to a chatkit room and keep the conversation exactly-once.

    ``url`` is a room URL (``ws://HOST:PORT/ws/chat/<room>/``); ``user`` is added
    to its query. ``after`` asks for a replay of history on the first connection
    (``0`` = everything). Extra keyword arguments go to ``websockets`` ``connect``.
    """

    def __init__(
        self,
        url: str,
        *,
        user: str | None = None,
        policy: ReconnectPolicy | None = None,
        after: int | None = None,
        outbox_limit: int = 100,
        open_timeout: float = 10.0,
        queue_limit: int = 10_000,
        **connect_options: Any,
    ) -> None:
        self.url = url
        self.user = user
        self.policy = policy or ExponentialBackoff()
        self.outbox_limit = outbox_limit
        self.open_timeout = open_timeout
        self.connect_options = {"proxy": None, **connect_options}
        self.resume = ResumeState(after)
        self._outbox: OrderedDict[str, _Outgoing] = OrderedDict()
        self._events: asyncio.Queue[Event | None] = asyncio.Queue(queue_limit)
        self._callbacks: list[Callable[[Event], Any]] = []
        self._state = ConnectionState("closed")
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task | None = None
        self._opened: asyncio.Future | None = None
        self._closing = False
        self.error: ClientError | None = None
        self.online: list[str] = []
        self.connections = 0
        """How many times a connection was opened (1 + the successful reconnects)."""

    # -- life cycle ----------------------------------------------------------

    async def __aenter__(self) -> "ChatClient":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self, *, wait: bool = True) -> None:
        """Start connecting; with ``wait``, return once open (or raise if refused)."""
        if self._task is not None:
            raise ClientError("client already started")
        loop = asyncio.get_running_loop()
        self._opened = loop.create_future()
        self._task = asyncio.create_task(self._run(), name=f"chatkit-client-{self.user}")
        if wait:
            await asyncio.shield(self._opened)

    def abort(self) -> None:
        """Stop from synchronous code (e.g. a widget's ``close()``): cancel the
        connection task; it closes the socket as it unwinds. Prefer :meth:`close`."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()

    async def close(self) -> None:
        """Close the connection, stop reconnecting, fail unsent messages."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for item in self._outbox.values():
            if not item.future.done():
                item.future.set_exception(ClientClosed("the client closed before the server stored it"))
        self._outbox.clear()
        if self._state.state != "closed":
            self._set_state(ConnectionState("closed", error=self.error and str(self.error)))
        self._push(None)

    # -- observing -----------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def cursor(self) -> int | None:
        """The id this client would resume after (``?after=``) if it reconnected now."""
        return self.resume.cursor

    def on_event(self, callback: Callable[[Event], Any]) -> Callable[[], None]:
        """Call ``callback(event)`` for every event; returns a function that unregisters it."""
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while True:
            event = await self._events.get()
            if event is None:
                if self.error is not None:
                    raise self.error
                return
            yield event

    async def next_event(self, kind: str | None = None, timeout: float | None = None, **match: Any) -> Event:
        """The next event (of type ``kind`` and with fields equal to ``match``)."""
        async with asyncio.timeout(timeout):
            async for event in self:
                if (kind is None or event["type"] == kind) and all(
                    event.get(k) == v for k, v in match.items()
                ):
                    return event
        raise ClientClosed("the client closed")

    # -- sending -------------------------------------------------------------

    async def send(self, text: str, *, client_id: str | None = None) -> Event:
        """Send a chat message; return the server's ``message`` frame once it is stored.

        The message waits in the outbox while the client is offline and is
        re-sent after each reconnect until the server has it; the server keeps
        at most one copy per ``client_id``.
        """
        if self._closing:
            raise ClientClosed("the client is closed")
        if len(self._outbox) >= self.outbox_limit:
            raise ClientError(f"outbox full ({self.outbox_limit} unsent messages)", code="outbox_full")
        client_id = client_id or uuid.uuid4().hex
        future = asyncio.get_running_loop().create_future()
        self._outbox[client_id] = _Outgoing(text, future)
        await self._transmit({"type": "message", "message": text, "client_id": client_id})
        return await asyncio.shield(future)

    @property
    def outbox(self) -> list[str]:
        """Texts of the messages not yet confirmed by the server, in order."""
        return [item.text for item in self._outbox.values()]

    async def typing(self, is_typing: bool = True) -> None:
        """Tell the room this user is (not) typing. Dropped while offline."""
        await self._transmit({"type": "typing", "isTyping": is_typing})

    async def mark_read(self, message_id: int) -> None:
        """Send a read receipt for ``message_id``. Dropped while offline."""
        await self._transmit({"type": "read_receipt", "messageId": message_id})

    async def stop_reply(self) -> None:
        """Ask the server to stop the AI reply streaming in the room."""
        await self._transmit({"type": "stop"})

    async def _transmit(self, frame: dict[str, Any]) -> None:
        ws = self._ws
        if ws is None or self._state.state != "open":
            return
        try:
            await ws.send(json.dumps(frame, ensure_ascii=False))
        except ConnectionClosed:
            pass  # the run loop notices the drop and reconnects; the outbox keeps messages

    # -- the connection loop -------------------------------------------------

    def _room_url(self) -> str:
        parts = urlsplit(self.url)
        query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("user", "after")]
        if self.user is not None:
            query.append(("user", self.user))
        cursor = self.cursor
        if cursor is not None:
            query.append(("after", str(cursor)))
        return urlunsplit(parts._replace(query=urlencode(query)))

    async def _run(self) -> None:
        attempt = 0
        self._set_state(ConnectionState("connecting"))
        while True:
            try:
                async with connect(
                    self._room_url(), open_timeout=self.open_timeout, **self.connect_options
                ) as ws:
                    self._ws = ws
                    attempt = 0
                    self.connections += 1
                    await self._session(ws)
                reason = "closed by the server"
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status in NON_RETRYABLE:
                    self.error = HandshakeRefused(status, _refusal_text(exc))
                    self._fail_open(self.error)
                    self._set_state(ConnectionState("closed", attempt, error=str(self.error)))
                    self._push(None)
                    return
                reason = f"handshake refused with {status}"
            except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError) as exc:
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            finally:
                self._ws = None
            attempt += 1
            delay = self.policy.delay(attempt)
            logger.info("%s: %s; reconnecting in %.2f s (attempt %d)", self.user, reason, delay, attempt)
            self._set_state(ConnectionState("reconnecting", attempt, delay, reason))
            await asyncio.sleep(delay)

    async def _session(self, ws: ClientConnection) -> None:
        first = True
        async for raw in ws:
            try:
                frame = json.loads(raw)
            except ValueError:
                logger.warning("%s: ignored a frame that is not JSON", self.user)
                continue
            if first:
                first = False
                if frame.get("type") == "connection":
                    self._on_connection(frame)
                    self._set_state(ConnectionState("open"))
                    if self._opened is not None and not self._opened.done():
                        self._opened.set_result(None)
                    for client_id, item in list(self._outbox.items()):
                        await ws.send(json.dumps(
                            {"type": "message", "message": item.text, "client_id": client_id},
                            ensure_ascii=False,
                        ))
                    self._deliver(frame)
                    continue
            self._handle(frame)

    def _on_connection(self, frame: Event) -> None:
        self.online = list(frame.get("online", []))
        self.resume.connected(frame)

    def _handle(self, frame: Event) -> None:
        kind = frame.get("type")
        if kind == "message":
            client_id = frame.get("client_id")
            if client_id in self._outbox:
                item = self._outbox.pop(client_id)
                if not item.future.done():
                    item.future.set_result(frame)
        elif kind == "user_join" and frame.get("username") not in self.online:
            self.online = sorted([*self.online, frame.get("username", "")])
        elif kind == "user_leave":
            self.online = [u for u in self.online if u != frame.get("username")]
        event = self.resume.accept(frame)
        if event is not None:
            self._deliver(event)

    # -- plumbing ------------------------------------------------------------

    def _set_state(self, state: ConnectionState) -> None:
        self._state = state
        self._deliver(state.as_event())

    def _fail_open(self, exc: BaseException) -> None:
        if self._opened is not None and not self._opened.done():
            self._opened.set_exception(exc)
            self._opened.exception()  # mark retrieved: nobody may be waiting

    def _deliver(self, event: Event) -> None:
        for callback in list(self._callbacks):
            try:
                callback(event)
            except Exception:
                logger.exception("event callback failed")
        self._push(event)

    def _push(self, event: Event | None) -> None:
        try:
            self._events.put_nowait(event)
        except asyncio.QueueFull:  # nobody iterates: keep the newest events
            self._events.get_nowait()
            self._events.put_nowait(event)


def _refusal_text(exc: InvalidStatus) -> str:
    status = exc.response.status_code
    try:
        body = json.loads(exc.response.body or b"{}")
        detail = body.get("message") or ""
    except ValueError:
        detail = ""
    return f"the server refused the connection ({status}{': ' + detail if detail else ''})"
