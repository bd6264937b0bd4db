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
  reconnect, paced to the limits the server states in its ``connection``
  frame, and the server stores it at most once.
- **Every send resolves**: with the stored message, with
  :class:`~chatkit.errors.MessageRefused` when the server refuses it for good
  (``too_long``, ``bad_field``… — matched by ``client_id``), or with
  :class:`~chatkit.errors.SendTimeout` after its deadline. Refusals that may
  pass later (``rate_limited``, ``busy``) are retried after the server's
  ``retry_after_ms``.
- **Deduplication** by id: replays overlap what was already seen; the client
  drops what it has already delivered.
- **Files**: :meth:`ChatClient.send_file` uploads a picture, a voice message or a PDF
  to the server's HTTP port (``POST /files``) and sends a message that carries it.

Events are plain dicts — the server's frames, plus ``{"type": "state", ...}``
connection-state events — delivered through ``async for event in client`` and
to callbacks registered with :meth:`ChatClient.on_event`. The client owns its
one background task and cancels it on exit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from . import protocol
from .errors import ClientClosed, ClientError, HandshakeRefused, MessageRefused, ProtocolError, SendTimeout
from .protocol import AttachmentRef, Limits, Reaction, ReadReceipt, SendMessage, Stop, Typing, apply_presence
from .resume import Acknowledged, Outbox, Refused, ResumeState

