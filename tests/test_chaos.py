"""Chaos: a real `chatkit serve` process SIGKILLed twice under three live clients.

At the end every client has seen every user message and every completed reply
exactly once, in the same id order, and the database holds each user message
exactly once. Bounded: about 10 s.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3

from chatkit.client import ChatClient, ExponentialBackoff

from .conftest import TIMEOUT

USERS = ["ann", "bob", "cho"]
PER_USER = 6
WORDS = " ".join(f"w{i}" for i in range(12))  # an echo reply of 13 pieces, 20 ms apart


OPTIONS = ["--llm", "echo", "--echo-delay-ms", "20", "--rate-limit", "100", "--log-level", "WARNING"]


def replies(events: list[dict]) -> list[int]:
    """Ids of completed AI replies an application saw (live or replayed)."""
    out = []
    for e in events:
        if e["type"] == "ai_complete" and e["status"] == "complete":
            out.append(e["id"])
        elif e["type"] == "message" and not e["is_user"] and e["status"] == "complete":
            out.append(e["id"])
    return out


def user_messages(events: list[dict]) -> list[int]:
    return [e["id"] for e in events if e["type"] == "message" and e["is_user"]]


async def test_sigkill_twice_loses_and_duplicates_nothing(tmp_path, chatkit_serve):
    db = str(tmp_path / "chaos.db")
    proc = await chatkit_serve("--db", db, *OPTIONS)  # (tests/services.py: stopped whatever happens)
    port = proc.port
    url = proc.url("chaos")
    events: dict[str, list[dict]] = {u: [] for u in USERS}
    kills = []
    clients = [ChatClient(url, user=u, policy=ExponentialBackoff(initial=0.05, cap=0.4)) for u in USERS]
    try:
        changed = asyncio.Event()  # set by every event any client sees

        def record(user: str, event: dict) -> None:
            events[user].append(event)
            changed.set()

        async def until(predicate) -> None:
            while not predicate():
                changed.clear()
                await changed.wait()

        for client, user in zip(clients, USERS):
            client.on_event(functools.partial(record, user))
            await client.start()

        async def talk(client: ChatClient, user: str) -> None:
            for i in range(PER_USER):
                await client.send(f"{user}-{i} {WORDS}")
                await asyncio.sleep(0.1)  # a person's pace: the conversation spans both kills

        async def chaos() -> None:
            nonlocal proc
            # 1. mid-conversation: once a few messages are stored
            await until(lambda: sum(len(user_messages(e)) for e in events.values()) >= 6)
            proc.kill()
            kills.append("mid-conversation")
            proc = await chatkit_serve("--db", db, *OPTIONS, port=port)
            # 2. mid-reply: right when the newest thing a client saw is an ai_chunk
            await until(lambda: bool(events["ann"]) and events["ann"][-1]["type"] == "ai_chunk")
            proc.kill()
            kills.append("mid-reply")
            proc = await chatkit_serve("--db", db, *OPTIONS, port=port)

        async with asyncio.timeout(4 * TIMEOUT):
            async with asyncio.TaskGroup() as tg:
                tg.create_task(chaos())
                for client, user in zip(clients, USERS):
                    tg.create_task(talk(client, user))

            # Wait until every client has caught up with everything the database holds.
            def settled() -> tuple[list[int], list[int]] | None:
                con = sqlite3.connect(db)
                try:
                    if con.execute("SELECT COUNT(*) FROM messages WHERE status = 'streaming'").fetchone()[0]:
                        return None
                    users = [
                        r[0] for r in con.execute("SELECT id FROM messages WHERE is_user = 1 ORDER BY id")
                    ]
                    done = [
                        r[0]
                        for r in con.execute(
                            "SELECT id FROM messages WHERE is_user = 0 AND status = 'complete' ORDER BY id"
                        )
                    ]
                finally:
                    con.close()
                for e in events.values():
                    if sorted(set(user_messages(e))) != users or sorted(set(replies(e))) != done:
                        return None
                return users, done

            # The database changes before the frames that tell of it are sent: checking at
            # each event the clients see is enough.
            await until(lambda: settled() is not None)
        result = settled()
        assert result is not None
        db_users, db_done = result
    finally:
        for client in clients:
            await client.close()

    assert kills == ["mid-conversation", "mid-reply"]
    assert clients[0].connections >= 3 and all(c.connections >= 2 for c in clients)  # all came back
    for user in USERS:
        seen_users, seen_replies = user_messages(events[user]), replies(events[user])
        assert seen_users == db_users, f"{user} saw user messages {seen_users}, db has {db_users}"
        assert sorted(seen_replies) == db_done and len(seen_replies) == len(set(seen_replies))
    orders = [user_messages(events[u]) for u in USERS]
    assert orders[0] == orders[1] == orders[2]
    con = sqlite3.connect(db)
    texts = [r[0] for r in con.execute("SELECT content FROM messages WHERE is_user = 1")]
    con.close()
    assert sorted(texts) == sorted(f"{u}-{i} {WORDS}" for u in USERS for i in range(PER_USER))
