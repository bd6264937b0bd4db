"""The WebSocket server: ``websockets.asyncio.server`` in front of the hub.

This module is the I/O layer for WebSocket members. It checks the handshake
(path, origin, query), answers plain HTTP GETs through ``process_request``
with :class:`~chatkit.endpoints.Endpoints` (the chat page, ``/health``,
message history), wraps each connection in a :class:`WebSocketSink` and feeds
decoded frames to the :class:`~chatkit.hub.Hub`.
"""

from __future__ import annotations

import asyncio
import http
import logging
import ssl as ssl_module
import struct
from collections.abc import Coroutine, Sequence
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from . import protocol
from .endpoints import HISTORY_PATH, SAME_ORIGIN_HEADER, Endpoints, HTTPResponse, error_response
from .errors import ChatkitError, ProtocolError
from .guard import REFUSALS, SECURITY_HEADERS, Admitted, Guard, redact, refusal_response
from .hub import Hub
from .limits import ConnectionSlots, Slot, refusal_bytes
from .rooms import Member
from .sinks import Outgoing, Sink

__all__ = ["WebSocketServer", "WebSocketSink"]

logger = logging.getLogger("chatkit.server")


_TEXT_FIN = 0x81
"""FIN + opcode 1 (text): the first byte of every frame a chatkit server sends a member."""


def text_frame(data: bytes) -> bytes:
    """The bytes of one unmasked, unfragmented WebSocket text frame carrying ``data``.

    A server's frames are never masked (RFC 6455 §5.1) and, without an extension,
    their header is the first byte and the payload length (§5.2): 7 bits, or 126 +
    16 bits, or 127 + 64 bits. Written here rather than with
    ``websockets.frames.Frame(...).serialize()`` because it runs once per frame per
    fan-out (every streamed chunk) and the general serializer builds and checks a
    ``Frame`` object each time (0.9 µs against 0.2 µs here); ``tests/test_ws.py``
    checks both give the same bytes for every length class. Connections with an
    extension (permessage-deflate) still go through ``websockets.broadcast``.
    """
    n = len(data)
    if n < 126:
        return bytes((_TEXT_FIN, n)) + data
    if n < 65536:
        return struct.pack("!BBH", _TEXT_FIN, 126, n) + data
    return struct.pack("!BBQ", _TEXT_FIN, 127, n) + data


class WebSocketSink(Sink):
    """A hub sink writing to one WebSocket without awaiting.

    Frames go straight into the connection's transport buffer. When that buffer
    holds more than ``limit`` bytes the client is not keeping up: it is closed
    with 1013 (try again later) so it cannot slow the room or eat memory; it
    reconnects and resumes by id, losing nothing.
    """

    __slots__ = ("ws", "limit", "closing", "_owner")

    def __init__(self, ws: ServerConnection, limit: int, owner: WebSocketServer) -> None:
        self.ws = ws
        self.limit = limit
        self.closing = False
        self._owner = owner

    def _writable(self) -> bool:
        """False when closing; closes a slow consumer (1013) instead of buffering for it."""
        if self.closing:
            return False
        buffered = self.ws.transport.get_write_buffer_size()
        if buffered > self.limit:
            self.closing = True
            logger.warning("closing slow consumer %s: %d bytes unsent", self.ws.remote_address, buffered)
            self._owner.spawn(self.ws.close(1013, "slow consumer; reconnect and resume"))
            return False
        return True

    def send(self, frame: Outgoing) -> None:
        self.send_many((self,), frame)

    async def drain(self) -> None:
        """Wait until the connection's buffer has room again (a long replay writes page by page)."""
        try:
            await self.ws.drain()
        except (ConnectionError, ConnectionClosed):
            pass  # gone: the rest of the replay goes nowhere, and the handler ends the member

    @classmethod
    def send_many(cls, sinks: Sequence[WebSocketSink], frame: Outgoing) -> None:
        """One frame to many connections, encoded once and framed once.

        A server's frames are not masked, so on a connection without extensions the
        bytes of a text frame are the same for every member: they are framed once
        (:func:`text_frame`) and written into each open connection's transport. A
        connection with an extension (permessage-deflate compresses per connection)
        goes through ``websockets.broadcast``. The transport buffer is
        written at once either way; nothing awaits.
        """
        data = frame.text.encode("utf-8")
        wire: bytes | None = None
        extended: list[ServerConnection] = []
        for sink in sinks:
            if sink.closing or (
                sink.ws.transport.get_write_buffer_size() > sink.limit and not sink._writable()
            ):
                continue
            ws = sink.ws
            protocol_ = ws.protocol
            if protocol_.state is not State.OPEN:
                continue
            if protocol_.extensions:
                extended.append(ws)
                continue
            if wire is None:
                wire = text_frame(data)
            ws.transport.write(wire)
        if extended:
            broadcast(extended, data, text=True)


