"""Capacity for a class: how many rooms streaming at once, and how big one room, one process serves.

    python benchmarks/capacity.py                          # both ramps, chatkit and the baseline
    python benchmarks/capacity.py --rooms 50,100,200 --members 100,250 --duration 3
    python benchmarks/capacity.py --tokens-per-frame 2 --chunks 150 --warmup 12 --duration 12   # 300-token replies

**Rooms ramp.** One client per room sends a message and reads the reply —
``--chunks`` pieces paced at ``--tokens-per-s`` (50/s, the tutor's pace: the
echo streamer with a 20 ms delay; ``--tokens-per-frame 2``: a piece every 40 ms
carrying two, as models that send several tokens per chunk do) — then sends the
next, so every room streams all the time. Both echo streamers wait on a shared
tick (``--pace-tick-ms``, chatkit's :class:`~chatkit.pacing.SharedTicks`; ``0``:
a timer per piece). Starts are spread over one reply's length (or half the
warm-up, if shorter), so replies start and end all through the window. For each number of rooms, after a warm-up, the report gives the
server's **added latency per chunk** (the streamer's yield, stamped with
``time.monotonic()`` in the server, to the client's receipt) p50/p99, chunks
per second, the server's CPU % and CPU seconds per 1,000 frames, and the **pace**: the chunks
delivered over ``rooms × frames per second``. The ramp stops at the first step whose
p99 is over ``--bound-ms`` (10 ms) *or* that does not keep the pace (below
``--min-pace``, 0.85): a saturated server makes every stream slower rather than
each chunk later (the echo streamer sleeps after a late piece), which a latency
bound alone does not see. An idle server delivers ~0.94 of the nominal rate (the
streamer's sleeps and the gap between replies). The capacity is the largest step
within both. Goal: ≥ 1,000 concurrent streams.

**Room-size ramp.** ``M`` members in one room receive one streamed reply at the
same pace; the largest ``M`` whose p99 added latency stays within the bound.

Both servers run the same ramps in the same run (chatkit with its store on,
the bare ``websockets`` baseline with none); the ratio is chatkit's capacity
over the baseline's. The load generator is a minimal WebSocket client written
for this (no task or future per frame, no JSON parsing: only the time stamp is
read), so one process keeps up with thousands of streams; it still shares the machine: its CPU % is in the table,
and a step where it is saturated measures it, not the server — read the
``loadgen_cpu_pct`` column before the latency.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import re
import time

from common import (
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

STAMP = re.compile(rb'"chunk": ?"(\d+\.\d+) ')
PIECE = re.compile(rb"(\d+\.\d{6}) ")


class RawClient(asyncio.Protocol):
    """A minimal WebSocket client (RFC 6455 framing by hand): reads frames without a task or a future
    per frame and without parsing JSON, so that one load generator can keep up with thousands of
    streams. Only what the benchmark needs: text frames in, small masked text frames out."""

    def __init__(self, path: str, stats: Stats, on_complete=None) -> None:
        self.path = path
        self.stats = stats
        self.on_complete = on_complete
        self.buffer = b""
        self.handshaken = False
        self.opened = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def connection_lost(self, exc) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed before the connection frame"))

    def close(self) -> None:
        """A close frame (1000, masked with a zero key), then the TCP connection."""
        if not self.transport.is_closing():
            self.transport.write(b"\x88\x82\0\0\0\0\x03\xe8")
            self.transport.close()

    def send_text(self, text: str) -> None:
        payload = text.encode()
        assert len(payload) < 126
        # Masked with a zero key: XOR with zeros leaves the payload as is.
        self.transport.write(bytes((0x81, 0x80 | len(payload))) + b"\0\0\0\0" + payload)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        buf = self.buffer + data
        if not self.handshaken:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buf
                return
            if b" 101 " not in buf[:end]:
                self.transport.close()
                return
            self.handshaken = True
            buf = buf[end + 4 :]
        pos, size = 0, len(buf)
        stats = self.stats
        while size - pos >= 2:
            opcode, length = buf[pos] & 0x0F, buf[pos + 1] & 0x7F
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if size - pos < head + length:
                break
            payload = buf[pos + head : pos + head + length]
            pos += head + length
            if opcode == 0x9:  # ping: answer with a pong
                self.transport.write(bytes((0x8A, 0x80 | len(payload))) + b"\0\0\0\0" + payload)
                continue
            if opcode == 0x8:
                self.transport.close()
                continue
            if not self.opened.done():
                self.opened.set_result(None)  # the connection frame
                continue
            if stats.recording:
                stats.frames += 1
            head24 = payload[:24]
            if b"ai_chunk" in head24:
                if stats.recording:
                    m = STAMP.search(payload)
                    if m:  # one piece, or several merged into one frame (--coalesce-chunks)
                        for stamp in PIECE.findall(payload, m.start(1)):
                            stats.chunks += 1
                            stats.added.append(now - float(stamp))
            elif b"ai_complete" in head24 and self.on_complete is not None:
                self.on_complete(self)
        self.buffer = buf[pos:]


class Stats:
    def __init__(self) -> None:
        self.recording = False
        self.added: list[float] = []
        self.frames = 0
        self.chunks = 0
        self.completes = 0


async def open_raw(server: ServerProcess, room: str, user: str, stats: Stats, on_complete=None) -> RawClient:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        lambda: RawClient(f"/ws/chat/{room}/?user={user}", stats, on_complete), "127.0.0.1", server.port
    )
    async with asyncio.timeout(60):
        await client.opened
    return client


async def rooms_step(
    server: ServerProcess, rooms: int, warmup: float, duration: float, frames_per_s: float, reply_s: float
) -> dict:
    tag = time.monotonic_ns()
    stats = Stats()
    stopping = [False]
    loop = asyncio.get_running_loop()

    def next_message(client: RawClient) -> None:  # a reply ended: ask for the next one at once
        if not stopping[0]:
            client.send_text('{"message":"pace"}')

    clients = await gather_bounded(
        [open_raw(server, f"cap{tag}-{i}", f"s{i}", stats, next_message) for i in range(rooms)], 50
    )
    spread = reply_s if reply_s <= warmup else warmup / 2  # replies turn over all through the window
    for client in clients:
        loop.call_later(random.random() * spread, next_message, client)
    await asyncio.sleep(warmup)
    stats.recording = True
    with CpuMeter(server.pid) as cpu:
        await asyncio.sleep(duration)
    stats.recording = False
    stopping[0] = True
    for client in clients:
        client.close()
    return {
        "rooms": rooms,
        "chunks_per_s": stats.chunks / cpu.wall_s,
        "pace": stats.chunks / cpu.wall_s / (rooms * frames_per_s),
        "added_p50_ms": percentile(stats.added, 50) * 1000,
        "added_p99_ms": percentile(stats.added, 99) * 1000,
        "cpu_s_per_1k": cpu_per_1k(cpu.server_s, stats.frames),
        "server_cpu_pct": cpu.server_pct,
        "loadgen_cpu_pct": cpu.loadgen_pct,
    }


async def room_size_step(server: ServerProcess, members: int) -> dict:
    room = f"big{time.monotonic_ns()}"
    stats = Stats()
    all_done = asyncio.Event()

    def completed(client: RawClient) -> None:
        stats.completes += 1
        if stats.completes == members:
            all_done.set()

    clients = await gather_bounded(
        [open_raw(server, room, f"m{i}", stats, completed) for i in range(members)], 50
    )
    stats.recording = True  # counts the joins' presence frames until they settle
    quiet = -1
    while quiet != stats.frames:
        quiet = stats.frames
        await asyncio.sleep(0.5)
    stats.frames = stats.chunks = 0
    stats.added.clear()
    with CpuMeter(server.pid) as cpu:
        clients[0].send_text('{"message":"one reply for the whole room"}')
        try:
            async with asyncio.timeout(120):
                await all_done.wait()
        except TimeoutError:
            pass
    stats.recording = False
    for client in clients:
        client.close()
    return {
        "members": members,
        "chunks_per_s": stats.chunks / cpu.wall_s,
        "completed": stats.completes,
        "added_p50_ms": percentile(stats.added, 50) * 1000,
        "added_p99_ms": percentile(stats.added, 99) * 1000,
        "cpu_s_per_1k": cpu_per_1k(cpu.server_s, stats.frames),
        "server_cpu_pct": cpu.server_pct,
        "loadgen_cpu_pct": cpu.loadgen_pct,
    }


def within(row: dict, bound_ms: float, min_pace: float) -> bool:
    """A step within the latency bound that keeps the pace (room-size steps have no pace)."""
    return row["added_p99_ms"] <= bound_ms and row.get("pace", 1.0) >= min_pace


def capacity(rows: list[dict], key: str, bound_ms: float, min_pace: float) -> int:
    """The largest step within the bound before the first one over it."""
    best = 0
    for row in rows:
        if not within(row, bound_ms, min_pace):
            break
        best = row[key]
    return best


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", default="50,100,200,300,400,500,600,800,1000,1200,1500,2000")
    parser.add_argument("--members", default="100,250,500,1000,1500,2000")
    parser.add_argument("--tokens-per-s", type=float, default=50.0)
    parser.add_argument("--chunks", type=int, default=50, help="pieces (frames) per reply")
    parser.add_argument(
        "--tokens-per-frame",
        type=int,
        default=1,
        help="tokens each piece carries (a model sending several per chunk): frames/s = tokens/s ÷ this",
    )
    parser.add_argument("--bound-ms", type=float, default=10.0, help="p99 added latency per chunk allowed")
    parser.add_argument(
        "--min-pace", type=float, default=0.85, help="chunks delivered over rooms × frames/s required"
    )
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--servers", default="baseline,chatkit")
    parser.add_argument(
        "--schedule",
        action="store_true",
        help="both echo streamers keep a timetable: a late server gets the pieces due at once (bursts)",
    )
    parser.add_argument(
        "--pace-tick-ms",
        type=float,
        default=2.0,
        help="both echo streamers wake on a shared tick of this many ms (chatkit's default); 0 = a timer per piece",
    )
    parser.add_argument(
        "--chatkit-options", default="", help="more `chatkit serve` options, e.g. '--coalesce-chunks'"
    )
    args = parser.parse_args()
    if args.tokens_per_frame < 1:
        parser.error("--tokens-per-frame must be 1 or more")
    frames_per_s = args.tokens_per_s / args.tokens_per_frame
    reply_s = args.chunks / frames_per_s
    if args.warmup < reply_s:
        print(
            f"note: replies last {reply_s:g} s, longer than --warmup {args.warmup:g} s: they start within "
            f"{args.warmup / 2:g} s of each other, so the window may hold few replies' starts and ends "
            "(give --warmup at least a reply's length)"
        )
    steps = [int(x) for x in args.rooms.split(",") if x]
    sizes = [int(x) for x in args.members.split(",") if x]
    raise_nofile(max(steps + sizes + [100]) * 2 + 400)
    print(f"load average (1, 5, 15 min) at the start: {load_average()}")
    options = [
        "--echo-chunks",
        str(args.chunks),
        "--echo-stamp",
        "--echo-delay-ms",
        str(1000 / frames_per_s),
        *(["--echo-schedule"] if args.schedule else []),
        "--pace-tick-ms",
        str(args.pace_tick_ms),
    ]
    room_rows, size_rows = [], []
    for kind in args.servers.split(","):
        extra = args.chatkit_options.split() if kind == "chatkit" else []
        with ServerProcess(kind, options + extra) as server:
            for rooms in steps:
                row = {
                    "server": kind,
                    **await rooms_step(server, rooms, args.warmup, args.duration, frames_per_s, reply_s),
                }
                room_rows.append(row)
                print(
                    f"  {kind:8} {rooms:5} rooms  p99 {row['added_p99_ms']:7.2f} ms  {row['chunks_per_s']:9,.0f} "
                    f"chunks/s  pace {row['pace']:.2f}  server {row['server_cpu_pct']:5.1f} %  loadgen {row['loadgen_cpu_pct']:5.1f} %",
                    flush=True,
                )
                await asyncio.sleep(args.chunks / frames_per_s + 0.5)  # abandoned replies finish
                if not within(row, args.bound_ms, args.min_pace):
                    break
            for members in sizes:
                row = {"server": kind, **await room_size_step(server, members)}
                size_rows.append(row)
                print(
                    f"  {kind:8} {members:5} members p99 {row['added_p99_ms']:7.2f} ms  server "
                    f"{row['server_cpu_pct']:5.1f} %  loadgen {row['loadgen_cpu_pct']:5.1f} %",
                    flush=True,
                )
                if not row["added_p99_ms"] <= args.bound_ms:
                    break
    print_table(
        f"rooms streaming at {args.tokens_per_s:g} tokens/s, {args.tokens_per_frame} per frame ({args.chunks} frames per reply)",
        room_rows,
        [
            "server",
            "rooms",
            "chunks_per_s",
            "pace",
            "added_p50_ms",
            "added_p99_ms",
            "cpu_s_per_1k",
            "server_cpu_pct",
            "loadgen_cpu_pct",
        ],
    )
    print_table(
        f"one room, one reply at {args.tokens_per_s:g} tokens/s, {args.tokens_per_frame} per frame",
        size_rows,
        [
            "server",
            "members",
            "completed",
            "chunks_per_s",
            "added_p50_ms",
            "added_p99_ms",
            "cpu_s_per_1k",
            "server_cpu_pct",
            "loadgen_cpu_pct",
        ],
    )
    summary = []
    for kind in args.servers.split(","):
        summary.append(
            {
                "server": kind,
                "max_rooms": capacity(
                    [r for r in room_rows if r["server"] == kind], "rooms", args.bound_ms, args.min_pace
                ),
                "max_members": capacity(
                    [r for r in size_rows if r["server"] == kind], "members", args.bound_ms, args.min_pace
                ),
            }
        )
    ratios = []
    if len(summary) == 2:
        base, chat = summary
        common_rooms = [r["rooms"] for r in room_rows if r["server"] == "chatkit"]
        ratios.append(
            {
                "rooms_ratio": ratio(chat["max_rooms"], base["max_rooms"]),
                "members_ratio": ratio(chat["max_members"], base["max_members"]),
                "cpu_per_frame_ratio_at_max_common_step": _cpu_ratio(room_rows, common_rooms),
            }
        )
    print_table(
        f"capacity within p99 ≤ {args.bound_ms:g} ms added latency per chunk, keeping ≥ {args.min_pace:g} of the pace",
        summary,
        ["server", "max_rooms", "max_members"],
    )
    if ratios:
        print_table("chatkit / baseline (same run)", ratios, list(ratios[0]))
    write_results(
        "capacity",
        {
            "rooms": room_rows,
            "room_size": size_rows,
            "summary": summary,
            "ratios": ratios,
            "args": vars(args),
        },
    )


def _cpu_ratio(rows: list[dict], steps: list[int]) -> float:
    """CPU per frame, chatkit / baseline, at the largest number of rooms both ran."""
    for rooms in sorted(steps, reverse=True):
        pair = {r["server"]: r for r in rows if r["rooms"] == rooms}
        if len(pair) == 2:
            return ratio(pair["chatkit"]["cpu_s_per_1k"], pair["baseline"]["cpu_s_per_1k"])
    return float("nan")


if __name__ == "__main__":
    asyncio.run(main())
