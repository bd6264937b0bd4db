"""The WebSocket chat server: ``websockets.asyncio.server`` in front of the hub.

This module is the I/O layer for WebSocket members. It checks the handshake
(path, origin, query), answers plain HTTP GETs through ``process_request``
(the chat page, ``/health``, message history), wraps each connection in a
:class:`WebSocketSink` and feeds decoded frames to the :class:`~chatkit.hub.Hub`.

:class:`ChatServer` is also the Python API: ``async with ChatServer() as
server:`` starts the WebSocket server (and the SSE/HTTP server) on free ports
in the running event loop — a notebook cell or a test — and stops it on exit.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
import re
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from . import protocol
from .errors import ProtocolError
from .hub import Hub, HubConfig
from .llm import Streamer, make_streamer, resolve_backend
from .store import Store

__all__ = ["ChatServer", "ServerConfig", "WebSocketSink", "history_response"]

logger = logging.getLogger("chatkit.server")

STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass
class ServerConfig:
    """Everything ``chatkit serve`` can set. ``port=0`` picks a free port."""

    host: str = "127.0.0.1"
    port: int = 8765
    http_port: int | None = None
    """Port of the SSE/HTTP server: ``None`` = WebSocket port + 1 (free if port is 0), -1 = off."""
    db: str = "chatkit.db"
    llm: str = "auto"
    allowed_origins: list[str] | None = None
    """Browser origins allowed to connect (``None``: any). Non-browser clients send none."""
    max_message_bytes: int = 64 * 1024
    """Frames larger than this close the connection with 1009."""
    max_buffer_bytes: int = 1024 * 1024
    """A member whose unsent output exceeds this is closed with 1013 (and resumes by id)."""
    first_token_ms: float = 300.0
    tokens_per_s: float = 30.0
    echo_delay_ms: float = 0.0
    echo_chunks: int | None = None
    echo_stamp: bool = False
    hub: HubConfig = field(default_factory=HubConfig)
    ping_interval: float | None = 20.0


def _response(
    status: int, body: bytes, content_type: str, extra: list[tuple[str, str]] | None = None
) -> Response:
    headers = Headers(
        [("Content-Type", content_type), ("Content-Length", str(len(body)))] + (extra or [])
    )
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


def json_response(status: int, payload: Any, extra: list[tuple[str, str]] | None = None) -> Response:
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    return _response(status, body, "application/json; charset=utf-8", extra)


def cors_headers(origin: str | None, allowed: list[str] | None) -> list[tuple[str, str]]:
    """CORS headers for a read-only JSON endpoint, limited to the allowed origins."""
    if origin is None:
        return []
    if allowed is None:
        return [("Access-Control-Allow-Origin", "*")]
    if origin in allowed:
        return [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")]
    return [("Vary", "Origin")]


HISTORY_PATH = re.compile(r"/api/chat/(?P<sid>[A-Za-z0-9_-]{1,64})/messages/?")
"""``/api/chat/<session_id>/messages``, served on the WebSocket port and on the HTTP server."""


async def history_response(store: Store, session_id: str, query: str) -> tuple[int, dict]:
    """``GET /api/chat/<id>/messages?before=&limit=`` as (status, JSON payload).

    Shared by the WebSocket port and the HTTP server.
    """
    params = parse_qs(query)
    try:
        before = int(params["before"][-1]) if params.get("before", [""])[-1] else None
        limit = int(params["limit"][-1]) if params.get("limit", [""])[-1] else 20
    except ValueError:
        return 400, protocol.error_frame("bad_field", "'before' and 'limit' must be integers")
    if limit < 1 or (before is not None and before < 1):
        return 400, protocol.error_frame("bad_field", "'before' and 'limit' must be positive")
    page, has_more = await store.history_page(session_id, before=before, limit=limit)
    return 200, {
        "session_id": session_id,
        "messages": [m.to_frame() for m in page],
        "has_more": has_more,
    }


class WebSocketSink:
    """A hub sink writing to one WebSocket without awaiting.

    Frames go straight into the connection's transport buffer. When that buffer
    holds more than ``limit`` bytes the client is not keeping up: it is closed
    with 1013 (try again later) so it cannot slow the room or eat memory; it
    reconnects and resumes by id, losing nothing.
    """

    __slots__ = ("ws", "limit", "closing", "_closer")

    def __init__(self, ws: ServerConnection, limit: int, closer: "ChatServer") -> None:
        self.ws = ws
        self.limit = limit
        self.closing = False
        self._closer = closer

    def _writable(self) -> bool:
        """False when closing; closes a slow consumer (1013) instead of buffering for it."""
        if self.closing:
            return False
        buffered = self.ws.transport.get_write_buffer_size()
        if buffered > self.limit:
            self.closing = True
            logger.warning("closing slow consumer %s: %d bytes unsent", self.ws.remote_address, buffered)
            self._closer._spawn(self.ws.close(1013, "slow consumer; reconnect and resume"))
            return False
        return True

    def send(self, data: str) -> None:
        if self._writable():
            broadcast((self.ws,), data.encode("utf-8"), text=True)

    @classmethod
    def send_many(cls, sinks: "list[WebSocketSink]", data: str) -> None:
        """One frame to many connections: encoded once, one ``websockets.broadcast`` call."""
        broadcast([s.ws for s in sinks if s._writable()], data.encode("utf-8"), text=True)


class ChatServer:
    """A chatkit server (WebSocket + SSE/HTTP) running in the current event loop.

    >>> async with ChatServer(port=0, db=":memory:", llm="echo") as server:  # doctest: +SKIP
    ...     print(server.ws_url("demo"))
    """

    def __init__(
        self,
        config: ServerConfig | None = None,
        *,
        streamer: Streamer | None = None,
        **overrides: Any,
    ) -> None:
        config = config or ServerConfig()
        hub_fields = {k: overrides.pop(k) for k in list(overrides) if hasattr(HubConfig, k)}
        if hub_fields:
            config = replace(config, hub=replace(config.hub, **hub_fields))
        self.config = replace(config, **overrides)
        self._streamer = streamer
        self.streamer: Streamer | None = None
        self.store: Store | None = None
        self.hub: Hub | None = None
        self._ws: Server | None = None
        self.http: Any = None
        self._tasks: set[asyncio.Task] = set()
        self._guest = 0
        self.backend = ""

    # -- life cycle ----------------------------------------------------------

    async def start(self) -> "ChatServer":
        cfg = self.config
        self.backend = self._streamer.name if self._streamer else resolve_backend(cfg.llm)
        self.streamer = self._streamer or make_streamer(
            cfg.llm,
            first_token_ms=cfg.first_token_ms,
            tokens_per_s=cfg.tokens_per_s,
            echo_delay_ms=cfg.echo_delay_ms,
            echo_chunks=cfg.echo_chunks,
            echo_stamp=cfg.echo_stamp,
        )
        self.store = await Store.open(cfg.db)
        self.hub = Hub(self.store, self.streamer, cfg.hub)
        try:
            self._ws = await serve(
                self._handler,
                cfg.host,
                cfg.port,
                process_request=self._process_request,
                max_size=cfg.max_message_bytes,
                ping_interval=cfg.ping_interval,
                logger=logging.getLogger("chatkit.websockets"),
            )
            if cfg.http_port != -1:
                from .http import HTTPServer

                http_port = cfg.http_port
                if http_port is None:
                    http_port = 0 if cfg.port == 0 else self.port + 1
                self.http = await HTTPServer(self, cfg.host, http_port).start()
        except BaseException:
            await self.stop()
            raise
        logger.info("chatkit serving %s (llm: %s)", self.url, self.backend)
        return self

    async def stop(self) -> None:
        """Graceful shutdown: stop accepting, end replies, close sockets with 1001, close the DB."""
        if self._ws is not None:
            self._ws.server.close()  # stop accepting new connections
        if self.http is not None:
            await self.http.stop_accepting()
        if self.hub is not None:
            await self.hub.close()  # in-flight replies stored as "interrupted"
        if self._ws is not None:
            self._ws.close()  # 1001 going away to every client
            await self._ws.wait_closed()
            self._ws = None
        if self.http is not None:
            await self.http.close()
            self.http = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.store is not None:
            await self.store.close()
            self.store = None
        aclose = getattr(self._streamer is None and self.streamer, "aclose", None)
        if aclose is not None:
            await aclose()

    async def __aenter__(self) -> "ChatServer":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _spawn(self, coro: Any) -> None:
        """Run a helper coroutine owned by the server (cancelled and awaited on stop)."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- addresses -----------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._ws is not None, "server not started"
        return self._ws.sockets[0].getsockname()[1]

    @property
    def http_port(self) -> int | None:
        return self.http.port if self.http is not None else None

    @property
    def url(self) -> str:
        """The chat page, e.g. ``http://127.0.0.1:8765/``."""
        return f"http://{self.config.host}:{self.port}/"

    @property
    def http_url(self) -> str | None:
        return f"http://{self.config.host}:{self.http_port}/" if self.http is not None else None

    def ws_url(self, session_id: str, *, user: str | None = None, after: int | None = None) -> str:
        """The WebSocket URL of a room, e.g. ``ws://127.0.0.1:8765/ws/chat/demo/?user=ann``."""
        query = []
        if user is not None:
            query.append(f"user={quote(user)}")
        if after is not None:
            query.append(f"after={after}")
        suffix = "?" + "&".join(query) if query else ""
        return f"ws://{self.config.host}:{self.port}/ws/chat/{session_id}/{suffix}"

    def next_guest(self) -> str:
        self._guest += 1
        return f"guest-{self._guest}"

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
            allowed = self.config.allowed_origins
            if allowed is not None and origin is not None and origin not in allowed:
                return self._refuse(ws, 403, f"origin {origin!r} is not allowed", request.path)
            ws.chat_path = chat  # type: ignore[attr-defined]
            return None  # go on with the WebSocket handshake
        if path.path == "/health":
            return json_response(200, {"status": "ok", "llm": self.backend})
        if (history := HISTORY_PATH.fullmatch(path.path)) is not None:
            assert self.store is not None
            status, payload = await history_response(self.store, history["sid"], path.query)
            return json_response(status, payload, cors_headers(origin, self.config.allowed_origins))
        if path.path == "/config.json":
            return json_response(200, self.page_config())
        static = self._static(path.path)
        if static is not None:
            return static
        return self._refuse(ws, 404, "unknown path", request.path)

    def _refuse(self, ws: ServerConnection, status: int, reason: str, path: str) -> Response:
        logger.warning("refused %s %s from %s: %s", status, path, ws.remote_address, reason)
        return json_response(status, protocol.error_frame(http.HTTPStatus(status).name.lower(), reason))

    def page_config(self) -> dict[str, Any]:
        """What the browser page needs to know: the SSE port, the backend, the protocol."""
        return {
            "protocol": protocol.PROTOCOL_VERSION,
            "http_port": self.http_port,
            "llm": self.backend,
            "max_text": self.config.hub.max_text,
        }

    def _static(self, path: str) -> Response | None:
        name = "index.html" if path in ("/", "/index.html") else path.lstrip("/")
        if "/" in name or name.startswith("."):
            return None
        suffix = Path(name).suffix
        if suffix not in STATIC_TYPES:
            return None
        resource = resources.files("chatkit.web").joinpath(name)
        if not resource.is_file():
            return None
        return _response(200, resource.read_bytes(), STATIC_TYPES[suffix], [("Cache-Control", "no-cache")])

    # -- connections ---------------------------------------------------------

    async def _handler(self, ws: ServerConnection) -> None:
        assert self.hub is not None
        chat: protocol.ChatPath = ws.chat_path  # type: ignore[attr-defined]
        user = chat.user or self.next_guest()
        sink = WebSocketSink(ws, self.config.max_buffer_bytes, self)
        member = await self.hub.join(chat.session_id, user, sink, after=chat.after)
        max_text = self.config.hub.max_text
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
                logger.warning("closed %s: frame over %d bytes", ws.remote_address, self.config.max_message_bytes)
        finally:
            self.hub.leave(member)
