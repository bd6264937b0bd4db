"""300 slow connections to either port do not lock a normal client out, under a
256-descriptor limit (macOS's default): ``chatkit serve`` runs in a subprocess with
``RLIMIT_NOFILE`` 256; the flood comes from 127.0.0.2, the normal client from 127.0.0.1.

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

from .test_chaos import free_port

T = 20.0  # generous: the machine is shared and loaded
FLOOD = 300


def limit_descriptors() -> None:  # runs in the child before exec
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


async def flood(port: int, held: list[asyncio.StreamWriter]) -> int:
    """Open ``FLOOD`` connections from 127.0.0.2 that send half a request head and stop."""
    opened = 0
    for _ in range(FLOOD):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
        except OSError:
            continue
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # ... and never more
        held.append(writer)
        opened += 1
    return opened


@pytest.mark.timeout(180)
async def test_300_slow_connections_to_each_port_do_not_lock_a_normal_client_out(tmp_path):
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
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
        preexec_fn=limit_descriptors,
    )
    held: list[asyncio.StreamWriter] = []
    try:
        banner = ""
        async with asyncio.timeout(T):
            while "Press Ctrl+C" not in banner:
                banner += (await proc.stdout.readline()).decode()
        opened = await flood(ws_port, held) + await flood(http_port, held)
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
            f"\nflood: {opened} of {2 * FLOOD} slow connections opened; normal client: "
            f"WebSocket {ws_s * 1000:.0f} ms, HTTP {http_s * 1000:.0f} ms"
        )
        assert hello["type"] == "connection" and health.status_code == 200
        assert ws_s < T and http_s < T
        assert proc.returncode is None  # the server is still up
    finally:
        for writer in held:
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
