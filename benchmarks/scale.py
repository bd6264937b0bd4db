"""Scale-out: one busy room spread over 1, 2 and 4 processes on one Redis; many rooms; the broker hop.

Every configuration runs ``chatkit serve --broker redis://… --db <one SQLite file>``
processes (a ``redis-server`` is started on a free port), and, as the baseline in
the same run, one plain ``chatkit serve`` process without a broker. Members are
raw WebSocket connections spread round robin over the processes; the load
generator is this process.

- **deliveries/s**: one sender posts N messages to a room of M members
  (no AI replies); a delivery is one ``message`` frame received by one member.
- **chunks/s**: prompts answered by the echo backend with C chunks each, as fast
  as it can; a chunk delivery is one ``ai_chunk`` frame received by one member.
- **many rooms**: R rooms of 4 members each, every room with its own sender.
- **hop latency**: with 2 processes, the time from sending a message to receiving
  it on the sender's process and on the other one; the difference is the hop
  (Redis pub/sub, plus the receiving process's ordering check).

- **the seed's stack**: the same busy room and many rooms on Django Channels (daphne + channels_redis,
  ``benchmarks/channels_peer.py``) over 1, 2 and 4 daphne processes on the same Redis. The benchmark
  installs the pinned versions (``PEER_PINS``; ``redis<8``: channels_redis 4.x drops idle consumers
  with redis-py 8's 5 s socket timeout) into a venv of its own (``--peer-venv``; ``--no-peer`` skips it).
  The peer stores nothing and recovers nothing; chatkit commits every message before sending it.

Run: ``python benchmarks/scale.py`` (``--quick`` for a smoke run). Needs redis-server.
What 2 shared cores can and cannot show is printed with the results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(
    0, str(Path(__file__).resolve().parent.parent)
)  # tests/services.py: the engines and start-up wait

from common import (  # noqa: E402
    ServerProcess,
    cpu_seconds,
    free_port,
    load_average,
    percentile,
    print_table,
    raise_nofile,
    ratio,
    write_results,
)
from websockets.asyncio.client import connect  # noqa: E402

from tests.services import RedisService, die_with_parent, wait_for_port  # noqa: E402

WAIT = 120.0
HERE = Path(__file__).resolve().parent
PEER_PINS = ["Django==5.1.4", "channels==4.2.0", "channels-redis==4.2.1", "daphne==4.1.2", "redis==5.2.1"]


def peer_venv(path: Path) -> Path:
    """A venv with the seed's stack at pinned versions (created once, reused)."""
    python = path / "bin" / "python"
    marker = path / "pins.txt"
    if not (python.exists() and marker.exists() and marker.read_text() == "\n".join(PEER_PINS)):
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_PINS], check=True)
        marker.write_text("\n".join(PEER_PINS))
    return path


class Daphne:
    """One daphne process serving channels_peer.py (the seed's consumer)."""

    def __init__(self, venv: Path, redis_url: str) -> None:
        self.port = free_port()
        env = {**os.environ, "PEER_REDIS": redis_url, "PYTHONPATH": str(HERE)}
        self.proc = subprocess.Popen(
            die_with_parent(
                [
                    str(venv / "bin" / "daphne"),
                    "-b",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "channels_peer:application",
                ]
            ),
            cwd=str(HERE),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, room: str, user: str = "u") -> str:
        return f"ws://127.0.0.1:{self.port}/ws/chat/{room}/?user={user}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Redis(RedisService):
    """tests/services.py's ``redis-server`` (no persistence, a free port, a temporary directory)."""

    def __init__(self) -> None:
        if shutil.which("redis-server") is None:
            raise SystemExit("redis-server is not installed (apt-get install redis-server)")
        super().__init__()
        self.start()


def start_processes(n: int, redis: Redis | None, db: str, extra: list[str]) -> list[ServerProcess]:
    options = ["--db", db, *extra]
    if redis is not None:
        options += ["--broker", redis.url]
    return [ServerProcess("chatkit", options).start() for _ in range(n)]


