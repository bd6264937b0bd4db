"""300 slow connections to either port do not lock a normal client out, under a
256-descriptor limit (macOS's default): ``chatkit serve`` runs in a subprocess with
``RLIMIT_NOFILE`` 256 (so at most 96 connections per port); the normal client comes from
127.0.0.1.

- From one address (127.0.0.2): the per-address cap refuses the flood at once.
- From 30 addresses (127.0.0.10-39, 10 each: no address reaches its cap of 24): the total
  cap fills, and each new connection takes the place of the oldest one still without a
  request head. The head deadline is set far beyond the test's limits, so the normal
  client can only get in by that eviction, not by a deadline freeing a slot.

The times are measured and printed (``-s``), not asserted beyond a generous bound: the
connection must succeed.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time

import httpx
import pytest
from websockets.asyncio.client import connect

from .conftest import TIMEOUT
from .services import free_port

T = 2 * TIMEOUT  # generous: the machine is shared and loaded
FLOOD = 300


def limit_descriptors() -> None:  # runs in the child before exec
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


ONE_ADDRESS = ["127.0.0.2"]
MANY_ADDRESSES = [f"127.0.0.{i}" for i in range(10, 40)]  # Linux routes all of 127/8 to loopback
PER_PORT = (256 - 64) // 2  # the server's default cap per port under this limit


async def flood(
    port: int, sources: list[str], held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
) -> int:
    """Open ``FLOOD`` connections, from ``sources`` in turn, that send half a request head and stop."""
    opened = 0
    for i in range(FLOOD):
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(sources[i % len(sources)], 0)
            )
        except OSError:
            continue
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # ... and never more
        held.append((reader, writer))
        opened += 1
    return opened


async def closed_by_server(held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]], count: int) -> None:
    """Wait until the server has closed ``count`` of the ``held`` connections (refused or evicted)."""
    reads = [asyncio.ensure_future(reader.read()) for reader, _ in held]
    try:
        for closed, read in enumerate(asyncio.as_completed(reads), 1):
            try:
                await read
            except ConnectionError:
                pass
            if closed >= count:
                return
    finally:
        for read in reads:
            read.cancel()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("sources", [ONE_ADDRESS, MANY_ADDRESSES], ids=["one-address", "30-addresses"])
async def test_300_slow_connections_to_each_port_do_not_lock_a_normal_client_out(tmp_path, sources):
    ws_port, http_port = free_port(), free_port()
    log = open(tmp_path / "server.log", "w")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chatkit",
        "serve",
        "--port",
        str(ws_port),
        "--http-port",
        str(http_port),
        "--db",
        str(tmp_path / "flood.db"),
        "--llm",
        "echo",
        "--head-timeout",
        str(6 * T),  # no slot is freed by the deadline while the test runs
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
        preexec_fn=limit_descriptors,
    )
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        banner = ""
        async with asyncio.timeout(T):
            while "Press Ctrl+C" not in banner:
                banner += (await proc.stdout.readline()).decode()
        opened = await flood(ws_port, sources, held) + await flood(http_port, sources, held)
        # Each port holds at most PER_PORT: the server has closed (refused or evicted) the rest.
        async with asyncio.timeout(T):
            await closed_by_server(held, opened - 2 * PER_PORT)
        # The normal client: a WebSocket handshake and a GET, each timed.
        started = time.monotonic()
        async with connect(
            f"ws://127.0.0.1:{ws_port}/ws/chat/flood/?user=ann", proxy=None, open_timeout=T
        ) as ws:
            hello = json.loads(await asyncio.wait_for(ws.recv(), T))
        ws_s = time.monotonic() - started
        started = time.monotonic()
        async with httpx.AsyncClient(trust_env=False, timeout=T) as client:
            health = await client.get(f"http://127.0.0.1:{http_port}/health")
        http_s = time.monotonic() - started
        print(
            f"\nflood from {len(sources)} address(es): {opened} of {2 * FLOOD} slow connections opened; normal client: "
            f"WebSocket {ws_s * 1000:.0f} ms, HTTP {http_s * 1000:.0f} ms"
        )
        assert hello["type"] == "connection" and health.status_code == 200
        assert ws_s < T and http_s < T
        assert proc.returncode is None  # the server is still up
    finally:
        for _, writer in held:
            writer.close()
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), T)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()
    size = (tmp_path / "server.log").stat().st_size
    print(f"server log: {size} bytes")
    assert size < 200_000  # no log flood (EMFILE loops wrote 45 MB in 25 s before)
