"""Shared fixtures: real servers on free ports, real SQLite files, real clients."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from chatkit import ChatServer
from chatkit.llm import EchoStreamer

TIMEOUT = 10.0
"""The one time limit of the tests: every wait for an event gives up after it (or a multiple of it)."""


class Peer:
    """A raw WebSocket client speaking the wire protocol, for tests."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            frame = json.loads(await self.ws.recv())
        self.seen.append(frame)
        return frame

    async def until(self, kind: str, timeout: float = TIMEOUT, **match: Any) -> dict[str, Any]:
        """Read frames until one of type ``kind`` (and matching fields) arrives."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv(timeout)
                if frame["type"] == kind and all(frame.get(k) == v for k, v in match.items()):
                    return frame

    async def settle(self) -> list[dict[str, Any]]:
        """Every frame the server sent before it answered a ``ping`` now (the ``pong`` left out).

        The server handles a connection's frames in order and writes in order, so
        the ``pong`` is an ordering point: whatever the server did for earlier
        frames has arrived by then. Use it to check that nothing else came.
        """
        await self.send({"type": "ping"})
        got = []
        while (frame := await self.recv())["type"] != "pong":
            got.append(frame)
        return got


async def until_model(predicate: Callable[[], bool], *panes: Any, timeout: float = TIMEOUT) -> None:
    """Wait until ``predicate()`` holds, checking it again at each change of the panes' models.

    A :class:`~chatkit.widgets.ChatModel` is changed by assignment only, so every
    change notifies its observers: no polling, no sleeps.
    """
    changed = asyncio.Event()

    def wake(_change: Any) -> None:
        changed.set()

    for pane in panes:
        pane.model.observe(wake)
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await changed.wait()
                changed.clear()
    finally:
        for pane in panes:
            pane.model.unobserve(wake)


@asynccontextmanager
async def peer(url: str, **kwargs: Any) -> AsyncIterator[Peer]:
    async with connect(url, proxy=None, **kwargs) as ws:
        yield Peer(ws)


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / "chat.db")


@pytest.fixture
async def server(db_path) -> AsyncIterator[ChatServer]:
    async with ChatServer(port=0, db=db_path, streamer=EchoStreamer(), http_port=-1) as srv:
        yield srv


@pytest.fixture
async def servers(db_path):
    """Start servers with options (echo replies, no HTTP port by default); all stopped at the end."""
    started: list[ChatServer] = []

    async def factory(**options: Any) -> ChatServer:
        options.setdefault("port", 0)
        options.setdefault("db", db_path)
        options.setdefault("http_port", -1)
        if "streamer" not in options and "llm" not in options:
            options["streamer"] = EchoStreamer()
        srv = await ChatServer(**options).start()
        started.append(srv)
        return srv

    yield factory
    for srv in started:
        await srv.stop()


# -- real engines (tests/services.py): Redis, PostgreSQL, nginx -------------------


@pytest.fixture
def redis_service():
    """A fresh ``redis-server`` (no persistence) on a free port; ``.restart()`` wipes it."""
    from .services import RedisService

    service = RedisService()
    try:
        yield service.start()
    finally:
        service.stop()


@pytest.fixture
def chatkit_serve():
    """Start ``chatkit serve`` processes: ``proc = await chatkit_serve("--db", db, …, http=True)``
    (``port=``/``http_port=``: given ports; ``http``: an SSE/HTTP server on a free port;
    ``log``: a file its stderr is appended to).

    Each one runs in a process group of its own and dies with the test run; every
    process started is stopped (its whole group) at the end of the test, whether it
    passed, failed or timed out — also one whose start-up failed.
    """
    from .services import ChatkitProcess, free_port

    started: list[ChatkitProcess] = []

    async def start(
        *options: str,
        http: bool = False,
        port: int | None = None,
        http_port: int | None = None,
        log: str | None = None,
    ) -> ChatkitProcess:
        process = ChatkitProcess(list(options), log=log)
        if port is not None:
            process.port = port
        if http or http_port is not None:
            process.http_port = http_port or free_port()
        started.append(process.launch())  # forked from the test's thread, registered before waiting
        await asyncio.to_thread(process.wait_ready)
        return process

    try:
        yield start
    finally:
        for process in started:
            process.stop()


@pytest.fixture(scope="session")
def postgres_cluster():
    """One throw-away PostgreSQL 15 cluster for the session (started on first use)."""
    from .services import PostgresService

    service = PostgresService()
    try:
        yield service.start()
    finally:
        service.stop()


@pytest.fixture
async def pg_dsn(postgres_cluster) -> str:
    """A fresh, empty PostgreSQL database for one test."""
    return await postgres_cluster.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
async def store_url(request, tmp_path) -> str:
    """The ``--db`` of each store: an SQLite file, and a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "store.db")
    return await request.getfixturevalue("postgres_cluster").new_database()