class Member:
    """A raw WebSocket member counting the frames it receives."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.counts: dict[str, int] = {}
        self.arrivals: dict[str, float] = {}
        self.done = asyncio.Event()
        self.want: tuple[str, int] | None = None

    async def run(self, ready: asyncio.Event | None = None) -> None:
        async with connect(self.url, proxy=None, max_size=None, ping_interval=None) as ws:
            self.ws = ws
            if ready is not None:
                ready.set()
            async for raw in ws:
                frame = json.loads(raw)
                kind = frame.get("type")
                self.counts[kind] = self.counts.get(kind, 0) + 1
                if kind == "message" and frame.get("is_user"):
                    self.arrivals[frame["message"]] = time.perf_counter()
                if self.want and self.counts.get(self.want[0], 0) >= self.want[1]:
                    self.done.set()


async def open_members(urls: list[str]) -> tuple[list[Member], list[asyncio.Task]]:
    members, tasks = [], []
    for url in urls:
        member = Member(url)
        ready = asyncio.Event()
        tasks.append(asyncio.create_task(member.run(ready)))
        await ready.wait()
        members.append(member)
    # wait until every member's join reached every process (presence is asynchronous)
    await asyncio.sleep(0.5)
    return members, tasks


async def close_members(tasks: list[asyncio.Task]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def busy_room(procs: list[ServerProcess], members_n: int, messages: int, room: str) -> dict:
    urls = [procs[i % len(procs)].url(room, f"m{i}") for i in range(members_n)]
    members, tasks = await open_members(urls)
    sender = members[0]
    for m in members:
        m.want = ("message", messages)
        m.done.clear()
    cpu0 = [cpu_seconds(p.pid) for p in procs]
    t0 = time.perf_counter()
    for i in range(messages):
        await sender.ws.send(json.dumps({"type": "message", "message": f"b{i}"}))
    async with asyncio.timeout(WAIT):
        await asyncio.gather(*(m.done.wait() for m in members))
    wall = time.perf_counter() - t0
    cpu = sum(cpu_seconds(p.pid) - c for p, c in zip(procs, cpu0))
    await close_members(tasks)
    return {
        "deliveries_per_s": messages * members_n / wall,
        "wall_s": wall,
        "server_cpu_s": cpu,
        "cpu_us_per_delivery": 1e6 * cpu / (messages * members_n),
    }


async def chunks(procs: list[ServerProcess], members_n: int, prompts: int, room: str, per_reply: int) -> dict:
    urls = [procs[i % len(procs)].url(room, f"c{i}") for i in range(members_n)]
    members, tasks = await open_members(urls)
    for m in members:
        m.want = ("ai_complete", prompts)
    t0 = time.perf_counter()
    for i in range(prompts):
        await members[i % members_n].ws.send(json.dumps({"type": "message", "message": f"p{i}"}))
    async with asyncio.timeout(WAIT):
        await asyncio.gather(*(m.done.wait() for m in members))
    wall = time.perf_counter() - t0
    got = sum(m.counts.get("ai_chunk", 0) for m in members)
    await close_members(tasks)
    return {
        "chunks_per_s": got / wall,
        "chunks": got,
        "expected": prompts * per_reply * members_n,
        "wall_s": wall,
    }


async def many_rooms(procs: list[ServerProcess], rooms: int, messages: int) -> dict:
    urls = [procs[(r + i) % len(procs)].url(f"room{r}", f"r{r}u{i}") for r in range(rooms) for i in range(4)]
    members, tasks = await open_members(urls)
    for m in members:
        m.want = ("message", messages)
    t0 = time.perf_counter()

    async def talk(sender: Member, r: int) -> None:
        for i in range(messages):
            await sender.ws.send(json.dumps({"type": "message", "message": f"r{r}-{i}"}))

    await asyncio.gather(*(talk(members[4 * r], r) for r in range(rooms)))
    async with asyncio.timeout(WAIT):
        await asyncio.gather(*(m.done.wait() for m in members))
    wall = time.perf_counter() - t0
    await close_members(tasks)
    return {"deliveries_per_s": rooms * 4 * messages / wall, "wall_s": wall}


async def hop(procs: list[ServerProcess], samples: int) -> dict:
    members, tasks = await open_members(
        [procs[0].url("hop", "s"), procs[0].url("hop", "same"), procs[1].url("hop", "other")]
    )
    sender, same, other = members
    sent: dict[str, float] = {}
    for i in range(samples):
        text = f"h{i}"
        sent[text] = time.perf_counter()
        await sender.ws.send(json.dumps({"type": "message", "message": text}))
        same.want = other.want = ("message", i + 1)
        same.done.clear()
        other.done.clear()
        async with asyncio.timeout(WAIT):
            await asyncio.gather(same.done.wait(), other.done.wait())
    await close_members(tasks)
    lat_same = [1e3 * (same.arrivals[t] - s) for t, s in sent.items()]
    lat_other = [1e3 * (other.arrivals[t] - s) for t, s in sent.items()]
    hops = [b - a for a, b in zip(lat_same, lat_other)]
    return {
        "same_p50_ms": percentile(lat_same, 50),
        "same_p99_ms": percentile(lat_same, 99),
        "other_p50_ms": percentile(lat_other, 50),
        "other_p99_ms": percentile(lat_other, 99),
        "hop_p50_ms": percentile(hops, 50),
        "hop_p99_ms": percentile(hops, 99),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=40)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--chunks", type=int, default=40)
    parser.add_argument("--rooms", type=int, default=20)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--quick", action="store_true", help="small numbers: a smoke run")
    parser.add_argument("--no-peer", dest="peer", action="store_false", help="skip Django Channels")
    parser.add_argument("--peer-venv", default=str(Path(tempfile.gettempdir()) / "chatkit-bench-peer-venv"))
    args = parser.parse_args()
    if args.quick:
        args.members, args.messages, args.prompts, args.rooms, args.samples = 8, 20, 4, 4, 20
    raise_nofile()
    load_at_start = load_average()
    print(f"load average (1, 5, 15 min) at the start: {load_at_start}")
    counts = [int(n) for n in args.processes.split(",")]
    echo = ["--echo-chunks", str(args.chunks), "--echo-delay-ms", "0", "--broker-heartbeat", "1"]
    rows: list[dict] = []
    redis = Redis()
    try:
        configs: list[tuple[str, int, bool]] = [("no broker (baseline)", 1, False)]
        configs += [(f"{n} process{'es' if n > 1 else ''} + Redis", n, True) for n in counts]
        for label, n, with_broker in configs:
            tmp = tempfile.mkdtemp(prefix="chatkit-bench-scale-")
            db = os.path.join(tmp, "scale.db")
            procs = start_processes(n, redis if with_broker else None, db, echo + ["--reply-queue", "0"])
            try:
                busy = await busy_room(procs, args.members, args.messages, f"busy-{n}-{with_broker}")
                rooms = await many_rooms(procs, args.rooms, max(5, args.messages // 10))
            finally:
                for p in procs:
                    p.stop()
            procs = start_processes(n, redis if with_broker else None, db, echo + ["--reply-queue", "1000"])
            try:
                streamed = await chunks(
                    procs, args.members, args.prompts, f"chunks-{n}-{with_broker}", args.chunks
                )
            finally:
                for p in procs:
                    p.stop()
            shutil.rmtree(tmp, ignore_errors=True)
            rows.append(
                {
                    "config": label,
                    "processes": n,
                    "deliveries/s": busy["deliveries_per_s"],
                    "cpu µs/delivery": busy["cpu_us_per_delivery"],
                    "chunks/s": streamed["chunks_per_s"],
                    "many rooms deliveries/s": rooms["deliveries_per_s"],
                }
            )
        if args.peer:
            venv = peer_venv(Path(args.peer_venv))
            for n in counts:
                peers = [Daphne(venv, redis.url) for _ in range(n)]
                try:
                    busy = await busy_room(peers, args.members, args.messages, f"peerbusy{n}")  # type: ignore[arg-type]
                    rooms = await many_rooms(peers, args.rooms, max(5, args.messages // 10))  # type: ignore[arg-type]
                finally:
                    for p in peers:
                        p.stop()
                rows.append(
                    {
                        "config": f"Channels: {n} daphne + Redis",
                        "processes": n,
                        "deliveries/s": busy["deliveries_per_s"],
                        "cpu µs/delivery": busy["cpu_us_per_delivery"],
                        "chunks/s": None,
                        "many rooms deliveries/s": rooms["deliveries_per_s"],
                    }
                )
        tmp = tempfile.mkdtemp(prefix="chatkit-bench-scale-")
        procs = start_processes(2, redis, os.path.join(tmp, "hop.db"), echo + ["--reply-queue", "0"])
        try:
            hop_result = await hop(procs, args.samples)
        finally:
            for p in procs:
                p.stop()
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        redis.stop()
    base = rows[0]
    for row in rows:
        row["vs baseline"] = ratio(row["deliveries/s"], base["deliveries/s"])
    print_table(
        f"One busy room of {args.members} members, {args.messages} messages; "
        f"{args.prompts} replies × {args.chunks} chunks; {args.rooms} rooms × 4 members",
        rows,
        ["config", "deliveries/s", "vs baseline", "cpu µs/delivery", "chunks/s", "many rooms deliveries/s"],
    )
    print_table(
        "Broker hop (2 processes): send → receive, ms",
        [hop_result],
        ["same_p50_ms", "same_p99_ms", "other_p50_ms", "other_p99_ms", "hop_p50_ms", "hop_p99_ms"],
    )
    cores = os.cpu_count()
    note = (
        f"This machine has {cores} cores shared by the load generator, Redis and every chatkit process "
        "(and, here, other work). More processes cannot add CPU, so the figures show what the broker "
        "costs (the hop, CPU per delivery) and that one room stays one ordered room across processes — "
        "not a speed-up. Scaling out pays where each process gets its own cores or host. The Channels rows "
        "store nothing (chatkit commits each message to SQLite first) and have no AI replies (chunks/s)."
    )
    print("\n" + note)
    write_results(
        "scale",
        {
            "args": vars(args),
            "load_average_at_start": load_at_start,
            "rows": rows,
            "hop": hop_result,
            "note": note,
        },
    )


if __name__ == "__main__":
    asyncio.run(main())
