"""The baseline: a bare ``websockets`` server doing chatkit's job without chatkit.

Same URL shape and the same frames (``connection``, ``message``, ``ai_chunk``,
``ai_complete``, ``pong``), an in-memory set of connections per room,
``websockets.broadcast()``, ids from a counter, no store, no protocol layer,
no validation. Replies are the echo streamer's: the user's words (or
``--echo-chunks`` pieces, optionally time-stamped), with ``asyncio.sleep(0)``
(or ``--echo-delay-ms``) between pieces like chatkit's echo, paced by the same shared-tick
:class:`chatkit.pacing.SharedTicks` (``--pace-tick-ms``: the model's part, though its CPU counts as the server's, as chatkit's does). Not part of the package.

    python benchmarks/baseline_server.py --port 9000 [--ai-replies sender]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import time
from collections import defaultdict
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import broadcast, serve

from chatkit.pacing import SharedTicks

WORD = re.compile(r"\S+\s*|\s+")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--ai-replies", choices=("room", "sender"), default="room")
    parser.add_argument("--echo-chunks", type=int, default=None)
    parser.add_argument("--echo-stamp", action="store_true")
    parser.add_argument("--echo-delay-ms", type=float, default=0.0, help="delay between pieces (pacing)")
    parser.add_argument("--echo-schedule", action="store_true", help="pieces keep a timetable (as chatkit's)")
    parser.add_argument("--pace-tick-ms", type=float, default=2.0, help="shared pacing tick (as chatkit's)")
    args = parser.parse_args()
    ticks = SharedTicks(args.pace_tick_ms / 1000)
    rooms: dict[str, set] = defaultdict(set)
    counter = 0

    async def reply(room: set, sender, text: str) -> None:
        nonlocal counter
        counter += 1
        reply_id = counter
        targets = room if args.ai_replies == "room" else {sender}
        pieces = (
            WORD.findall(text)
            if args.echo_chunks is None
            else [f"{text}#{i} " for i in range(args.echo_chunks)]
        )
        full = []
        loop = asyncio.get_running_loop()
        due = loop.time()
        for piece in pieces:
            due += args.echo_delay_ms / 1000  # as chatkit's echo streamer
            if not args.echo_schedule:
                await ticks.sleep(args.echo_delay_ms / 1000)
            elif due > loop.time():
                await ticks.until(due)
            if args.echo_stamp:
                piece = f"{time.monotonic():.6f} "
            full.append(piece)
            broadcast(targets, json.dumps({"type": "ai_chunk", "chunk": piece, "id": reply_id}))
        broadcast(targets, json.dumps({"type": "ai_complete", "message": "".join(full), "id": reply_id}))

    async def handler(ws) -> None:
        nonlocal counter
        url = urlsplit(ws.request.path)
        name = url.path.split("/")[3]
        user = parse_qs(url.query).get("user", ["guest"])[0]
        room = rooms[name]
        room.add(ws)
        await ws.send(
            json.dumps(
                {
                    "type": "connection",
                    "message": "Connected",
                    "session_id": name,
                    "user": user,
                    "online": [],
                    "last_id": counter,
                }
            )
        )
        queue: list[str] = []
        worker: asyncio.Task | None = None

        async def run_replies() -> None:
            while queue:
                await reply(room, ws, queue.pop(0))

        try:
            async for raw in ws:
                frame = json.loads(raw)
                if frame.get("type") == "ping":
                    await ws.send('{"type":"pong"}')
                    continue
                counter += 1
                broadcast(
                    room,
                    json.dumps(
                        {
                            "type": "message",
                            "message": frame["message"],
                            "is_user": True,
                            "id": counter,
                            "user": user,
                            "timestamp": "",
                            "client_id": None,
                        }
                    ),
                )
                queue.append(frame["message"])
                if worker is None or worker.done():
                    worker = asyncio.create_task(run_replies())
        finally:
            room.discard(ws)
            if worker is not None:
                await worker

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serve(handler, args.host, args.port, max_size=2**16):
        print("ready", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