def _to_websockets(response: HTTPResponse) -> Response:
    headers = response.headers
    if not any(k == "X-Content-Type-Options" for k, _ in headers):
        headers = headers + SECURITY_HEADERS
    return Response(response.status, response.reason, Headers(headers), response.body)


def _limited_connection(slots: ConnectionSlots, retry_after: int) -> type[ServerConnection]:
    """A ``ServerConnection`` class counted against ``slots`` from the moment it is accepted.

    Past a cap the answer is a ``503`` with ``Retry-After``, written before any
    request is read, and the socket is closed at once: a flood of idle
    connections cannot use up the process's file descriptors. Until its
    handshake request has arrived, a connection may be evicted (the same
    ``503``) to make room for a new one when the port is full.
    """

    class LimitedConnection(ServerConnection):
        _slot: Slot | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            peer = transport.get_extra_info("peername")
            address = str(peer[0]) if peer else ""
            stream = cast(asyncio.Transport, transport)  # a socket (or TLS) transport: it can write
            self._slot = slots.acquire(address, lambda: _turn_away(stream, retry_after, evicted=True))
            if self._slot is None:
                logger.info(
                    "refused a connection from %s: %d open (%d from it)",
                    address,
                    slots.open,
                    slots.from_key(address),
                )
                _turn_away(stream, retry_after, evicted=False)
            else:
                slot = self._slot
                self.request_rcvd.add_done_callback(lambda _: slots.head_received(slot))

        def connection_lost(self, exc: Exception | None) -> None:
            if self._slot is not None:
                slots.release(self._slot)
                self._slot = None
            super().connection_lost(exc)

    return LimitedConnection


def _turn_away(transport: asyncio.Transport, retry_after: int, *, evicted: bool) -> None:
    """Answer ``503`` + ``Retry-After`` on a connection no request was read from, and close it."""
    if evicted:
        logger.info(
            "closed a connection from %s to make room: no request head yet, port full",
            transport.get_extra_info("peername"),
        )
    transport.write(
        refusal_bytes(503, "too_many_connections", "too many open connections; retry later", retry_after)
    )
    transport.close()


