"""A TCP proxy on loopback that can cut connections, to simulate network drops."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    keep: Callable[[bytes], bool] = lambda data: True,
) -> None:
    """Copy bytes until EOF (or until ``keep(data)`` says no), then abort the writer."""
    try:
        while data := await reader.read(65536):
            if not keep(data):
                return
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.transport.abort()


class LoopbackProxy:
    """A TCP server on 127.0.0.1 (a free port) whose connection handlers it owns and cancels on exit."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task] = set()

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await self.handle(reader, writer)
        finally:
            self.tasks.discard(task)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class CuttingProxy(LoopbackProxy):
    """Forward 127.0.0.1:<port> to a target port; cut connections on demand.

    ``cut_on(marker)`` arms a one-shot trap: the first server-to-client packet
    containing ``marker`` is *not* forwarded and that connection is cut — the
    server has committed and broadcast, the client never sees it.
    """

    def __init__(self, target_port: int) -> None:
        super().__init__()
        self.target_port = target_port
        self.pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self.marker: bytes | None = None
        self.cuts = 0

    async def __aexit__(self, *exc: object) -> None:
        self.cut_all()
        await super().__aexit__(*exc)

    def cut_on(self, marker: bytes) -> None:
        self.marker = marker

    def cut_all(self) -> None:
        for client_w, server_w in list(self.pairs):
            client_w.transport.abort()
            server_w.transport.abort()
        self.pairs.clear()
        self.cuts += 1

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.transport.abort()
            return
        pair = (client_w, server_w)
        self.pairs.add(pair)

        def unless_marked(data: bytes) -> bool:
            if self.marker is not None and self.marker in data:
                self.marker = None
                self.cuts += 1
                client_w.transport.abort()
                server_w.transport.abort()
                return False
            return True

        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(pipe(client_r, server_w))
                tg.create_task(pipe(server_r, client_w, unless_marked))
        finally:
            self.pairs.discard(pair)


class PrefixProxy(LoopbackProxy):
    """A tiny reverse proxy with jupyter-server-proxy's URL scheme: ``/proxy/<port>/<path>``
    is forwarded to ``127.0.0.1:<port>/<path>`` (HTTP and WebSocket upgrades alike).

    One request per connection: it adds ``Connection: close`` to plain HTTP requests.
    """

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[str] = []

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            head = await client_r.readuntil(b"\r\n\r\n")
            request_line, _, rest = head.partition(b"\r\n")
            method, target, version = request_line.split(b" ", 2)
            parts = target.split(b"/", 3)  # b"", b"proxy", b"<port>", b"<path>"
            if len(parts) < 3 or parts[1] != b"proxy" or not parts[2].isdigit():
                client_w.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                await client_w.drain()
                return
            port = int(parts[2])
            path = b"/" + (parts[3] if len(parts) > 3 else b"")
            self.requests.append(path.decode())
            if b"upgrade: websocket" not in rest.lower():
                rest = b"Connection: close\r\n" + b"\r\n".join(
                    line for line in rest.split(b"\r\n") if not line.lower().startswith(b"connection:")
                )
            server_r, server_w = await asyncio.open_connection("127.0.0.1", port)
            server_w.write(b" ".join([method, path, version]) + b"\r\n" + rest)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(pipe(client_r, server_w))
                tg.create_task(pipe(server_r, client_w))
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, asyncio.LimitOverrunError):
            pass
        finally:
            client_w.transport.abort()
