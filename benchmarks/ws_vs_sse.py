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

Then the **cost per chunk at scale**: ``--streams`` clients (500) in one room
over chatkit's WebSocket, chatkit's SSE, and the bare ``websockets`` baseline
(no proxy, a light reader that counts frames without parsing them), one
sender, ``--stream-messages`` replies: the server's CPU seconds per 1,000
frames delivered, and the ratios SSE / WebSocket and chatkit / baseline.
Writes ``results/ws_vs_sse.json``, which notebook 06 plots.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import httpx
from common import (
    RESULTS,
    CountingProxy,
    CpuMeter,
    ServerProcess,
    cpu_per_1k,
    load_average,
    percentile,
    print_table,
    raise_nofile,
    ratio,
    write_results,
)
from httpx_sse import aconnect_sse
from websockets.asyncio.client import connect


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


async def ws_client(
    url: str, col: Collector, compression: str | None, ready: asyncio.Event | None = None
) -> None:
    async with connect(url, proxy=None, compression=compression, max_queue=None, ping_interval=None) as ws:
        async for raw in ws:
            frame = json.loads(raw)
            if frame["type"] == "connection" and ready is not None:
                ready.set()
            col.frame(frame)


async def sse_client(
    http: httpx.AsyncClient,
    url: str,
    col: Collector,
    ready: asyncio.Event | None = None,
    last_event_id: str | None = None,
) -> None:
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
    async with (
        CountingProxy(server.port if transport.startswith("WebSocket") else http_port) as proxy,
        httpx.AsyncClient(
            trust_env=False,
            timeout=httpx.Timeout(30, read=None),
            limits=httpx.Limits(max_connections=args.clients + 20),
        ) as http,
    ):
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
        async with connect(
            f"ws://127.0.0.1:{server.port}/ws/chat/{room}/?user=sender", proxy=None, compression=None
        ) as sender:
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
        "transport": transport,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "chunks_per_s": chunks / elapsed,
        "bytes_per_chunk": down_bytes / max(1, chunks),
        "first_event_ms": percentile(firsts, 50) * 1000,
        "catch_up_ms": catch_up * 1000,
        "same_order": same_order,
    }


class Counter:
    """Frames and ``ai_complete`` events seen by the light readers of the scale run."""

    def __init__(self) -> None:
        self.frames = 0
        self.completes = 0
        self.changed = asyncio.Event()


async def light_ws(url: str, counter: Counter, opened: list) -> None:
    async with connect(
        url, proxy=None, compression=None, max_queue=None, ping_interval=None, open_timeout=60
    ) as ws:
        await ws.recv()  # connection
        opened.append(ws)
        async for raw in ws:
            counter.frames += 1
            if "ai_complete" in raw[:24]:  # chatkit's compact JSON or the baseline's json.dumps
                counter.completes += 1
                counter.changed.set()


async def light_sse(port: int, path: str, counter: Counter, opened: list) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode())
        buffer = b""
        while b"event: connection" not in buffer:
            data = await reader.read(65536)
            if not data:
                return
            buffer += data
        opened.append(writer)
        buffer = buffer[buffer.index(b"event: connection") :]
        buffer = buffer[buffer.index(b"\n\n") + 2 :]
        while True:
            # Events end with a blank line; count them (chunked framing adds no blank lines of its own
            # inside an event, and every event here is one chunk of the response).
            events = buffer.count(b"\n\n")
            if events:
                counter.frames += events
                completes = buffer.count(b"event: ai_complete")
                if completes:
                    counter.completes += completes
                    counter.changed.set()
                buffer = buffer[buffer.rindex(b"\n\n") + 2 :]
            data = await reader.read(65536)
            if not data:
                return
            buffer += data
    finally:
        writer.close()


