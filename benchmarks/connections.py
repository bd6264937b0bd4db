"""Connections: 2,000 idle WebSockets, chatkit beside the baseline.

    python benchmarks/connections.py                  # 2,000 connections, 50 handshakes in flight
    python benchmarks/connections.py --connections 500

Reports handshakes per second (with ``--in-flight`` concurrent handshakes),
the server's RSS per 1,000 connections (RSS with the connections open minus
RSS before, scaled), and that every connection still answers a ping after
the hold. Raises the open-file limit of this process (and the servers it
starts) first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from websockets.asyncio.client import connect

from common import (RESULTS, CpuMeter, ServerProcess, gather_bounded, print_table, raise_nofile, ratio, rss_bytes,
                    write_results)


async def run(server: ServerProcess, count: int, in_flight: int, hold: float, rooms: int) -> dict:
    await asyncio.sleep(0.3)
    rss_before = rss_bytes(server.pid)

    async def open_one(i: int):
        ws = await connect(server.url(f"idle-{i % rooms}", f"u{i}"), proxy=None, compression=None,
                           open_timeout=60, ping_interval=None, max_queue=None)
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
        "connections": count, "handshakes_per_s": count / elapsed,
        "rss_mb_per_1000": (rss_after - rss_before) / count * 1000 / 2**20,
        "answering": alive, "server_cpu_pct": cpu.server_pct, "loadgen_cpu_pct": cpu.loadgen_pct,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--in-flight", type=int, default=50)
    parser.add_argument("--hold", type=float, default=2.0, help="seconds to hold the connections idle")
    parser.add_argument("--rooms", type=int, default=0,
                        help="spread the connections over this many rooms (default: one room each, so that "
                             "presence frames, which the baseline does not send, do not count)")
    parser.add_argument("--profile", action="store_true", help="run chatkit under cProfile and print the top functions")
    args = parser.parse_args()
    args.rooms = args.rooms or args.connections
    limit = raise_nofile(args.connections * 2 + 200)
    print(f"open-file limit: {limit}")
    rows = []
    for kind in ("baseline", "chatkit"):
        profile = str(RESULTS / "connections.prof") if args.profile and kind == "chatkit" else None
        with ServerProcess(kind, profile=profile) as server:
            result = await run(server, args.connections, args.in_flight, args.hold, args.rooms)
            rows.append({"server": kind, **result})
            print(f"  {kind:8} {result['handshakes_per_s']:8,.0f} handshakes/s "
                  f"{result['rss_mb_per_1000']:.1f} MB per 1000, {result['answering']} answering", flush=True)
    base, chat = rows
    ratios = [{"handshakes_ratio": ratio(chat["handshakes_per_s"], base["handshakes_per_s"]),
               "rss_ratio": ratio(chat["rss_mb_per_1000"], base["rss_mb_per_1000"]),
               "all_answering": chat["answering"] == chat["connections"] and base["answering"] == base["connections"]}]
    print_table(f"{args.connections} idle connections, {args.in_flight} handshakes in flight", rows,
                ["server", "connections", "handshakes_per_s", "rss_mb_per_1000", "answering", "server_cpu_pct",
                 "loadgen_cpu_pct"])
    print_table("chatkit / baseline (same run)", ratios, ["handshakes_ratio", "rss_ratio", "all_answering"])
    write_results("connections", {"rows": rows, "ratios": ratios, "args": vars(args)})
    if args.profile:
        import pstats

        print("\nchatkit profile (internal time, top 25):")
        pstats.Stats(str(RESULTS / "connections.prof")).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    asyncio.run(main())
