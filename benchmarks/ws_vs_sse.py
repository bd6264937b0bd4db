"""WebSocket vs Server-Sent Events: the same conversation over each transport, in one run.

    python benchmarks/ws_vs_sse.py                    # 20 messages x 20 chunks to 10 clients
    python benchmarks/ws_vs_sse.py --messages 50 --clients 50

One ``chatkit serve`` process (echo replies of M time-stamped chunks). For each
transport — WebSocket without compression, WebSocket with permessage-deflate,
SSE — K clients join a room through a byte-counting proxy, one sender posts N
messages (closed loop), and the report gives: chunk latency p50/p99 (streamer
yield → client receipt), chunks per second delivered, bytes on the wire per
chunk delivered (headers and framing included), time to first event for a new
client, and catch-up time: a client away while 20 messages were posted
reconnects with ``?after=`` / ``Last-Event-ID`` and receives them all.
Writes ``results/ws_vs_sse.json``, which notebook 06 plots.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import httpx
from httpx_sse import aconnect_sse
from websockets.asyncio.client import connect

from common import CountingProxy, ServerProcess, percentile, print_table, raise_nofile, write_results


class Collector:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.chunks = 0
        self.completes = 0
        self.ids: list[int] = []
        self.changed = asyncio.Event()

    def frame(self, frame: dict) -> None:
        now = time.monotonic()
        if frame["type"] == "ai_chunk" and not frame.get("snapshot"):
            self.chunks += 1
            self.latencies.append(now - float(frame["chunk"]))
        elif frame["type"] == "ai_complete":
            self.completes += 1
        if frame["type"] in ("message", "ai_complete"):
            self.ids.append(frame["id"])
        self.changed.set()


async def ws_client(url: str, col: Collector, compression: str | None, ready: asyncio.Event | None = None) -> None:
    async with connect(url, proxy=None, compression=compression, max_queue=None, ping_interval=None) as ws:
        async for raw in ws:
            frame = json.loads(raw)
            if frame["type"] == "connection" and ready is not None:
                ready.set()
            col.frame(frame)


async def sse_client(http: httpx.AsyncClient, url: str, col: Collector, ready: asyncio.Event | None = None,
                     last_event_id: str | None = None) -> None:
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    async with aconnect_sse(http, "GET", url, headers=headers) as source:
        async for sse in source.aiter_sse():
            if not sse.data:
                continue
            frame = json.loads(sse.data)
            if frame["type"] == "connection" and ready is not None:
                ready.set()
            col.frame(frame)


async def wait_for(predicate, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.002)


async def run(server: ServerProcess, http_port: int, transport: str, args) -> dict:
    room = f"cmp-{transport.replace(' ', '-').replace('+', '')}"
    async with CountingProxy(server.port if transport.startswith("WebSocket") else http_port) as proxy, \
            httpx.AsyncClient(trust_env=False, timeout=httpx.Timeout(30, read=None),
                              limits=httpx.Limits(max_connections=args.clients + 20)) as http:
        compression = "deflate" if "deflate" in transport else None
        ws_url = f"ws://127.0.0.1:{proxy.port}/ws/chat/{room}/?user=reader"
        sse_url = f"http://127.0.0.1:{proxy.port}/sse/chat/{room}/?user=reader"

        def start_client(col: Collector, ready: asyncio.Event) -> asyncio.Task:
            if transport == "SSE":
                return asyncio.create_task(sse_client(http, sse_url, col, ready))
            return asyncio.create_task(ws_client(ws_url, col, compression, ready))

        # time to first event for a new client
        firsts = []
        for _ in range(10):
            col, ready = Collector(), asyncio.Event()
            t0 = time.monotonic()
            task = start_client(col, ready)
            await ready.wait()
            firsts.append(time.monotonic() - t0)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        cols = [Collector() for _ in range(args.clients)]
        readies = [asyncio.Event() for _ in cols]
        tasks = [start_client(c, r) for c, r in zip(cols, readies)]
        for r in readies:
            await r.wait()
        await asyncio.sleep(0.2)
        proxy.down = 0
        post_url = f"http://127.0.0.1:{http_port}/sse/chat/{room}/messages"
        async with connect(f"ws://127.0.0.1:{server.port}/ws/chat/{room}/?user=sender", proxy=None,
                           compression=None) as sender:
            await sender.recv()
            start = time.monotonic()
            for i in range(args.messages):
                target = i + 1
                if transport == "SSE":
                    await http.post(post_url, json={"message": f"m{i}", "user": "sender"})
                else:
                    await sender.send(json.dumps({"message": f"m{i}"}))
                await wait_for(lambda: all(c.completes >= target for c in cols))
            elapsed = time.monotonic() - start
        down_bytes = proxy.down
        chunks = sum(c.chunks for c in cols)
        same_order = all(c.ids == cols[0].ids for c in cols)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

        # catch-up after a dropped connection: 20 messages posted while away
        away_from = max(cols[0].ids)
        for i in range(20):
            await http.post(post_url, json={"message": f"missed {i}", "user": "sender"})
        await asyncio.sleep(0.5)  # their replies finish streaming
        col = Collector()
        t0 = time.monotonic()
        if transport == "SSE":
            task = asyncio.create_task(sse_client(http, sse_url, col, last_event_id=str(away_from)))
        else:
            task = asyncio.create_task(ws_client(ws_url + f"&after={away_from}", col, compression))
        await wait_for(lambda: len(col.ids) >= 40)
        catch_up = time.monotonic() - t0
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    latencies = [x for c in cols for x in c.latencies]
    return {
        "transport": transport, "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000, "chunks_per_s": chunks / elapsed,
        "bytes_per_chunk": down_bytes / max(1, chunks), "first_event_ms": percentile(firsts, 50) * 1000,
        "catch_up_ms": catch_up * 1000, "same_order": same_order,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--clients", type=int, default=10)
    args = parser.parse_args()
    raise_nofile()
    http_port = 0
    from common import free_port

    http_port = free_port()
    rows = []
    with ServerProcess("chatkit", ["--echo-chunks", str(args.chunks), "--echo-stamp",
                                   "--http-port", str(http_port)]) as server:
        for transport in ("WebSocket", "WebSocket+deflate", "SSE"):
            row = await run(server, http_port, transport, args)
            rows.append(row)
            print(f"  {transport:18} {row['chunks_per_s']:9,.0f} chunks/s  {row['bytes_per_chunk']:.0f} B/chunk",
                  flush=True)
    print_table(f"{args.messages} messages x {args.chunks} chunks to {args.clients} clients", rows,
                ["transport", "p50_ms", "p99_ms", "chunks_per_s", "bytes_per_chunk", "first_event_ms",
                 "catch_up_ms", "same_order"])
    write_results("ws_vs_sse", {"rows": rows, "args": vars(args)})


if __name__ == "__main__":
    asyncio.run(main())