class WebSocketServer:
    """The WebSocket port of a chatkit server: rooms at ``/ws/chat/<id>/``, plain GETs beside."""

    def __init__(
        self,
        hub: Hub,
        endpoints: Endpoints,
        host: str,
        port: int,
        *,
        allowed_origins: list[str] | None = None,
        max_message_bytes: int = 64 * 1024,
        max_buffer_bytes: int = 1024 * 1024,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        guard: Guard | None = None,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        self.hub = hub
        self.guard = guard or Guard()
        self.ssl = ssl
        self.endpoints = endpoints
        self.host = host
        self.requested_port = port
        self.allowed_origins = allowed_origins
        self.max_message_bytes = max_message_bytes
        self.max_buffer_bytes = max_buffer_bytes
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> WebSocketServer:
        self._server = await serve(
            self._handler,
            self.host,
            self.requested_port,
            process_request=self._process_request,
            max_size=self.max_message_bytes,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
            logger=logging.getLogger("chatkit.websockets"),
            ssl=self.ssl,
            open_timeout=self.guard.limits.head_timeout,  # the whole handshake, not per read
            backlog=self.guard.limits.backlog,  # bounds the accept burst (see Limits.backlog)
            create_connection=_limited_connection(
                self.guard.connections["ws"], self.guard.limits.retry_after_s
            ),
        )
        return self

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return self._server.sockets[0].getsockname()[1]

    def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.server.close()

    async def close(self) -> None:
        """Close every connection with 1001 (going away), then end the helper tasks."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a helper coroutine owned by the server (cancelled and awaited on close)."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- handshake and plain HTTP --------------------------------------------

    async def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        try:
            return await self._check_request(ws, request)
        except REFUSALS as exc:
            return self._refused(ws, exc, request.path)
        except ProtocolError as exc:  # a bad name in ?user=
            exc.status = 400  # type: ignore[attr-defined]
            return self._refused(ws, exc, request.path)

    async def _check_request(self, ws: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path)
        origin = request.headers.get("Origin")
        headers = {k.lower(): v for k, v in request.headers.raw_items()}
        query = parse_qs(path.query)
        peer = ws.remote_address
        address = str(peer[0]) if peer else ""
        guard = self.guard
        guard.origins.check(origin, headers.get("host"))  # one policy for every route
        try:
            chat = protocol.parse_chat_path(request.path)
        except ProtocolError as exc:
            if exc.code == "bad_session_id":
                return self._refuse(ws, 404, "unknown path", request.path)
            raise  # 400 with the protocol's code (bad_user, reserved_name, bad_field)
        if chat is not None:
            admitted = guard.admit(headers, query, address)
            guard.rate(guard.handshakes, admitted, "connections")
            user = guard.name(admitted, chat.user)
            guard.new_room(admitted, chat.session_id in self.hub.rooms)
            ws.chat_path = chat  # type: ignore[attr-defined]
            ws.admitted = admitted  # type: ignore[attr-defined]
            ws.chat_user = user  # type: ignore[attr-defined]
            return None  # go on with the WebSocket handshake
        if HISTORY_PATH.fullmatch(path.path) is not None:
            guard.admit(headers, query, address)
        answer = await self.endpoints.get(
            path.path, path.query, origin, page=True, same_origin=headers.get(SAME_ORIGIN_HEADER) == "1"
        )
        if answer is not None:
            if answer.headers and answer.headers[0][1].startswith("text/html"):
                answer = HTTPResponse(
                    answer.status, answer.headers + guard.page_headers(headers.get("host")), answer.body
                )
            return _to_websockets(answer)
        return self._refuse(ws, 404, "unknown path", request.path)

    def _refused(self, ws: ServerConnection, exc: ChatkitError, path: str) -> Response:
        status = getattr(exc, "status", 400)
        logger.warning("refused %s %s from %s: %s", status, redact(path), ws.remote_address, exc.code)
        return _to_websockets(refusal_response(exc))

    def _refuse(self, ws: ServerConnection, status: int, reason: str, path: str) -> Response:
        logger.warning("refused %s %s from %s: %s", status, redact(path), ws.remote_address, reason)
        return _to_websockets(error_response(status, http.HTTPStatus(status).name.lower(), reason))

    # -- connections ---------------------------------------------------------

    async def _handler(self, ws: ServerConnection) -> None:
        chat: protocol.ChatPath = ws.chat_path  # type: ignore[attr-defined]
        admitted: Admitted = ws.admitted  # type: ignore[attr-defined]
        user = ws.chat_user or self.hub.next_guest()  # type: ignore[attr-defined]
        sink = WebSocketSink(ws, self.max_buffer_bytes, self)
        try:
            member = await self.hub.join(
                chat.session_id, user, sink, after=chat.after, presence_batch=chat.presence_batch
            )
        except ChatkitError as exc:  # the store failed: a server fault, try again later (not 1011)
            logger.error("join room=%s user=%s failed: %s", chat.session_id, user, exc)
            await ws.close(1013, exc.code)
            return
        max_text = self.hub.config.max_text
        try:
            async for raw in ws:
                try:
                    if not isinstance(raw, str):  # the protocol is JSON in text frames only
                        raise ProtocolError(
                            "frames must be text (UTF-8 JSON), not binary", code="binary_frame"
                        )
                    frame = protocol.decode(raw, max_text=max_text)
                except ProtocolError as exc:
                    self.hub.refuse(member, exc)
                    continue
                refusal = self._forbidden(member, admitted, frame)
                if refusal is not None:
                    member.send(refusal)
                    continue
                if isinstance(frame, protocol.Delete):
                    if not await self.hub.delete(chat.session_id, frame.message_id, member.user):
                        member.send(protocol.error_frame("unknown_message", "no such message in this room"))
                    continue
                await self.hub.handle(member, frame)
        except ConnectionClosed as exc:
            if (
                exc.rcvd is not None
                and exc.rcvd.code == 1009
                or (exc.sent is not None and exc.sent.code == 1009)
            ):
                logger.warning("closed %s: frame over %d bytes", ws.remote_address, self.max_message_bytes)
        finally:
            self.hub.leave(member)

    def _forbidden(
        self, member: Member, admitted: Admitted, frame: protocol.ClientFrame
    ) -> dict[str, Any] | None:
        """The ``error`` frame refusing what this caller may not do, or ``None``.

        Messages are rate-limited on the caller's token (or address), shared with
        ``POST``; a student may stop only the reply to their own message.
        """
        if isinstance(frame, protocol.SendMessage):
            try:
                self.guard.rate(self.guard.messages, admitted, "messages")
            except ChatkitError as exc:
                return protocol.error_frame(exc.code, exc.message)
        if isinstance(frame, protocol.Delete) and not admitted.is_teacher:
            logger.info("refused delete room=%s user=%s: not a teacher", member.room.session_id, member.user)
            return protocol.error_frame("forbidden", "only a teacher can delete messages")
        if isinstance(frame, protocol.Stop) and not admitted.is_teacher:
            active = member.room.active
            if active is not None and active.sender != member.user:
                logger.info(
                    "refused stop room=%s user=%s: not their reply", member.room.session_id, member.user
                )
                return protocol.error_frame(
                    "forbidden", "only a teacher can stop the reply to someone else's message"
                )
        return None
