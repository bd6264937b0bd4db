"""The chatkit server as one object: :class:`ChatServer` assembles the parts.

``async with ChatServer() as server:`` opens the store, builds the hub, and
starts the WebSocket server (:mod:`chatkit.ws`) and the SSE/HTTP server
(:mod:`chatkit.http`) on free ports in the running event loop — a notebook
cell or a test — and stops them on exit. Each part gets what it uses passed
in; none of them knows this class.
"""

from __future__ import annotations

import logging
import os
import ssl as ssl_module
from dataclasses import dataclass, field, replace
from typing import Any, Self
from urllib.parse import quote

from . import protocol
from .auth import Authenticator
from .endpoints import Endpoints
from .guard import Guard
from .http import HTTPServer
from .hub import Hub, HubConfig
from .limits import Limits
from .llm import Streamer, make_streamer, resolve_backend
from .origins import OriginPolicy
from .storage import ChatStore, open_store
from .ws import WebSocketServer, WebSocketSink

__all__ = ["ChatServer", "ServerConfig", "WebSocketSink"]

logger = logging.getLogger("chatkit.server")


def ping_interval_from_env(environ: dict[str, str] | None = None) -> float | None:
    """The WebSocket keepalive: ``CHATKIT_PING_INTERVAL`` seconds (``0``/``off``: none), default 20 s.

    Tests and the course's human-pace check shorten it to make keepalive pings arrive often."""
    raw = (os.environ if environ is None else environ).get("CHATKIT_PING_INTERVAL", "").strip()
    if not raw:
        return 20.0
    if raw.lower() in ("0", "off", "none"):
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"CHATKIT_PING_INTERVAL must be seconds or 'off', not {raw!r}") from None
    if value <= 0:
        return None
    return value