async def scale_run(
    server: ServerProcess, transport: str, http_port: int, streams: int, messages: int
) -> dict:
    """``streams`` readers in one room, one WebSocket sender, ``messages`` replies (closed loop)."""
    room = f"scale-{transport.replace(' ', '-')}-{time.monotonic_ns()}"
    counter = Counter()
    opened: list = []
    if transport.endswith("SSE"):
        path = f"/sse/chat/{room}/?user=reader"
        tasks = [asyncio.create_task(light_sse(http_port, path, counter, opened)) for _ in range(streams)]
    else:
        tasks = [
            asyncio.create_task(light_ws(server.url(room, f"r{i}"), counter, opened)) for i in range(streams)
        ]
    async with asyncio.timeout(120):
        while len(opened) < streams:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)  # presence frames of the joins settle
    async with connect(
        server.url(room, "sender"), proxy=None, compression=None, max_queue=None, ping_interval=None
    ) as sender:
        await sender.recv()
        frames_before = counter.frames
        with CpuMeter(server.pid) as cpu:
            start = time.monotonic()
            for i in range(messages):
                target = (i + 1) * streams
                await sender.send(json.dumps({"message": f"m{i}"}))
                async with asyncio.timeout(120):
                    while counter.completes < target:
                        counter.changed.clear()
                        await counter.changed.wait()
            elapsed = time.monotonic() - start
        frames = counter.frames - frames_before
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "transport": transport,
        "streams": streams,
        "frames": frames,
        "frames_per_s": frames / elapsed,
        "cpu_s_per_1k": cpu_per_1k(cpu.server_s, frames),
        "server_cpu_s": cpu.server_s,
        "server_cpu_pct": cpu.server_pct,
        "loadgen_cpu_pct": cpu.loadgen_pct,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument(
        "--streams", type=int, default=500, help="readers in the cost-at-scale run (0: skip it)"
    )
    parser.add_argument(
        "--stream-messages", type=int, default=5, help="replies streamed in the cost-at-scale run"
    )
    parser.add_argument(
        "--scale-only", action="store_true", help="only the cost-at-scale run (skip the conversation)"
    )
    parser.add_argument(
        "--scale-transports",
        default="chatkit WebSocket,chatkit SSE",
        help="chatkit's transports in the cost-at-scale run (with --profile: one, to profile it alone)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="run chatkit under cProfile and print the top functions"
    )
    args = parser.parse_args()
    raise_nofile(args.streams * 2 + 400)
    print(f"load average (1, 5, 15 min) at the start: {load_average()}")
    http_port = 0
    from common import free_port

    http_port = free_port()
    rows = []
    profile = str(RESULTS / "ws_vs_sse.prof") if args.profile else None
    with ServerProcess(
        "chatkit",
        ["--echo-chunks", str(args.chunks), "--echo-stamp", "--http-port", str(http_port)],
        profile=profile,
    ) as server:
        for transport in () if args.scale_only else ("WebSocket", "WebSocket+deflate", "SSE"):
            row = await run(server, http_port, transport, args)
            rows.append(row)
            print(
                f"  {transport:18} {row['chunks_per_s']:9,.0f} chunks/s  {row['bytes_per_chunk']:.0f} B/chunk",
                flush=True,
            )
        scale = []
        if args.streams:
            for transport in args.scale_transports.split(","):
                scale.append(
                    await scale_run(server, transport, http_port, args.streams, args.stream_messages)
                )
                print(
                    f"  {transport:18} {args.streams} streams: cpu {scale[-1]['cpu_s_per_1k']:.4f} s/1k frames",
                    flush=True,
                )
    if args.streams:
        with ServerProcess("baseline", ["--echo-chunks", str(args.chunks), "--echo-stamp"]) as base:
            scale.append(await scale_run(base, "baseline WebSocket", 0, args.streams, args.stream_messages))
            print(
                f"  {'baseline WebSocket':18} {args.streams} streams: cpu {scale[-1]['cpu_s_per_1k']:.4f} s/1k frames",
                flush=True,
            )
    print_table(
        f"{args.messages} messages x {args.chunks} chunks to {args.clients} clients",
        rows,
        [
            "transport",
            "p50_ms",
            "p99_ms",
            "chunks_per_s",
            "bytes_per_chunk",
            "first_event_ms",
            "catch_up_ms",
            "same_order",
        ],
    )
    ratios = []
    if len(scale) == 3:
        ws, sse, base_ws = scale
        print_table(
            f"cost at scale: {args.streams} streams in one room, {args.stream_messages} replies of "
            f"{args.chunks} chunks",
            scale,
            [
                "transport",
                "streams",
                "frames",
                "frames_per_s",
                "cpu_s_per_1k",
                "server_cpu_s",
                "server_cpu_pct",
                "loadgen_cpu_pct",
            ],
        )
        ratios = [
            {
                "streams": args.streams,
                "sse_vs_ws_cpu_per_frame": ratio(sse["cpu_s_per_1k"], ws["cpu_s_per_1k"]),
                "ws_vs_baseline_cpu_per_frame": ratio(ws["cpu_s_per_1k"], base_ws["cpu_s_per_1k"]),
                "sse_vs_baseline_cpu_per_frame": ratio(sse["cpu_s_per_1k"], base_ws["cpu_s_per_1k"]),
            }
        ]
        print_table("ratios (same run)", ratios, list(ratios[0]))
    write_results("ws_vs_sse", {"rows": rows, "scale": scale, "ratios": ratios, "args": vars(args)})
    if profile:
        import pstats

        print("\nchatkit profile (internal time, top 25):")
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    asyncio.run(main())
