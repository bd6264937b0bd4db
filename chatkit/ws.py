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
from typing import Any, Coroutine, Sequence
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from . import protocol
from .endpoints import Endpoints, HTTPResponse, error_response
from .errors import ProtocolError
from .hub import Hub
from .sinks import Outgoing, Sink

__all__ = ["WebSocketServer", "WebSocketSink"]

logger = logging.getLogger("chatkit.server")


class WebSocketSink(Sink):
    """A hub sink writing to one WebSocket without awaiting.

    Frames go straight into the connection's transport buffer. When that buffer
    holds more than ``limit`` bytes the client is not keeping up: it is closed
    with 1013 (try again later) so it cannot slow the room or eat memory; it
    reconnects and resumes by id, losing nothing.
    """

    __slots__ = ("ws", "limit", "closing", "_owner")

    def __init__(self, ws: ServerConnection, limit: int, owner: "WebSocketServer") -> None:
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
        if self._writable():
            broadcast((self.ws,), frame.text.encode("utf-8"), text=True)

    @classmethod
    def send_many(cls, sinks: "Sequence[WebSocketSink]", frame: Outgoing) -> None:
        """One frame to many connections: encoded once, one ``websockets.broadcast`` call."""
        broadcast([s.ws for s in sinks if s._writable()], frame.text.encode("utf-8"), text=True)


def _to_websockets(response: HTTPResponse) -> Response:
    return Response(response.status, response.reason, Headers(response.headers), response.body)


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
    ) -> None:
        self.hub = hub
        self.endpoints = endpoints
        self.host = host
        self.requested_port = port
        self.allowed_origins = allowed_origins
        self.max_message_bytes = max_message_bytes
        self.max_buffer_bytes = max_buffer_bytes
        self.ping_interval = ping_interval
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> "WebSocketServer":
        self._server = await serve(
            self._handler,
            self.host,
            self.requested_port,
            process_request=self._process_request,
            max_size=self.max_message_bytes,
            ping_interval=self.ping_interval,
            logger=logging.getLogger("chatkit.websockets"),
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
        path = urlsplit(request.path)
        origin = request.headers.get("Origin")
        try:
            chat = protocol.parse_chat_path(request.path)
        except ProtocolError as exc:
            if exc.code == "bad_session_id":
                return self._refuse(ws, 404, "unknown path", request.path)
            return self._refuse(ws, 400, exc.message, request.path)
        if chat is not None:
            allowed = self.allowed_origins
            if allowed is not None and origin is not None and origin not in allowed:
                return self._refuse(ws, 403, f"origin {origin!r} is not allowed", request.path)
            ws.chat_path = chat  # type: ignore[attr-defined]
            return None  # go on with the WebSocket handshake
        answer = await self.endpoints.get(path.path, path.query, origin, page=True)
        if answer is not None:
            return _to_websockets(answer)
        return self._refuse(ws, 404, "unknown path", request.path)

    def _refuse(self, ws: ServerConnection, status: int, reason: str, path: str) -> Response:
        logger.warning("refused %s %s from %s: %s", status, path, ws.remote_address, reason)
        return _to_websockets(error_response(status, http.HTTPStatus(status).name.lower(), reason))

    # -- connections ---------------------------------------------------------

    async def _handler(self, ws: ServerConnection) -> None:
        chat: protocol.ChatPath = ws.chat_path  # type: ignore[attr-defined]
        user = chat.user or self.hub.next_guest()
        sink = WebSocketSink(ws, self.max_buffer_bytes, self)
        member = await self.hub.join(chat.session_id, user, sink, after=chat.after)
        max_text = self.hub.config.max_text
        try:
            async for raw in ws:
                try:
                    frame = protocol.decode(raw, max_text=max_text)
                except ProtocolError as exc:
                    logger.info(
                        "bad frame room=%s user=%s code=%s: %s",
                        chat.session_id, user, exc.code, exc.message,
                    )
                    member.send(protocol.error_frame(exc.code, exc.message))
                    continue
                await self.hub.handle(member, frame)
        except ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code == 1009 or (
                exc.sent is not None and exc.sent.code == 1009
            ):
                logger.warning("closed %s: frame over %d bytes", ws.remote_address, self.max_message_bytes)
        finally:
            self.hub.leave(member)
