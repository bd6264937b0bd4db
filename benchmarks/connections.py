"""Connections: 2,000 idle WebSockets, and a presence storm into one room, chatkit beside the baseline.

    python benchmarks/connections.py                  # 2,000 connections, 50 handshakes in flight
    python benchmarks/connections.py --connections 500 --storm 500

**Idle connections** (one room each, so no presence frames): handshakes per
second (with ``--in-flight`` concurrent handshakes), the server's RSS per
1,000 connections (RSS with the connections open minus RSS before, scaled),
that every connection still answers a ping after the hold, and the server's
CPU seconds per 1,000 handshakes.

**Presence storm** (``--storm`` clients join *one* room, every client reading
everything it is sent): handshakes per second, the presence frames delivered
in all (chatkit's ``user_join``/``presence`` frames; the baseline sends none),
connections the server closed, and the server's CPU seconds per 1,000 frames
delivered (``connection`` + presence) over the storm and until the room is
quiet again.

Raises the open-file limit of this process (and the servers it starts) first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from common import (
    RESULTS,
    CpuMeter,
    ServerProcess,
    cpu_per_1k,
    gather_bounded,
    load_average,
    print_table,
    raise_nofile,
    ratio,
    rss_bytes,
    write_results,
)
from websockets.asyncio.client import connect


async def run(server: ServerProcess, count: int, in_flight: int, hold: float, rooms: int) -> dict:
    await asyncio.sleep(0.3)
    rss_before = rss_bytes(server.pid)

    async def open_one(i: int):
        ws = await connect(
            server.url(f"idle-{i % rooms}", f"u{i}"),
            proxy=None,
            compression=None,
            open_timeout=60,
            ping_interval=None,
            max_queue=None,
        )
        await ws.recv()  # the connection frame: the server has fully accepted it
        return ws

    with CpuMeter(server.pid) as cpu:
        start = time.monotonic()
        sockets = await gather_bounded([open_one(i) for i in range(count)], in_flight)
        elapsed = time.monotonic() - start
    await asyncio.sleep(hold)
    rss_after = rss_bytes(server.pid)

    async def answers(ws) -> bool:
        try:
            await ws.send(json.dumps({"type": "ping"}))
            async with asyncio.timeout(30):
                while json.loads(await ws.recv())["type"] != "pong":
                    pass
            return True
        except Exception:
            return False

    alive = sum(await gather_bounded([answers(ws) for ws in sockets], 200))
    await gather_bounded([ws.close() for ws in sockets], 200)
    return {
        "connections": count,
        "handshakes_per_s": count / elapsed,
        "rss_mb_per_1000": (rss_after - rss_before) / count * 1000 / 2**20,
        "answering": alive,
        "cpu_s_per_1k": cpu_per_1k(cpu.server_s, count),
        "server_cpu_pct": cpu.server_pct,
        "loadgen_cpu_pct": cpu.loadgen_pct,
    }


async def storm(server: ServerProcess, count: int, in_flight: int, query: str) -> dict:
    """``count`` clients join one room; each reads (and counts) every frame until the room is quiet."""
    room = f"storm-{time.monotonic_ns()}"
    frames = [0]
    presence = [0]
    closed = [0]

    async def read(ws) -> None:
        try:
            async for raw in ws:
                frames[0] += 1
                if '"type":"user_' in raw or '"type":"presence"' in raw:
                    presence[0] += 1
        except Exception:
            pass
        if ws.close_code not in (None, 1000):
            closed[0] += 1

    readers: list[asyncio.Task] = []

    async def open_one(i: int):
        ws = await connect(
            server.url(room, f"u{i}") + query,
            proxy=None,
            compression=None,
            open_timeout=60,
            ping_interval=None,
            max_queue=None,
        )
        await ws.recv()  # connection
        frames[0] += 1
        readers.append(asyncio.create_task(read(ws)))
        return ws

    with CpuMeter(server.pid) as cpu:
        start = time.monotonic()
        sockets = await gather_bounded([open_one(i) for i in range(count)], in_flight)
        handshakes = time.monotonic() - start
        last, quiet_since = -1, time.monotonic()
        while time.monotonic() - quiet_since < 0.5:  # until no frame arrived for 0.5 s
            await asyncio.sleep(0.05)
            if frames[0] != last:
                last, quiet_since = frames[0], time.monotonic()
        settled = quiet_since - start
    delivered, presence_delivered = frames[0], presence[0]  # before the leaves of the closes below
    await gather_bounded([ws.close() for ws in sockets], 200)
    for r in readers:
        r.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    return {
        "clients": count,
        "handshakes_per_s": count / handshakes,
        "settled_s": settled,
        "frames": delivered,
        "presence_frames": presence_delivered,
        "closed_by_server": closed[0],
        "cpu_s_per_1k": cpu_per_1k(cpu.server_s, delivered),
        "server_cpu_s": cpu.server_s,
        "server_cpu_pct": cpu.server_pct,
        "loadgen_cpu_pct": cpu.loadgen_pct,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--in-flight", type=int, default=50)
    parser.add_argument("--hold", type=float, default=2.0, help="seconds to hold the connections idle")
    parser.add_argument(
        "--rooms",
        type=int,
        default=0,
        help="spread the connections over this many rooms (default: one room each, so that "
        "presence frames, which the baseline does not send, do not count)",
    )
    parser.add_argument(
        "--storm", type=int, default=2000, help="clients joining one room in the presence storm (0: skip it)"
    )
    parser.add_argument(
        "--storm-query",
        default="&presence=batch",
        help="appended to chatkit's URLs in the storm (the opt-in to coalesced presence frames)",
    )
    parser.add_argument(
        "--chatkit-options", default="", help="more `chatkit serve` options, e.g. '--online-list-max 0'"
    )
    parser.add_argument(
        "--profile", action="store_true", help="run chatkit under cProfile and print the top functions"
    )
    args = parser.parse_args()
    args.rooms = args.rooms or args.connections
    limit = raise_nofile(max(args.connections, args.storm) * 2 + 200)
    print(f"open-file limit: {limit}; load average (1, 5, 15 min) at the start: {load_average()}")
    rows, storms = [], []
    for kind in ("baseline", "chatkit"):
        profile = str(RESULTS / "connections.prof") if args.profile and kind == "chatkit" else None
        extra = args.chatkit_options.split() if kind == "chatkit" else []
        with ServerProcess(kind, extra, profile=profile) as server:
            result = await run(server, args.connections, args.in_flight, args.hold, args.rooms)
            rows.append({"server": kind, **result})
            print(
                f"  {kind:8} {result['handshakes_per_s']:8,.0f} handshakes/s "
                f"{result['rss_mb_per_1000']:.1f} MB per 1000, {result['answering']} answering, "
                f"cpu {result['cpu_s_per_1k']:.3f} s/1k handshakes",
                flush=True,
            )
            if args.storm:
                query = args.storm_query if kind == "chatkit" else ""
                result = await storm(server, args.storm, args.in_flight, query)
                storms.append({"server": kind, **result})
                print(
                    f"  {kind:8} storm {result['handshakes_per_s']:8,.0f} handshakes/s, "
                    f"{result['presence_frames']:,} presence frames, settled in {result['settled_s']:.1f} s, "
                    f"cpu {result['cpu_s_per_1k']:.3f} s/1k frames",
                    flush=True,
                )
    base, chat = rows
    ratios = [
        {
            "case": "idle",
            "handshakes_ratio": ratio(chat["handshakes_per_s"], base["handshakes_per_s"]),
            "cpu_per_frame_ratio": ratio(chat["cpu_s_per_1k"], base["cpu_s_per_1k"]),
            "rss_ratio": ratio(chat["rss_mb_per_1000"], base["rss_mb_per_1000"]),
            "all_answering": chat["answering"] == chat["connections"]
            and base["answering"] == base["connections"],
        }
    ]
    if storms:
        sbase, schat = storms
        ratios.append(
            {
                "case": "storm",
                "handshakes_ratio": ratio(schat["handshakes_per_s"], sbase["handshakes_per_s"]),
                "cpu_per_frame_ratio": ratio(schat["cpu_s_per_1k"], sbase["cpu_s_per_1k"]),
                "cpu_ratio": ratio(schat["server_cpu_s"], sbase["server_cpu_s"]),
                "all_answering": schat["closed_by_server"] == 0,
            }
        )
    print_table(
        f"{args.connections} idle connections, {args.in_flight} handshakes in flight",
        rows,
        [
            "server",
            "connections",
            "handshakes_per_s",
            "rss_mb_per_1000",
            "answering",
            "cpu_s_per_1k",
            "server_cpu_pct",
            "loadgen_cpu_pct",
        ],
    )
    if storms:
        print_table(
            f"presence storm: {args.storm} clients join one room",
            storms,
            [
                "server",
                "clients",
                "handshakes_per_s",
                "settled_s",
                "frames",
                "presence_frames",
                "closed_by_server",
                "cpu_s_per_1k",
                "server_cpu_s",
                "server_cpu_pct",
                "loadgen_cpu_pct",
            ],
        )
    print_table(
        "chatkit / baseline (same run)",
        ratios,
        ["case", "handshakes_ratio", "cpu_per_frame_ratio", "cpu_ratio", "rss_ratio", "all_answering"],
    )
    write_results("connections", {"rows": rows, "storm": storms, "ratios": ratios, "args": vars(args)})
    if args.profile:
        import pstats

        print("\nchatkit profile (internal time, top 25):")
        pstats.Stats(str(RESULTS / "connections.prof")).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    asyncio.run(main())
