"""Streaming: 1, 10 and 50 rooms streaming replies at once, chatkit beside the baseline.

    python benchmarks/streaming.py                   # 1, 10, 50 rooms, 20 chunks per reply
    python benchmarks/streaming.py --rooms 10 --duration 2

One client per room sends a message, waits for the reply's ``ai_complete``, and
sends the next (closed loop), for ``--duration`` seconds. Both servers use a
zero-delay echo streamer of 20 pieces per reply, each piece stamped with
``time.monotonic()`` when the streamer yields it, so the report has the
server's added latency per chunk (streamer yield → client receipt), besides
replies/s, chunks/s, time to first chunk and to ``ai_complete`` (p50/p99), and
the server's CPU seconds per 1,000 frames delivered (``message`` + 20
``ai_chunk`` + ``ai_complete`` per reply: the same frames from both servers, so
the ratio is also the ratio of CPU per chunk).
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
    percentile,
    print_table,
    raise_nofile,
    ratio,
    write_results,
)
from websockets.asyncio.client import connect


async def room_loop(server: ServerProcess, room: str, until: float, stats: dict) -> None:
    async with connect(
        server.url(room), proxy=None, compression=None, max_queue=None, ping_interval=None
    ) as ws:
        await ws.recv()
        while time.monotonic() < until:
            sent = time.monotonic()
            await ws.send(json.dumps({"message": "stream please"}))
            first = None
            async for raw in ws:
                now = time.monotonic()
                stats["frames"] += 1
                frame = json.loads(raw)
                if frame["type"] == "ai_chunk":
                    stats["chunks"] += 1
                    stats["added"].append(now - float(frame["chunk"]))
                    if first is None:
                        first = now
                        stats["first"].append(now - sent)
                elif frame["type"] == "ai_complete":
                    stats["complete"].append(now - sent)
                    stats["replies"] += 1
                    break


async def run(server: ServerProcess, rooms: int, duration: float) -> dict:
    stats = {"frames": 0, "chunks": 0, "replies": 0, "first": [], "complete": [], "added": []}
    with CpuMeter(server.pid) as cpu:
        start = time.monotonic()
        await gather_bounded(
            [
                room_loop(server, f"s{rooms}-{i}-{time.monotonic_ns()}", start + duration, stats)
                for i in range(rooms)
            ],
            rooms,
        )
        elapsed = time.monotonic() - start
    ms = lambda values, q: percentile(values, q) * 1000
    return {
        "replies_per_s": stats["replies"] / elapsed,
        "chunks_per_s": stats["chunks"] / elapsed,
        "first_p50_ms": ms(stats["first"], 50),
        "first_p99_ms": ms(stats["first"], 99),
        "complete_p50_ms": ms(stats["complete"], 50),
        "complete_p99_ms": ms(stats["complete"], 99),
        "added_p50_ms": ms(stats["added"], 50),
        "added_p99_ms": ms(stats["added"], 99),
        "frames": stats["frames"],
        "cpu_s_per_1k": cpu_per_1k(cpu.server_s, stats["frames"]),
        "server_cpu_pct": cpu.server_pct,
        "loadgen_cpu_pct": cpu.loadgen_pct,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", default="1,10,50")
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument(
        "--chatkit-options", default="", help="more `chatkit serve` options, e.g. '--store-writer loop'"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run both servers under cProfile; print their function calls per frame and top functions",
    )
    args = parser.parse_args()
    raise_nofile()
    print(f"load average (1, 5, 15 min) at the start: {load_average()}")
    rows = []
    options = ["--echo-chunks", str(args.chunks), "--echo-stamp"]
    for kind in ("baseline", "chatkit"):
        profile = str(RESULTS / f"streaming-{kind}.prof") if args.profile else None
        extra = args.chatkit_options.split() if kind == "chatkit" else []
        with ServerProcess(kind, options + extra, profile=profile) as server:
            for rooms in map(int, args.rooms.split(",")):
                result = await run(server, rooms, args.duration)
                rows.append({"server": kind, "rooms": rooms, **result})
                print(
                    f"  {kind:8} {rooms:3} rooms {result['chunks_per_s']:10,.0f} chunks/s "
                    f"cpu {result['cpu_s_per_1k']:.4f} s/1k frames",
                    flush=True,
                )
    ratios = []
    for row in rows:
        if row["server"] == "chatkit":
            base = next(r for r in rows if r["server"] == "baseline" and r["rooms"] == row["rooms"])
            ratios.append(
                {
                    "rooms": row["rooms"],
                    "chunks_ratio": ratio(row["chunks_per_s"], base["chunks_per_s"]),
                    "cpu_per_frame_ratio": ratio(row["cpu_s_per_1k"], base["cpu_s_per_1k"]),
                    "first_p99_ratio": ratio(row["first_p99_ms"], base["first_p99_ms"]),
                    "added_p99_ratio": ratio(row["added_p99_ms"], base["added_p99_ms"]),
                }
            )
    print_table(
        "streaming (20 chunks per reply, zero-delay streamer)",
        rows,
        [
            "server",
            "rooms",
            "replies_per_s",
            "chunks_per_s",
            "first_p50_ms",
            "first_p99_ms",
            "complete_p50_ms",
            "complete_p99_ms",
            "added_p50_ms",
            "added_p99_ms",
            "cpu_s_per_1k",
            "server_cpu_pct",
            "loadgen_cpu_pct",
        ],
    )
    print_table(
        "chatkit / baseline (same run)",
        ratios,
        ["rooms", "chunks_ratio", "cpu_per_frame_ratio", "first_p99_ratio", "added_p99_ratio"],
    )
    write_results("streaming", {"rows": rows, "ratios": ratios, "args": vars(args)})
    if args.profile:
        import pstats

        for kind, top in (("baseline", 15), ("chatkit", 30)):
            stats = pstats.Stats(str(RESULTS / f"streaming-{kind}.prof"))
            frames = sum(r["frames"] for r in rows if r["server"] == kind)
            calls = stats.total_calls  # type: ignore[attr-defined]
            print(f"\n{kind}: {calls:,} function calls (start-up included), {calls / frames:.1f} per frame")
            stats.sort_stats("tottime").print_stats(top)


if __name__ == "__main__":
    asyncio.run(main())
