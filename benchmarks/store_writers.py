"""The store's writer options, built and measured side by side (issue 16 item 2).

Each option runs the hub's hot path of one reply — the user's message with the
reply's row reserved in the same transaction (``append_with_reply``), the
reply's text (``finish_reply``), a resume read (``messages_after``) — for 1, 10
and 50 rooms at once, with the same SQL, the same file database (WAL,
``synchronous=NORMAL``) and the same group commit (every write waiting goes into
one transaction; a write's result is returned only after COMMIT, so "broadcast
only after commit" and exact resume hold for every option):

- ``thread``: chatkit's ``Store`` (``writer="thread"``): a thread the store owns
  with a plain ``sqlite3`` connection, one hop per batch or read;
- ``loop``: chatkit's ``Store`` (``writer="loop"``): plain ``sqlite3`` on the event
  loop's thread, no hop;
- ``aiosqlite``: aiosqlite's public API (``execute``/``fetchone``): its thread, one
  hop per statement (it has no public call that runs a whole batch in one hop);
- ``process``: a writer process owning the connection; each batch is pickled
  down a pipe as data (statement kind + arguments) and its results come back
  the same way.

Printed: store calls per CPU second (all threads, and the writer process's CPU
for ``process``) — best of ``--repeat`` alternating runs, so the other load on a
shared machine cancels out — and the worst stall of the event loop (a 1 ms
ticker's lateness) during the run: what a slow statement costs every
connection of the process when it runs on the loop.

    python benchmarks/store_writers.py [--rooms 1,10,50] [--replies 300] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pickle
import sqlite3
import struct
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cpu_seconds, load_average, print_table, write_results  # noqa: E402

from chatkit.store import Store  # noqa: E402

_COLUMNS = "id, session_id, user, is_user, content, status, client_id, created_at"
_SESSION = "INSERT OR IGNORE INTO sessions (id, created_at) VALUES (?, ?)"
_MESSAGE = (
    "INSERT INTO messages (session_id, user, is_user, content, status, client_id, created_at, wants_reply)"
    " VALUES (?, ?, 1, ?, 'complete', NULL, ?, 0) RETURNING id"
)
_REPLY = (
    "INSERT INTO messages (session_id, user, is_user, content, status, client_id, created_at)"
    " VALUES (?, ?, 0, '', 'streaming', NULL, ?) RETURNING id"
)
_FINISH = "UPDATE messages SET content = ?, status = ? WHERE id = ? AND status = 'streaming'"
_AFTER = f"SELECT {_COLUMNS} FROM messages WHERE session_id = ? AND id > ? ORDER BY id LIMIT -1"
NOW = "2026-11-26T00:00:00.000Z"
ANSWER = "answer " * 20


class HotPath:
    """What the benchmark calls: the three store calls of one reply."""

    async def append_with_reply(self, room: str, text: str) -> tuple[int, int]:
        raise NotImplementedError

    async def finish_reply(self, reply_id: int, text: str) -> bool:
        raise NotImplementedError

    async def messages_after(self, room: str, after: int) -> list[Any]:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def extra_cpu(self) -> float:
        """CPU seconds spent outside this process (the writer process)."""
        return 0.0


class ChatkitStore(HotPath):
    """chatkit's own ``Store`` with ``writer="thread"`` or ``"loop"``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @classmethod
    async def open(cls, path: str, writer: Any) -> ChatkitStore:
        return cls(await Store.open(path, writer=writer))

    async def append_with_reply(self, room: str, text: str) -> tuple[int, int]:
        a = await self.store.append_with_reply(room, "u", text, reply_user="AI")
        assert a.reply is not None
        return a.message.id, a.reply.id

    async def finish_reply(self, reply_id: int, text: str) -> bool:
        return await self.store.finish_reply(reply_id, text, "complete")

    async def messages_after(self, room: str, after: int) -> list[Any]:
        return await self.store.messages_after(room, after)

    async def close(self) -> None:
        await self.store.close()