@dataclass
class ServerConfig:
    """Everything ``chatkit serve`` can set. ``port=0`` picks a free port."""

    host: str = "127.0.0.1"
    port: int = 8765
    http_port: int | None = None
    """Port of the SSE/HTTP server: ``None`` = WebSocket port + 1 (free if port is 0), -1 = off."""
    db: str = "chatkit.db"
    store_writer: str = "auto"
    """SQLite statements on the store's own thread (``thread``) or on the event loop (``loop``);
    ``auto``: ``loop`` when this process owns the file, ``thread`` with a broker (other processes
    take the file's write lock, and waiting for it must not stall the loop). The loop costs about
    half the CPU per store call (``benchmarks/store_writers.py``)."""
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
    echo_schedule: bool = False
    pace_tick_ms: float = 2.0
    """Paced streamers (the offline tutor, the echo with a delay) wake on a shared tick of this many ms
    (``0``: a timer per piece) — :class:`chatkit.pacing.SharedTicks`."""
    hub: HubConfig = field(default_factory=HubConfig)
    ping_interval: float | None = field(default_factory=ping_interval_from_env)
    """Seconds between keepalive pings (``None``: off); default from ``CHATKIT_PING_INTERVAL``, else 20."""
    ping_timeout: float | None = 20.0
    """Seconds to wait for the pong before closing the connection with 1011 (``None``: wait forever)."""
    auth: Authenticator | None = None
    """Sign-in policy (``None``: no sign-in). See :mod:`chatkit.auth`."""
    ssl: ssl_module.SSLContext | None = None
    """TLS for both ports (``--certfile``/``--keyfile``)."""
    limits: Limits = field(default_factory=Limits)
    """Connection caps, deadlines and rate limits of both ports. See :mod:`chatkit.limits`."""
    broker: str | None = None
    """``redis://HOST:PORT/DB``: share rooms with the other processes on this broker (:mod:`chatkit.cluster`)."""
    broker_heartbeat: float = 2.0
    """Presence refresh period; members of a dead process expire after 3 heartbeats, a dead reply lease too."""


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
        cfg = self.config
        self.guard = Guard(
            cfg.auth or Authenticator(),
            OriginPolicy.parse(cfg.allowed_origins, cfg.host),
            cfg.limits,
            message_rate=cfg.hub.rate_limit,
            message_burst=cfg.hub.rate_burst,
        )
        """Sign-in, origin policy and limits of both ports."""
        self._streamer = streamer
        self.streamer: Streamer | None = None
        self.store: ChatStore | None = None
        self.hub: Hub | None = None
        self.endpoints: Endpoints | None = None
        self.ws: WebSocketServer | None = None
        self.http: HTTPServer | None = None
        self.cluster: Any = None
        """The :class:`~chatkit.cluster.Cluster` when started with a broker."""
        self.backend = ""

    # -- life cycle ----------------------------------------------------------

    def _store_writer(self) -> str:
        """``store_writer`` with ``auto`` resolved (see :class:`ServerConfig`)."""
        writer = self.config.store_writer
        if writer == "auto":
            return "thread" if self.config.broker else "loop"
        return writer

    async def start(self) -> ChatServer:
        cfg = self.config
        self.backend = self._streamer.name if self._streamer else resolve_backend(cfg.llm)
        self.streamer = self._streamer or make_streamer(
            cfg.llm,
            first_token_ms=cfg.first_token_ms,
            tokens_per_s=cfg.tokens_per_s,
            echo_delay_ms=cfg.echo_delay_ms,
            echo_chunks=cfg.echo_chunks,
            echo_stamp=cfg.echo_stamp,
            echo_schedule=cfg.echo_schedule,
            pace_tick_ms=cfg.pace_tick_ms,
        )
        # With a broker, replies left streaming belong to live processes: the reply lease decides.
        store = self.store = await open_store(cfg.db, recover=cfg.broker is None, writer=self._store_writer())
        self.hub = Hub(store, self.streamer, cfg.hub)
        if cfg.broker:
            from .broker import Broker, BrokerConfig
            from .cluster import Cluster

            h = cfg.broker_heartbeat
            broker = Broker(cfg.broker, config=BrokerConfig(heartbeat=h, presence_ttl=3 * h, lease_ttl=3 * h))
            try:
                self.cluster = await Cluster(self.hub, broker).start()
            except BaseException:
                await self.stop()
                raise
        self.endpoints = Endpoints(
            store, self.backend, allowed_origins=cfg.allowed_origins, max_text=cfg.hub.max_text
        )
        self.endpoints.origins = self.guard.origins
        self.endpoints.max_upload_bytes = cfg.limits.max_upload_bytes
        self.endpoints.sign_in = (
            "join_code" if self.guard.auth.join_code else ("token" if self.guard.sign_in else None)
        )
        try:
            self.ws = await WebSocketServer(
                self.hub,
                self.endpoints,
                cfg.host,
                cfg.port,
                allowed_origins=cfg.allowed_origins,
                max_message_bytes=cfg.max_message_bytes,
                max_buffer_bytes=cfg.max_buffer_bytes,
                ping_interval=cfg.ping_interval,
                ping_timeout=cfg.ping_timeout,
                guard=self.guard,
                ssl=cfg.ssl,
            ).start()
            if cfg.http_port != -1:
                http_port = cfg.http_port
                if http_port is None:
                    http_port = 0 if cfg.port == 0 else self.port + 1
                self.http = await HTTPServer(
                    self.hub,
                    self.streamer,
                    self.endpoints,
                    cfg.host,
                    http_port,
                    backend=self.backend,
                    guard=self.guard,
                    ssl=cfg.ssl,
                ).start()
                self.endpoints.http_port = self.http.port
            self.guard.origins.set_ports([self.port, self.http_port])
        except BaseException:
            await self.stop()
            raise
        logger.info("chatkit serving %s (llm: %s)", self.url, self.backend)
        return self

    async def stop(self) -> None:
        """Graceful shutdown: stop accepting, end replies, close sockets with 1001, close the DB."""
        if self.ws is not None:
            self.ws.stop_accepting()
        if self.http is not None:
            await self.http.stop_accepting()
        if self.hub is not None:
            await self.hub.close()  # in-flight replies stored as "interrupted"
        if self.cluster is not None:
            await self.cluster.close()  # after the replies' last events are published
            self.cluster = None
        if self.ws is not None:
            await self.ws.close()  # 1001 going away to every client
            self.ws = None
        if self.http is not None:
            await self.http.close()
            self.http = None
        if self.store is not None:
            await self.store.close()
            self.store = None
        aclose = getattr(self._streamer is None and self.streamer, "aclose", None)
        if aclose is not None:
            await aclose()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- addresses -----------------------------------------------------------

    @property
    def port(self) -> int:
        assert self.ws is not None, "server not started"
        return self.ws.port

    @property
    def http_port(self) -> int | None:
        return self.http.port if self.http is not None else None

    @property
    def scheme(self) -> str:
        """``https`` with ``--certfile`` (pages, SSE, ``/v1``), else ``http``."""
        return "https" if self.config.ssl is not None else "http"

    @property
    def url(self) -> str:
        """The chat page, e.g. ``http://127.0.0.1:8765/``."""
        return f"{self.scheme}://{self.config.host}:{self.port}/"

    @property
    def http_url(self) -> str | None:
        return f"{self.scheme}://{self.config.host}:{self.http_port}/" if self.http is not None else None

    def token(self, name: str, role: str = "student", ttl: str | int = "8h") -> str:
        """A sign-in token for ``name`` signed with this server's secret (sign-in must be on)."""
        signer = self.guard.auth.signer
        if signer is None:
            raise RuntimeError("sign-in is off: start the server with a join code or a secret")
        return signer.issue(name, role, ttl)  # type: ignore[arg-type]

    def ws_url(self, session_id: str, *, user: str | None = None, after: int | None = None) -> str:
        """The WebSocket URL of a room, e.g. ``ws://127.0.0.1:8765/ws/chat/demo/?user=ann``."""
        query = []
        if user is not None:
            query.append(f"user={quote(user)}")
        if after is not None:
            query.append(f"after={after}")
        suffix = "?" + "&".join(query) if query else ""
        ws_scheme = "wss" if self.config.ssl is not None else "ws"
        room = protocol.session_id_to_path(session_id)
        return f"{ws_scheme}://{self.config.host}:{self.port}/ws/chat/{room}/{suffix}"

    def next_guest(self) -> str:
        assert self.hub is not None, "server not started"
        return self.hub.next_guest()

    def page_config(self) -> dict[str, Any]:
        """What the browser page needs to know (served as ``/config.json``)."""
        assert self.endpoints is not None, "server not started"
        return self.endpoints.page_config()
