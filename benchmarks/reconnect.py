"""Reconnect: 200 clients in one room, the server restarted under them.

    python benchmarks/reconnect.py                    # 200 clients, server down 3 s, both policies
    python benchmarks/reconnect.py --clients 100 --down 2

For each reconnect policy — exponential backoff with jitter (chatkit's default)
and the seed's fixed 3 s delay — it connects N ChatClients to a ``chatkit
serve`` process, kills the server (SIGKILL), keeps it down for ``--down``
seconds, restarts it on the same port and database, posts one message, and
reports: the peak connection attempts per second (in 100 ms bins, scaled) the
server's port sees, the time from restart until every client is open again,
and until every client has the message that was posted (caught up), and the
restarted server's CPU seconds per 1,000 frames delivered from the restart
until all caught up (every frame the clients passed on: ``connection``,
replays, presence, the message). The same herd with backoff+jitter against the
baseline server (which keeps nothing across the restart) gives the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import tempfile
import time

from common import (
    ServerProcess,
    cpu_per_1k,
    cpu_seconds,
    gather_bounded,
    load_average,
    print_table,
    raise_nofile,
    ratio,
    write_results,
)
from websockets.asyncio.client import connect

from chatkit.client import ChatClient, ExponentialBackoff, FixedDelay


async def run(clients: int, down: float, policy_name: str, kind: str = "chatkit") -> dict:
    tmp = tempfile.TemporaryDirectory()
    # ServerProcess passes a --db of its own first; this one comes later and wins, and
    # survives the restart.
    server = ServerProcess(kind, ["--db", os.path.join(tmp.name, "r.db")] if kind == "chatkit" else [])
    server.start()
    frames = [0]
    attempts: list[float] = []
    opened_at: dict[int, float] = {}
    got: dict[int, float] = {}
    policies = {"backoff+jitter": lambda: ExponentialBackoff(), "fixed 3 s": lambda: FixedDelay(3.0)}
    members = []
    for i in range(clients):
        chat = ChatClient(
            server.url("herd", f"u{i}"), policy=policies[policy_name](), open_timeout=30, compression=None
        )

        def on_event(event, i=i):
            now = time.monotonic()
            if event["type"] == "state" and event["state"] == "reconnecting":
                attempts.append(now + (event["delay"] or 0))  # when the next attempt will hit the server
            elif event["type"] == "state" and event["state"] == "open":
                opened_at[i] = now
            elif event["type"] == "message" and event.get("message") == "after the restart":
                got.setdefault(i, now)
            if event["type"] != "state":
                frames[0] += 1

        chat.on_event(on_event)
        members.append(chat)
    await gather_bounded([c.start() for c in members], 50)
    os.kill(server.pid, signal.SIGKILL)
    server.proc.wait()
    killed = time.monotonic()
    attempts.clear()
    opened_at.clear()
    await asyncio.sleep(down)
    server.proc = None
    server.start()
    restarted = time.monotonic()
    cpu0, frames0 = cpu_seconds(server.pid), frames[0]
    if kind == "baseline":  # it keeps nothing: post once everyone is back, or they never get it
        deadline = time.monotonic() + 60
        while len(opened_at) < clients and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    # A raw connection posts (the baseline does not echo client_id, which ChatClient.send waits for).
    async with connect(server.url("herd", "poster"), proxy=None, compression=None) as poster:
        await poster.recv()  # connection
        await poster.send(json.dumps({"message": "after the restart"}))
    deadline = time.monotonic() + 60
    while (len(got) < clients or len(opened_at) < clients) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    done = time.monotonic()
    cpu_s, delivered = cpu_seconds(server.pid) - cpu0, frames[0] - frames0
    await gather_bounded([c.close() for c in members], 100)
    server.stop()
    tmp.cleanup()
    bins: dict[int, int] = {}
    for t in attempts:
        if t <= done:
            bins[int((t - killed) * 10)] = bins.get(int((t - killed) * 10), 0) + 1
    return {
        "server": kind,
        "policy": policy_name,
        "clients": clients,
        "down_s": down,
        "peak_attempts_per_s": max(bins.values(), default=0) * 10,
        "attempts": sum(bins.values()),
        "all_open_s": max(opened_at.values(), default=float("nan")) - restarted,
        "all_caught_up_s": max(got.values(), default=float("nan")) - restarted,
        "caught_up": len(got),
        "frames": delivered,
        "server_cpu_s": cpu_s,
        "cpu_s_per_1k": cpu_per_1k(cpu_s, delivered),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--down", type=float, default=3.0)
    args = parser.parse_args()
    raise_nofile(args.clients * 4 + 200)
    print(f"load average (1, 5, 15 min) at the start: {load_average()}")
    rows = []
    for kind, policy in (
        ("chatkit", "backoff+jitter"),
        ("chatkit", "fixed 3 s"),
        ("baseline", "backoff+jitter"),
    ):
        row = await run(args.clients, args.down, policy, kind)
        rows.append(row)
        print(
            f"  {kind:8} {policy:15} peak {row['peak_attempts_per_s']:,} attempts/s, all caught up in "
            f"{row['all_caught_up_s']:.2f} s, cpu {row['cpu_s_per_1k']:.3f} s/1k frames",
            flush=True,
        )
    print_table(
        f"{args.clients} clients, server down {args.down:g} s then restarted",
        rows,
        [
            "server",
            "policy",
            "clients",
            "peak_attempts_per_s",
            "attempts",
            "all_open_s",
            "all_caught_up_s",
            "caught_up",
            "frames",
            "cpu_s_per_1k",
            "server_cpu_s",
        ],
    )
    chat, base = rows[0], rows[2]
    ratios = [
        {
            "policy": "backoff+jitter",
            "cpu_per_frame_ratio": ratio(chat["cpu_s_per_1k"], base["cpu_s_per_1k"]),
            "caught_up_ratio": ratio(chat["all_caught_up_s"], base["all_caught_up_s"]),
        }
    ]
    print_table("chatkit / baseline (same run)", ratios, list(ratios[0]))
    write_results("reconnect", {"rows": rows, "ratios": ratios, "args": vars(args)})


if __name__ == "__main__":
    asyncio.run(main())