class GroupCommit(HotPath):
    """Group commit over an async "run these write commands in one transaction"."""

    def __init__(self) -> None:
        self._pending: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._sessions: set[str] = set()

    async def _batch(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        raise NotImplementedError

    async def _write(self, command: tuple[Any, ...]) -> Any:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((command, future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_batches())
        return await future

    async def _write_batches(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                results = await self._batch([c for c, _ in batch])
                for (_, future), result in zip(batch, results):
                    future.set_result(result)
        finally:
            self._writer = None

    async def append_with_reply(self, room: str, text: str) -> tuple[int, int]:
        known = room in self._sessions
        result = await self._write(("append", room, text, known))
        self._sessions.add(room)
        return result

    async def finish_reply(self, reply_id: int, text: str) -> bool:
        return await self._write(("finish", reply_id, text))


def run_commands(con: sqlite3.Connection, commands: list[tuple[Any, ...]]) -> list[Any]:
    """One transaction for a batch of commands (the writer process's side)."""
    con.execute("BEGIN IMMEDIATE")
    results: list[Any] = []
    for command in commands:
        if command[0] == "append":
            _, room, text, known = command
            if not known:
                con.execute(_SESSION, (room, NOW)).close()
            (msg_id,) = con.execute(_MESSAGE, (room, "u", text, NOW)).fetchone()
            (reply_id,) = con.execute(_REPLY, (room, "AI", NOW)).fetchone()
            results.append((msg_id, reply_id))
        else:
            _, reply_id, text = command
            cur = con.execute(_FINISH, (text, "complete", reply_id))
            results.append(cur.rowcount == 1)
    con.execute("COMMIT")
    return results


class AiosqliteStore(GroupCommit):
    """aiosqlite's public API: each ``execute``/``fetchone`` is one hop to its thread."""

    def __init__(self, db: Any) -> None:
        super().__init__()
        self.db = db

    @classmethod
    async def open(cls, path: str) -> AiosqliteStore:
        import aiosqlite

        await (await Store.open(path)).close()  # the schema, created by chatkit
        db = await aiosqlite.connect(path, isolation_level=None)
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        return cls(db)

    async def _batch(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        db = self.db
        await db.execute("BEGIN IMMEDIATE")
        results: list[Any] = []
        for command in commands:
            if command[0] == "append":
                _, room, text, known = command
                if not known:
                    await db.execute(_SESSION, (room, NOW))
                cur = await db.execute(_MESSAGE, (room, "u", text, NOW))
                (msg_id,) = await cur.fetchone()
                cur = await db.execute(_REPLY, (room, "AI", NOW))
                (reply_id,) = await cur.fetchone()
                results.append((msg_id, reply_id))
            else:
                _, reply_id, text = command
                cur = await db.execute(_FINISH, (text, "complete", reply_id))
                results.append(cur.rowcount == 1)
        await db.execute("COMMIT")
        return results

    async def messages_after(self, room: str, after: int) -> list[Any]:
        return list(await self.db.execute_fetchall(_AFTER, (room, after)))

    async def close(self) -> None:
        await self.db.close()


def _frame(obj: Any) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return struct.pack("!I", len(data)) + data


def writer_process_main(path: str) -> None:
    """The writer process: read a batch, run it, write the results; until EOF."""
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    while header := inp.read(4):
        (size,) = struct.unpack("!I", header)
        kind, payload = pickle.loads(inp.read(size))
        if kind == "write":
            result: Any = run_commands(con, payload)
        else:
            result = con.execute(_AFTER, payload).fetchall()
        out.write(_frame(result))
        out.flush()
    con.close()


class ProcessStore(GroupCommit):
    """A writer process owning the connection; batches and reads go down one pipe, in order."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        super().__init__()
        self.proc = proc
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str) -> ProcessStore:
        await (await Store.open(path)).close()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--writer-process",
            path,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        store = cls(proc)
        await store.messages_after("", 0)  # started and answering (its start-up CPU is not measured)
        return store

    async def _call(self, kind: str, payload: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        async with self._lock:  # one request in flight: answers come back in order
            self.proc.stdin.write(_frame((kind, payload)))
            (size,) = struct.unpack("!I", await self.proc.stdout.readexactly(4))
            return pickle.loads(await self.proc.stdout.readexactly(size))

    async def _batch(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        return await self._call("write", commands)

    async def messages_after(self, room: str, after: int) -> list[Any]:
        return await self._call("read", (room, after))

    def extra_cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    async def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        await self.proc.wait()


OPTIONS: dict[str, Callable[[str], Awaitable[HotPath]]] = {
    "aiosqlite": AiosqliteStore.open,
    "thread": lambda path: ChatkitStore.open(path, "thread"),
    "loop": lambda path: ChatkitStore.open(path, "loop"),
    "process": ProcessStore.open,
}


async def lag_monitor(worst: list[float], stop: asyncio.Event) -> None:
    """The event loop's worst lateness on a 1 ms ticker."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t = loop.time()
        await asyncio.sleep(0.001)
        worst[0] = max(worst[0], loop.time() - t - 0.001)


async def run_option(name: str, rooms: int, replies: int) -> tuple[float, float]:
    """Store calls per CPU second, and the loop's worst stall in ms."""
    with tempfile.TemporaryDirectory() as tmp:
        store = await OPTIONS[name](os.path.join(tmp, "bench.db"))

        async def room(i: int) -> None:
            rid = f"r{i}"
            for k in range(replies):
                msg_id, reply_id = await store.append_with_reply(rid, f"m{k}")
                assert await store.finish_reply(reply_id, ANSWER)
                assert len(await store.messages_after(rid, msg_id - 1)) == 2  # exact: both rows, committed

        worst, stop = [0.0], asyncio.Event()
        monitor = asyncio.create_task(lag_monitor(worst, stop))
        cpu0, extra0 = time.process_time(), store.extra_cpu()
        await asyncio.gather(*(room(i) for i in range(rooms)))
        cpu = time.process_time() - cpu0 + store.extra_cpu() - extra0
        stop.set()
        await monitor
        await store.close()
    return rooms * replies * 3 / cpu, worst[0] * 1000


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rooms", default="1,10,50")
    parser.add_argument("--replies", type=int, default=300, help="replies in all, split over the rooms")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print("load average at start:", load_average(), flush=True)
    rows = []
    for rooms in [int(r) for r in args.rooms.split(",")]:
        best = {name: (0.0, 0.0) for name in OPTIONS}
        for _ in range(args.repeat):
            for name in OPTIONS:
                calls, stall = await run_option(name, rooms, max(1, args.replies // rooms))
                if calls > best[name][0]:
                    best[name] = (calls, stall)
        row: dict[str, Any] = {"rooms": rooms}
        for name, (calls, stall) in best.items():
            row[f"{name} calls/cpu_s"] = round(calls)
            row[f"{name} stall_ms"] = round(stall, 2)
        rows.append(row)
        print_table(f"{rooms} rooms", [row], list(row))
    write_results("store_writers", {"rows": rows, "replies": args.replies, "repeat": args.repeat})


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--writer-process":
        writer_process_main(sys.argv[2])
    else:
        asyncio.run(main())
