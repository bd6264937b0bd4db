"""The floor under capacity: what one paced token costs any asyncio server on this machine.

    python benchmarks/send_floor.py                      # 1,000 streams at 50 tokens/s, three designs
    python benchmarks/send_floor.py --streams 500,1000,1500 --duration 5

No WebSocket library, no JSON, no store: one process writes a 60-byte frame
(a WebSocket text frame's size for one ``ai_chunk``) per token to ``--streams``
loopback TCP connections at ``--tokens-per-s`` each; a second process reads and
discards. The sender's user and system CPU per write (``getrusage``) is the
floor under ``capacity.py``'s CPU per frame, for three ways of pacing:

- ``tick writer``: one loop timer per tick writes every token due — no task per
  stream (what a server could do if streams were not coroutines);
- ``task + shared ticks``: a task per stream waiting on
  :class:`chatkit.pacing.SharedTicks` (chatkit's and the baseline's echo, ``--pace-tick-ms 2``);
- ``task + sleep``: a task per stream with a timer per token (``--pace-tick-ms 0``).
  Both task designs keep a timetable (``until``), as the echo with ``--echo-schedule`` does.

``streams per core`` is ``1 / (tokens-per-s × CPU per write)``: how many such
streams one core could carry with nothing else to do. 1,000 streams at 50
tokens/s need ≤ 20 µs per token all in (``benchmarks/README.md``, *Capacity*).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import resource
import socket
import time

from common import load_average, print_table, raise_nofile, write_results

from chatkit.pacing import SharedTicks

FRAME = b"\x81\x3a" + b"x" * 58  # a 60-byte text frame (58 of payload): one time-stamped ai_chunk
DESIGNS = ("tick writer", "task + shared ticks", "task + sleep")


def _receiver(ports: multiprocessing.Queue) -> None:
    async def main() -> None:
        class Discard(asyncio.Protocol):
            def data_received(self, data: bytes) -> None:
                pass

        server = await asyncio.get_running_loop().create_server(Discard, "127.0.0.1", 0, backlog=4096)
        ports.put(server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(main())


async def run(design: str, port: int, streams: int, rate: float, duration: float, tick: float) -> dict:
    loop = asyncio.get_running_loop()
    transports = []
    for _ in range(streams):
        transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transports.append(transport)
    sent = 0
    rng = random.Random(0)
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.monotonic()
    end = loop.time() + duration
    if design == "tick writer":
        per_tick, owed, i = streams * rate * tick, 0.0, 0
        due = loop.time()
        while loop.time() < end:
            due += tick
            await asyncio.sleep(max(0.0, due - loop.time()))
            owed += per_tick
            while owed >= 1:
                transports[i % streams].write(FRAME)
                i, owed, sent = i + 1, owed - 1, sent + 1
    else:
        ticks = SharedTicks(tick if design == "task + shared ticks" else 0)

        async def stream(transport: asyncio.Transport) -> None:
            nonlocal sent
            due = loop.time() + rng.random() / rate  # streams start out of phase, as replies do
            while due < end:
                await ticks.until(due)
                transport.write(FRAME)
                sent += 1
                due += 1 / rate

        await asyncio.gather(*(stream(t) for t in transports))
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    for transport in transports:
        transport.close()
    per_write = (user + system) / sent
    return {
        "design": design,
        "streams": streams,
        "writes_per_s": sent / wall,
        "pace": sent / wall / (streams * rate),
        "user_us": user / sent * 1e6,
        "sys_us": system / sent * 1e6,
        "cpu_us_per_write": per_write * 1e6,
        "cpu_pct": (user + system) / wall * 100,
        "streams_per_core": 1 / (rate * per_write),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="1000")
    parser.add_argument("--tokens-per-s", type=float, default=50.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument(
        "--tick-ms", type=float, default=2.0, help="the tick writer's and the shared ticks' tick"
    )
    parser.add_argument("--designs", default=",".join(DESIGNS))
    args = parser.parse_args()
    counts = [int(x) for x in args.streams.split(",") if x]
    raise_nofile(max(counts) * 2 + 200)
    print(f"load average (1, 5, 15 min) at the start: {load_average()}")
    ports: multiprocessing.Queue = multiprocessing.Queue()
    receiver = multiprocessing.Process(target=_receiver, args=(ports,), daemon=True)
    receiver.start()
    try:
        port = ports.get(timeout=30)
        rows = []
        for streams in counts:
            for design in args.designs.split(","):
                row = await run(design, port, streams, args.tokens_per_s, args.duration, args.tick_ms / 1000)
                rows.append(row)
                print(
                    f"  {design:19} {streams:5} streams  {row['cpu_us_per_write']:5.1f} µs per write "
                    f"(user {row['user_us']:4.1f}, sys {row['sys_us']:4.1f})  pace {row['pace']:.2f}",
                    flush=True,
                )
    finally:
        receiver.terminate()
        receiver.join()
    print_table(
        f"paced 60-byte writes at {args.tokens_per_s:g} per stream per second, sender's CPU",
        rows,
        list(rows[0]),
    )
    write_results("send-floor", {"rows": rows, "args": vars(args)})


if __name__ == "__main__":
    asyncio.run(main())