__all__ = [
    "ChatClient",
    "ResumeState",  # re-exported from chatkit.resume, where it lives
    "ConnectionState",
    "ReconnectPolicy",
    "ExponentialBackoff",
    "FixedDelay",
    "NON_RETRYABLE",
    "upload_file",
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
        return {
            "type": "state",
            "state": self.state,
            "attempt": self.attempt,
            "delay": self.delay,
            "error": self.error,
        }


FileSource = bytes | str | os.PathLike[str]
"""What :meth:`ChatClient.send_file` takes: the file's bytes, or a path to read them from."""


async def upload_file(
    http: httpx.AsyncClient,
    base_url: str,
    room: str,
    file: FileSource,
    *,
    name: str | None = None,
    content_type: str | None = None,
) -> dict[str, Any]:
    """Upload ``file`` for ``room`` to the server whose HTTP (SSE) port is ``base_url``
    (``POST /files``, the raw bytes); returns the server's answer: ``{"id", "name", "type",
    "size", "url", "thumb", "width", "height"}``. The server decides the type from the bytes;
    ``content_type`` is only a claim. Raises :class:`~chatkit.errors.MessageRefused` with the
    server's code (``too_large``, ``unsupported_type``, ``bad_image``…)."""
    if not isinstance(file, bytes):
        path = Path(file)
        name = name if name is not None else path.name
        file = await asyncio.to_thread(path.read_bytes)
    headers = {"Content-Type": content_type or "application/octet-stream"}
    if name:
        headers["X-Filename"] = quote(name, safe="")
    response = await http.post(
        f"{base_url.rstrip('/')}/files", params={"room": room}, content=file, headers=headers
    )
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code != 201 or not isinstance(body, dict):
        raise MessageRefused(
            str(body.get("message", f"upload refused ({response.status_code})")),
            code=str(body.get("code", "upload_refused")),
        )
    return body


class ChatClient:
    """Connect to a chatkit room and keep the conversation exactly-once.

    ``url`` is a room URL (``ws://HOST:PORT/ws/chat/<room>/``), or several (one per
    server process sharing a broker: each reconnection tries the next); ``user`` is added
    to its query. ``after`` asks for a replay of history on the first connection
    (``0`` = everything). ``send_timeout`` is the default deadline of :meth:`send`.
    ``presence="batch"`` (the default) asks the server for one ``presence`` frame per
    room per tick instead of a ``user_join``/``user_leave`` per change (``"each"``); both
    kinds are applied to :attr:`online`. ``http_url`` is the server's HTTP (SSE) port, for
    files (default: asked from the WebSocket port's ``/config.json`` on the first upload).
    Extra keyword arguments go to ``websockets`` ``connect``.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        user: str | None = None,
        policy: ReconnectPolicy | None = None,
        after: int | None = None,
        outbox_limit: int = 100,
        open_timeout: float = 10.0,
        queue_limit: int = 10_000,
        send_timeout: float = 60.0,
        token: str | None = None,
        presence: Literal["batch", "each"] = "batch",
        http_url: str | None = None,
        **connect_options: Any,
    ) -> None:
        if presence not in ("batch", "each"):
            raise ValueError(f"presence must be 'batch' or 'each', not {presence!r}")
        self.presence = presence
        self.http_url = http_url
        """The server's HTTP (SSE) port, where files are uploaded and downloaded."""
        self._token = token
        if token:  # sign-in: the server takes the name from the token (send no ?user=)
            headers = dict(connect_options.pop("additional_headers", None) or {})
            headers["Authorization"] = f"Bearer {token}"
            connect_options["additional_headers"] = headers
        self.urls = [url] if isinstance(url, str) else list(url)
        self.url = self.urls[0]
        """The URL this client connects (or will reconnect) to; it rotates through ``urls``."""
        self.user = user
        self.policy = policy or ExponentialBackoff()
        self.outbox_limit = outbox_limit
        self.open_timeout = open_timeout
        self.send_timeout = send_timeout
        self.connect_options = {"proxy": None, **connect_options}
        self.resume = ResumeState(after)
        self.limits = Limits()
        """What the server accepts (from its ``connection`` frame; defaults until then)."""
        self._outbox = Outbox(outbox_limit)
        self._waiters: dict[str, asyncio.Future[Event]] = {}
        self._wake = asyncio.Event()
        self._events: asyncio.Queue[Event | None] = asyncio.Queue(queue_limit)
        self._callbacks: list[Callable[[Event], Any]] = []
        self._state = ConnectionState("closed")
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task | None = None
        self._opened: asyncio.Future | None = None
        self._closing = False
        self.error: ClientError | None = None
        self.online: list[str] = []
        """Who is online, sorted; in a big room with batched presence only the first names
        (the server's ``--online-list-max``) and those that joined since: see :attr:`online_count`."""
        self.online_count = 0
        """How many users are online in the room (all of them, also those not in :attr:`online`)."""
        self.connections = 0
        """How many times a connection was opened (1 + the successful reconnects)."""

    # -- life cycle ----------------------------------------------------------

    async def __aenter__(self) -> ChatClient:
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

    def drop_connection(self) -> None:
        """Cut the current connection as a network failure would (no closing handshake);
        the client reconnects and resumes as after any drop. For demos and fault tests."""
        ws = self._ws
        if ws is not None:
            ws.transport.abort()

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
        for client_id, future in list(self._waiters.items()):
            self._outbox.remove(client_id)
            if not future.done():
                future.set_exception(ClientClosed("the client closed before the server stored it"))
                future.exception()  # retrieved: its send() may have been cancelled meanwhile
        if self._state.state != "closed":
            self._set_state(ConnectionState("closed", error=str(self.error) if self.error else None))
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

    async def send(
        self,
        text: str,
        *,
        client_id: str | None = None,
        timeout: float | None = None,
        attachment: AttachmentRef | None = None,
    ) -> Event:
        """Send a chat message; return the server's ``message`` frame once it is stored.

        With an ``attachment`` (a file uploaded already, see :meth:`upload`) the text is its
        caption and may be empty.

        The message waits in the outbox while the client is offline and is
        re-sent after each reconnect until the server has it; the server keeps
        at most one copy per ``client_id``. Raises
        :class:`~chatkit.errors.MessageRefused` when the server (or, for what
        it can check itself, the client) refuses it for good, and
        :class:`~chatkit.errors.SendTimeout` when it is not stored within
        ``timeout`` seconds (default ``send_timeout``); then it leaves the outbox.
        """
        if self._closing:
            raise ClientClosed("the client is closed")
        client_id = client_id or uuid.uuid4().hex
        frame = SendMessage(text, client_id, attachment)
        try:  # what the server would refuse for good is refused here, without a round trip
            protocol.decode_object(frame.to_object(), max_text=self.limits.max_text)
        except ProtocolError as exc:
            raise MessageRefused(exc.message, code=exc.code) from None
        self._outbox.add(client_id, text, attachment)
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._waiters[client_id] = future
        self._wake.set()
        deadline = self.send_timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(deadline):
                return await future
        except TimeoutError:
            if future.done() and not future.cancelled() and future.exception() is None:
                return future.result()
            raise SendTimeout(f"the server did not acknowledge the message within {deadline:g} s") from None
        finally:
            self._waiters.pop(client_id, None)
            self._outbox.remove(client_id)

    async def upload(
        self, file: FileSource, *, name: str | None = None, content_type: str | None = None
    ) -> dict[str, Any]:
        """Upload a file for this room (``POST /files`` on the server's HTTP port) and return
        the server's answer (``id``, ``name``, ``type``, ``size``, ``url``, ``thumb``…); see
        :func:`upload_file`. ``file``: bytes, or a path (its name is the default ``name``)."""
        async with self._http() as http:
            return await upload_file(
                http, await self._http_base(http), self._room(), file, name=name, content_type=content_type
            )

    async def send_file(
        self,
        file: FileSource,
        *,
        name: str | None = None,
        text: str = "",
        content_type: str | None = None,
        timeout: float | None = None,
    ) -> Event:
        """Upload ``file`` and send it as a message with the caption ``text``; returns the stored
        ``message`` frame (its ``attachment`` says what the server made of the file). A file
        without a caption asks for no AI reply."""
        uploaded = await self.upload(file, name=name, content_type=content_type)
        return await self.send(
            text, attachment=AttachmentRef(uploaded["id"], uploaded["name"]), timeout=timeout
        )

    def _http(self) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        verify = self.connect_options.get("ssl") or True
        return httpx.AsyncClient(trust_env=False, timeout=self.send_timeout, headers=headers, verify=verify)

    def _room(self) -> str:
        parsed = protocol.parse_chat_path(urlsplit(self.url).path)
        if parsed is None:
            raise ClientError(f"not a room URL: {self.url}", code="bad_url")
        return parsed.session_id

    async def _http_base(self, http: httpx.AsyncClient) -> str:
        """The server's HTTP port: ``http_url``, else what its ``/config.json`` states."""
        if self.http_url is None:
            parts = urlsplit(self.url)
            scheme = "https" if parts.scheme == "wss" else "http"
            config = (await http.get(urlunsplit((scheme, parts.netloc, "/config.json", "", "")))).json()
            if not config.get("http_port"):
                raise ClientError("this server has no HTTP port for files", code="no_http_port")
            host = parts.hostname or "127.0.0.1"
            host = f"[{host}]" if ":" in host else host
            self.http_url = f"{scheme}://{host}:{config['http_port']}/"
        return self.http_url

    @property
    def outbox(self) -> list[str]:
        """Texts of the messages not yet confirmed by the server, in order."""
        return self._outbox.texts

    async def typing(self, is_typing: bool = True) -> None:
        """Tell the room this user is (not) typing. Dropped while offline."""
        await self._transmit(Typing(is_typing).encode())

    async def mark_read(self, message_id: int) -> None:
        """Send a read receipt for ``message_id``. Dropped while offline."""
        await self._transmit(ReadReceipt(message_id).encode())

    async def react(self, message_id: int, emoji: str) -> None:
        """Toggle this user's ``emoji`` reaction on ``message_id``. Dropped while offline."""
        await self._transmit(Reaction(message_id, emoji).encode())

    async def stop_reply(self) -> None:
        """Ask the server to stop the AI reply streaming in the room."""
        await self._transmit(Stop().encode())

    async def _transmit(self, data: str) -> None:
        ws = self._ws
        if ws is None or self._state.state != "open":
            return
        try:
            await ws.send(data)
        except ConnectionClosed:
            pass  # the run loop notices the drop and reconnects; the outbox keeps messages

    async def _flush(self, ws: ClientConnection) -> None:
        """Send the outbox's messages as they fall due, paced to the server's limits.

        One per connection, owned by :meth:`_session`; woken by :meth:`send` and
        by retryable refusals, else sleeping until the next message is due.
        """
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            batch, wait = self._outbox.due(loop.time())
            try:
                for pending in batch:
                    await ws.send(SendMessage(pending.text, pending.client_id, pending.attachment).encode())
            except ConnectionClosed:
                return  # the session notices the drop; the outbox re-sends on the next connection
            if batch and wait is None:
                continue  # sending yielded: something may have been added meanwhile
            try:
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            except TimeoutError:
                pass

    # -- the connection loop -------------------------------------------------

    def _room_url(self) -> str:
        parts = urlsplit(self.url)
        # A room id may be Hangul: percent-encode the path (existing escapes are kept).
        parts = parts._replace(path=quote(parts.path, safe="/%:@!$&'()*+,;="))
        query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("user", "after", "presence")]
        if self.presence == "batch":
            query.append(("presence", "batch"))
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
            # Several servers (processes behind no load balancer): try the next one.
            self.url = self.urls[(self.urls.index(self.url) + 1) % len(self.urls)]
            delay = self.policy.delay(attempt)
            logger.info("%s: %s; reconnecting in %.2f s (attempt %d)", self.user, reason, delay, attempt)
            self._set_state(ConnectionState("reconnecting", attempt, delay, reason))
            await asyncio.sleep(delay)

    async def _session(self, ws: ClientConnection) -> None:
        first = True
        flusher: asyncio.Task | None = None
        try:
            async for raw in ws:
                try:
                    frame = json.loads(raw)
                except ValueError:
                    logger.warning("%s: ignored a frame that is not JSON", self.user)
                    continue
                if not isinstance(frame, dict):
                    logger.warning("%s: ignored a frame that is not an object", self.user)
                    continue
                if first:
                    first = False
                    if frame.get("type") == "connection":
                        self._on_connection(frame)
                        self._set_state(ConnectionState("open"))
                        if self._opened is not None and not self._opened.done():
                            self._opened.set_result(None)
                        flusher = asyncio.create_task(
                            self._flush(ws), name=f"chatkit-client-flush-{self.user}"
                        )
                        flusher.add_done_callback(_log_failure)
                        self._deliver(frame)
                        continue
                self._handle(frame)
        finally:
            self._outbox.disconnected()
            if flusher is not None:
                flusher.cancel()
                await asyncio.gather(flusher, return_exceptions=True)

    def _on_connection(self, frame: Event) -> None:
        self.online = list(frame.get("online", []))
        count = frame.get("online_count")
        self.online_count = count if isinstance(count, int) and count >= 0 else len(self.online)
        self.limits = Limits.from_object(frame.get("limits"))
        self._outbox.connected(self.limits, asyncio.get_running_loop().time())
        self.resume.connected(frame)

    def _handle(self, frame: Event) -> None:
        kind = frame.get("type")
        if kind in ("message", "error"):
            outcome = self._outbox.receive(frame, asyncio.get_running_loop().time())
            if outcome is not None:
                future = self._waiters.get(outcome.pending.client_id)
                if isinstance(outcome, Acknowledged):
                    if future is not None and not future.done():
                        future.set_result(outcome.frame)
                elif isinstance(outcome, Refused):
                    if future is not None and not future.done():
                        future.set_exception(MessageRefused(outcome.message, code=outcome.code))
                else:
                    logger.info(
                        "%s: message %s refused (%s); re-sending in %.2f s",
                        self.user,
                        outcome.pending.client_id,
                        outcome.code,
                        outcome.at - asyncio.get_running_loop().time(),
                    )
                    self._wake.set()
        elif kind == "user_join" and frame.get("username") not in self.online:
            self.online = sorted([*self.online, frame.get("username", "")])
            self.online_count += 1
        elif kind == "user_leave":
            if frame.get("username") in self.online or self.online_count > len(self.online):
                self.online_count -= 1
            self.online = [u for u in self.online if u != frame.get("username")]
        elif kind == "presence":
            self.online = apply_presence(self.online, frame)
            count = frame.get("count")
            self.online_count = count if isinstance(count, int) and count >= 0 else len(self.online)
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


def _log_failure(task: asyncio.Task) -> None:
    """Log a helper task's crash when it happens, not when (if ever) it is awaited."""
    if not task.cancelled() and task.exception() is not None:
        logger.error("%s failed", task.get_name(), exc_info=task.exception())


def _refusal_text(exc: InvalidStatus) -> str:
    status = exc.response.status_code
    try:
        body = json.loads(exc.response.body or b"{}")
        detail = body.get("message") or ""
    except ValueError:
        detail = ""
    return f"the server refused the connection ({status}{': ' + detail if detail else ''})"
