"""Chaos across processes: three ``chatkit serve --broker`` processes on one Redis and one database.

Clients are spread over the processes (each knows every URL and rotates on a
drop). One process is SIGKILLed while messages flow, another right after a
reply chunk went out, and Redis is restarted (losing every key) once. At the
end: every message sent is stored once; every client saw every user message
and every finished reply exactly once, all in the same order; no reply is left
``streaming`` (each ends ``complete``, ``cancelled``, ``error`` or ``interrupted``).
Run on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

from chatkit.client import ChatClient, ExponentialBackoff
from chatkit.storage import open_store

from .services import cluster_options

ROOM = "chaos"
PER_CLIENT = 5
WORDS = " ".join(f"w{i}" for i in range(10))  # an echo reply of 11 pieces, 20 ms apart
BEAT = 0.3  # heartbeat: a dead process's members and lease expire after ~1 s
WAIT = 60.0
TERMINAL = {"complete", "cancelled", "error", "interrupted"}


@contextlib.asynccontextmanager
async def deadline(describe):
    """``asyncio.timeout(WAIT)`` that reports what was still missing."""
    try:
        async with asyncio.timeout(WAIT):
            yield
    except TimeoutError:
        raise AssertionError(f"not settled after {WAIT:g} s: {describe()}") from None


def finished_replies(events: list[dict]) -> list[int]:
    out = [e["id"] for e in events if e["type"] == "ai_complete"]
    out += [e["id"] for e in events if e["type"] == "message" and not e["is_user"]]
    return out


def user_messages(events: list[dict]) -> list[int]:
    return [e["id"] for e in events if e["type"] == "message" and e["is_user"]]


async def run_chaos(store_url: str, redis_service, chatkit_serve) -> None:
    options = cluster_options(
        store_url, redis_service.url, heartbeat=BEAT, log_level=os.environ.get("CHAOS_LOG", "WARNING")
    )
    options += ["--rate-limit", "100", "--reply-queue", "100"]
    procs = await asyncio.gather(*(chatkit_serve(*options) for _ in range(3)))
    urls = [p.url(ROOM) for p in procs]
    names = [f"u{i}" for i in range(6)]
    events: dict[str, list[dict]] = {n: [] for n in names}
    changed = asyncio.Event()
    clients = []
    for i, name in enumerate(names):
        home = i % 3
        client = ChatClient(
            urls[home:] + urls[:home],
            user=name,
            policy=ExponentialBackoff(initial=0.05, cap=0.5),
            send_timeout=WAIT,
        )
        client.on_event(events[name].append)
        client.on_event(lambda e: changed.set())
        clients.append(client)
    kills: list[str] = []
    why = "not checked yet"  # what the last check found missing, for the report on a timeout
    try:
        for client in clients:
            await client.start()

        async def talk(client: ChatClient) -> None:
            for k in range(PER_CLIENT):
                await client.send(f"{client.user}-{k} {WORDS}")
                await asyncio.sleep(0.05)

        async def until(predicate) -> None:
            while not predicate():
                changed.clear()
                await changed.wait()

        async def chaos() -> None:
            # 1. mid-message: once a few messages are stored, kill process 0
            await until(lambda: sum(len(user_messages(e)) for e in events.values()) >= 8)
            procs[0].kill()
            kills.append("mid-message")
            # 2. mid-reply: right after a client of process 1 sees a fresh chunk, kill process 1
            watched = events[names[1]]
            seen = len(watched)
            await until(lambda: any(e["type"] == "ai_chunk" for e in watched[seen:]))
            procs[1].kill()
            kills.append("mid-reply")
            # 3. Redis restarts once: every key and subscription is lost
            await asyncio.sleep(0.2)
            await asyncio.to_thread(redis_service.restart)
            kills.append("redis-restart")

        async with deadline(lambda: f"{kills}: {why}"):
            async with asyncio.TaskGroup() as tg:
                tg.create_task(chaos())
                for client in clients:
                    tg.create_task(talk(client))

            async def settled() -> tuple[list[int], list[int], list[str]] | None:
                nonlocal why
                async with await open_store(store_url, recover=False) as store:
                    waiting = await store.count_pending(ROOM)  # first: a claim after it shows in the rows
                    rows = await store.messages_after(ROOM, 0)
                streaming = [r.id for r in rows if r.status == "streaming"]
                if waiting or streaming:
                    why = f"{waiting} prompts waiting, replies {streaming} streaming"
                    return None
                users = [r.id for r in rows if r.is_user]
                replies = [r.id for r in rows if not r.is_user]
                for name, evs in events.items():
                    if (
                        sorted(set(user_messages(evs))) != users
                        or sorted(set(finished_replies(evs))) != replies
                    ):
                        why = (
                            f"{name} lacks messages {sorted(set(users) - set(user_messages(evs)))}"
                            f" and replies {sorted(set(replies) - set(finished_replies(evs)))}"
                        )
                        return None
                return users, replies, [r.content for r in rows if r.is_user]

            while (result := await settled()) is None:
                changed.clear()
                try:
                    async with asyncio.timeout(BEAT):
                        await changed.wait()  # new events, or a heartbeat's worth of reaping
                except TimeoutError:
                    pass
        db_users, db_replies, texts = result
        async with await open_store(store_url, recover=False) as store:
            final = [r for r in await store.messages_after(ROOM, 0) if not r.is_user]
        statuses = {r.status for r in final}
        empty = [r.id for r in final if r.status == "complete" and not r.content]
    finally:
        for client in clients:
            await client.close()

    assert kills == ["mid-message", "mid-reply", "redis-restart"]
    assert sorted(texts) == sorted(f"{n}-{k} {WORDS}" for n in names for k in range(PER_CLIENT)), (
        "lost or duplicated"
    )
    assert statuses <= TERMINAL
    assert empty == [], f"complete replies without text (their prompt missing from the context): {empty}"
    assert len(db_replies) == len(db_users), "every prompt answered exactly once (the queue is in the store)"
    orders = {n: user_messages(events[n]) for n in names}
    for name in names:
        assert orders[name] == db_users, f"{name} saw {orders[name]}, the store has {db_users}"
        seen_replies = finished_replies(events[name])
        assert sorted(seen_replies) == db_replies and len(seen_replies) == len(set(seen_replies)), name
    assert all(c.connections >= 2 for c in clients[:2])  # the killed processes' clients came back


async def test_three_processes_sqlite(tmp_path, redis_service, chatkit_serve):
    await run_chaos(str(tmp_path / "chaos.db"), redis_service, chatkit_serve)


async def test_three_processes_postgres(pg_dsn, redis_service, chatkit_serve):
    await run_chaos(pg_dsn, redis_service, chatkit_serve)
