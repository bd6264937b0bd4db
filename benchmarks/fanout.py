"""Fan-out: one sender, N clients in one room, chatkit beside the bare websockets baseline.

    python benchmarks/fanout.py                       # 10, 100, 500 clients; both loops; both reply modes
    python benchmarks/fanout.py --clients 100 --duration 2 --modes room

For each room size, loop (closed: next message when the previous broadcast and
its reply's ai_complete came back to the sender; open: a fixed rate) and reply
mode (``room``, or ``sender`` as in the seed), it reports deliveries per second
over all sockets (message + ai_chunk + ai_complete frames), broadcast latency
p50/p99 (send → each client's receipt of the ``message`` frame), deliveries
lost (must be 0), the server's CPU seconds per 1,000 frames delivered (every
frame the clients received in the window), and the CPU % of the server and of
this load generator.
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


class Client:
    def __init__(self, ws) -> None:
        self.ws = ws
        self.messages: dict[str, float] = {}
        self.frames = 0
        self.completes = 0
        self.other = 0  # presence frames etc.
        self.progress = asyncio.Event()

    async def read(self) -> None:
        try:
            async for raw in self.ws:
                now = time.monotonic()
                frame = json.loads(raw)
                kind = frame["type"]
                if kind == "message":
                    self.messages[frame["message"]] = now
                elif kind == "ai_complete":
                    self.completes += 1
                elif kind != "ai_chunk":
                    self.other += 1
                    continue
                self.frames += 1
                self.progress.set()
        except Exception:
            pass


async def run(server: ServerProcess, clients: int, loop: str, duration: float, rate: float) -> dict:
    room = f"fan-{loop}-{clients}-{time.monotonic_ns()}"

    async def open_one(i: int) -> Client:
        ws = await connect(
            server.url(room, f"u{i}"),
            proxy=None,
            compression=None,
            max_queue=None,
            open_timeout=30,
            ping_interval=None,
        )
        await ws.recv()  # connection
        return Client(ws)

    members = await gather_bounded([open_one(i) for i in range(clients)], 50)
    readers = [asyncio.create_task(c.read()) for c in members]
    sender = members[0]
    # Let the join storm (chatkit's user_join frames, O(n²) in all) drain before measuring.
    last, quiet_since = -1, time.monotonic()
    while time.monotonic() - quiet_since < 0.3:
        await asyncio.sleep(0.05)
        now_total = sum(c.other for c in members)
        if now_total != last:
            last, quiet_since = now_total, time.monotonic()
    sent: dict[str, float] = {}
    received_before = sum(c.frames + c.other for c in members)
    with CpuMeter(server.pid) as cpu:
        start = time.monotonic()
        i = 0
        while time.monotonic() - start < duration:
            text = f"{i} bench fan out"
            sent[text] = time.monotonic()
            await sender.ws.send(json.dumps({"message": text}))
            i += 1
            if loop == "closed":
                target = i  # the broadcast and the reply came back to the sender
                while not (text in sender.messages and sender.completes >= target):
                    sender.progress.clear()
                    await sender.progress.wait()
            else:
                await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        # drain: every client gets every message (bounded wait)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(len(c.messages) < len(sent) for c in members):
            await asyncio.sleep(0.01)
        elapsed = time.monotonic() - start
    received = sum(c.frames + c.other for c in members) - received_before
    for c in members:
        await c.ws.close()
    for r in readers:
        r.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    latencies = [c.messages[t] - s for c in members for t, s in sent.items() if t in c.messages]
    delivered = sum(c.frames for c in members)
    lost = len(sent) * clients - sum(1 for c in members for t in sent if t in c.messages)
    return {
        "messages": len(sent),
        "deliveries_per_s": delivered / elapsed,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "lost": lost,
        "cpu_s_per_1k": cpu_per_1k(cpu.server_s, received),
        "server_cpu_pct": cpu.server_pct,
        "loadgen_cpu_pct": cpu.loadgen_pct,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="10,100,500")
    parser.add_argument("--loops", default="closed,open")
    parser.add_argument("--modes", default="room,sender")
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--rate", type=float, default=20.0, help="open loop: messages per second")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run chatkit under cProfile (results/fanout-<mode>.prof) and print the top functions",
    )
    args = parser.parse_args()
    raise_nofile()
    print(f"load average (1, 5, 15 min) at the start: {load_average()}")
    rows = []
    for mode in args.modes.split(","):
        for kind in ("baseline", "chatkit"):
            profile = str(RESULTS / f"fanout-{mode}.prof") if args.profile and kind == "chatkit" else None
            with ServerProcess(kind, ["--ai-replies", mode], profile=profile) as server:
                for clients in map(int, args.clients.split(",")):
                    for loop in args.loops.split(","):
                        result = await run(server, clients, loop, args.duration, args.rate)
                        rows.append(
                            {"server": kind, "replies": mode, "clients": clients, "loop": loop, **result}
                        )
                        print(
                            f"  {kind:8} {mode:6} {clients:4} {loop:6} {result['deliveries_per_s']:10,.0f}/s "
                            f"p99 {result['p99_ms']:.1f} ms lost {result['lost']} "
                            f"cpu {result['cpu_s_per_1k']:.3f} s/1k frames",
                            flush=True,
                        )
    ratios = []
    for row in rows:
        if row["server"] != "chatkit":
            continue
        base = next(
            r
            for r in rows
            if r["server"] == "baseline" and all(r[k] == row[k] for k in ("replies", "clients", "loop"))
        )
        ratios.append(
            {
                "replies": row["replies"],
                "clients": row["clients"],
                "loop": row["loop"],
                "deliveries_ratio": ratio(row["deliveries_per_s"], base["deliveries_per_s"]),
                "cpu_per_frame_ratio": ratio(row["cpu_s_per_1k"], base["cpu_s_per_1k"]),
                "p99_ratio": ratio(row["p99_ms"], base["p99_ms"]),
                "lost": row["lost"],
            }
        )
    cols = [
        "server",
        "replies",
        "clients",
        "loop",
        "messages",
        "deliveries_per_s",
        "p50_ms",
        "p99_ms",
        "lost",
        "cpu_s_per_1k",
        "server_cpu_pct",
        "loadgen_cpu_pct",
    ]
    print_table("fan-out", rows, cols)
    print_table(
        "chatkit / baseline (same run)",
        ratios,
        ["replies", "clients", "loop", "deliveries_ratio", "cpu_per_frame_ratio", "p99_ratio", "lost"],
    )
    write_results("fanout", {"rows": rows, "ratios": ratios, "args": vars(args)})
    if args.profile:
        import pstats

        for mode in args.modes.split(","):
            print(f"\nchatkit profile, replies={mode} (cumulative, top 25):")
            pstats.Stats(str(RESULTS / f"fanout-{mode}.prof")).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    asyncio.run(main())
