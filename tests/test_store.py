"""The stores: schema, ids, dedup, resume, pagination, receipts, recovery.

Most tests run against both stores (``store_url``: an SQLite file and a fresh
PostgreSQL database on a real server, see ``tests/services.py``).
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import textwrap
import threading

import pytest

from chatkit.errors import StoreError
from chatkit.storage import open_store
from chatkit.store import MAX_PAGE, SCHEMA_VERSION, HistoryPage, Store, run_batch


async def test_schema_wal_index_and_version(db_path):
    async with await Store.open(db_path):
        pass
    con = sqlite3.connect(db_path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    indexes = {r[1] for r in con.execute("PRAGMA index_list(messages)")}
    assert "messages_by_session" in indexes
    cols = [r[2] for r in con.execute("PRAGMA index_info(messages_by_session)")]
    assert cols == ["session_id", "id"]


async def test_refuses_newer_schema(db_path):
    con = sqlite3.connect(db_path)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.close()
    with pytest.raises(StoreError) as info:
        await Store.open(db_path)
    assert info.value.code == "schema_too_new"


async def test_postgres_schema_version_index_and_newer_schema(pg_dsn):
    import asyncpg

    from chatkit.store_pg import PG_SCHEMA_VERSION, PostgresStore

    async with await PostgresStore.open(pg_dsn) as store:
        assert await store.schema_version() == PG_SCHEMA_VERSION
    async with await PostgresStore.open(pg_dsn) as store:  # a second open migrates nothing
        assert await store.schema_version() == PG_SCHEMA_VERSION
    con = await asyncpg.connect(pg_dsn)
    try:
        index = await con.fetchval("SELECT indexdef FROM pg_indexes WHERE indexname = 'messages_by_session'")
        assert "(session_id, id)" in index
        await con.execute("UPDATE chatkit_schema SET version = $1", PG_SCHEMA_VERSION + 1)
    finally:
        await con.close()
    with pytest.raises(StoreError) as info:
        await PostgresStore.open(pg_dsn)
    assert info.value.code == "schema_too_new"


async def test_ids_increase_across_reopen(store_url):
    async with await open_store(store_url) as store:
        a = (await store.append("r", "ann", "one")).message
        b = (await store.append("other", "bob", "two")).message
    async with await open_store(store_url) as store:
        c = (await store.append("r", "ann", "three")).message
        assert a.id < b.id < c.id
        assert [m.content for m in await store.messages_after("r", 0)] == ["one", "three"]
        assert [m.content for m in await store.messages_after("r", a.id)] == ["three"]
        assert await store.last_id("r") == c.id and await store.last_id("nobody") == 0


async def test_client_id_dedup(store_url):
    async with await open_store(store_url) as store:
        first = await store.append("r", "ann", "hi", client_id="c-1")
        again = await store.append("r", "ann", "hi (re-sent)", client_id="c-1")
        assert first.created and not again.created
        assert again.message == first.message
        assert await store.by_client_id("r", "c-1") == first.message
        other_room = await store.append("r2", "ann", "hi", client_id="c-1")
        assert other_room.created and other_room.message.id != first.message.id
        assert await store.count("r") == 1 and await store.count() == 2


async def test_concurrent_resends_store_one_row(store_url):
    """A burst of re-sends of one client_id (one group-commit batch) stores one row."""
    async with await open_store(store_url) as store:
        results = await asyncio.gather(*(store.append("r", "ann", "hi", client_id="same") for _ in range(10)))
        assert sum(r.created for r in results) == 1
        assert len({r.message.id for r in results}) == 1
        assert await store.count("r") == 1


async def test_reply_row_reserved_with_its_message(store_url):
    async with await open_store(store_url) as store:
        first = await store.append_with_reply("r", "ann", "q?", client_id="c", reply_user="AI")
        msg, reply = first.message, first.reply
        assert first.created and reply is not None and reply.id > msg.id and reply.status == "streaming"
        assert (await store.get(reply.id)).status == "streaming"
        again = await store.append_with_reply("r", "ann", "q?", client_id="c", reply_user="AI")
        assert not again.created and again.reply is None and again.message.id == msg.id
        assert await store.finish_reply(reply.id, "answer", "complete") is True
        # fencing: a second finish (a process whose lease was taken over) changes nothing
        assert await store.finish_reply(reply.id, "late", "interrupted") is False
        stored = await store.get(reply.id)
        assert (stored.content, stored.status) == ("answer", "complete")
        assert [m.id for m in await store.recent("r", 10)] == [msg.id, reply.id]


async def test_history_pages_oldest_first_and_capped(store_url):
    async with await open_store(store_url) as store:
        ids = [(await store.append("r", "u", f"m{i}")).message.id for i in range(250)]
        page = await store.history("r", limit=20)
        assert [m.id for m in page] == ids[-20:]
        older = await store.history("r", before=page[0].id, limit=20)
        assert [m.id for m in older] == ids[-40:-20]
        assert len(await store.history("r", limit=10_000)) == MAX_PAGE
        assert [m.id for m in await store.history("r", before=ids[2], limit=20)] == ids[:2]
        assert await store.history("r", before=ids[0]) == []
        assert await store.history("empty-room") == []


async def test_streaming_reply_marked_interrupted_on_reopen(store_url):
    async with await open_store(store_url) as store:
        reply = await store.start_reply("r")
        assert (await store.get(reply.id)).status == "streaming"
    async with await open_store(store_url, recover=False) as store:  # a broker's process: left alone
        assert (await store.get(reply.id)).status == "streaming"
    async with await open_store(store_url) as store:
        assert (await store.get(reply.id)).status == "interrupted"


async def test_receipts(store_url):
    async with await open_store(store_url) as store:
        msg = (await store.append("r", "ann", "hi")).message
        assert await store.add_receipt("r", msg.id, "bob") is True
        assert await store.add_receipt("r", msg.id, "bob") is False
        assert await store.receipts(msg.id) == ["bob"]
        with pytest.raises(StoreError) as info:
            await store.add_receipt("other-room", msg.id, "bob")
        assert info.value.code == "unknown_message"


async def test_history_page_reports_older_messages_in_one_query(store_url):
    async with await open_store(store_url) as store:
        ids = [(await store.append("r", "u", f"m{i}")).message.id for i in range(150)]
        page = await store.history_page("r", limit=MAX_PAGE)
        assert [m.id for m in page.messages] == ids[-MAX_PAGE:] and page.has_more is True
        page = await store.history_page("r", before=page.messages[0].id, limit=MAX_PAGE)
        assert [m.id for m in page.messages] == ids[:50] and page.has_more is False
        assert await store.history_page("r", before=ids[0]) == HistoryPage([], has_more=False)


WRITER = textwrap.dedent("""
    import asyncio, sys
    from chatkit.storage import open_store

    async def main(url, name, n):
        async with await open_store(url, recover=False) as store:
            async def one(i):
                room = "shared" if i % 3 else f"side-{name}"
                await store.append_with_reply(
                    room, name, f"{name}-{i}", client_id=f"{name}-{i}",
                    reply_user="AI" if i % 5 == 0 else None)
            # batches of concurrent writes: group commit with several rooms per transaction
            for start in range(0, n, 8):
                await asyncio.gather(*(one(i) for i in range(start, min(n, start + 8))))

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
""")


async def test_processes_share_one_store_and_resume_never_skips(store_url):
    """Three writer processes on one database, one reader resuming by cursor.

    The reader only ever asks for ``messages_after(cursor)`` and moves its
    cursor to the largest id it got — what every client does. If ids were
    committed out of order within a room, it would skip one for good.
    """
    async with await open_store(store_url) as reader:
        await reader.ensure_session("shared")
        procs = [
            await asyncio.create_subprocess_exec(sys.executable, "-c", WRITER, store_url, name, "60")
            for name in ("p1", "p2", "p3")
        ]
        seen: list[int] = []
        cursor = 0
        running = True
        try:
            while running:
                running = any(p.returncode is None for p in procs)  # read once more after they exit
                batch = await reader.messages_after("shared", cursor)
                seen += [m.id for m in batch]
                cursor = seen[-1] if seen else cursor
                if running:
                    await asyncio.sleep(0)  # poll as fast as possible: the window to catch is small
        finally:  # a failed read leaves no writer behind
            for p in procs:
                if p.returncode is None:
                    p.kill()
                    await p.wait()
        assert [p.returncode for p in procs] == [0, 0, 0]
        stored = [m.id for m in await reader.messages_after("shared", 0)]
        assert seen == stored, "the resuming reader skipped or repeated an id"
        assert stored == sorted(stored) and len(stored) == len(set(stored))
        # every process's 40 "shared" messages, and the reply rows reserved with some of them
        users = [m for m in await reader.messages_after("shared", 0) if m.is_user]
        assert sorted(m.content for m in users) == sorted(
            f"{p}-{i}" for p in ("p1", "p2", "p3") for i in range(60) if i % 3
        )


# -- group commit and its per-write fallback -------------------------------------


async def test_concurrent_writes_share_one_transaction():
    async with await Store.open(":memory:") as store:
        await store.ensure_session("r")
        before = store.batches
        results = await asyncio.gather(*(store.append("r", "u", f"m{i}") for i in range(20)))
        assert store.batches - before == 1  # twenty appends, one COMMIT
        assert [r.message.id for r in results] == sorted(r.message.id for r in results)
        assert await store.count("r") == 20


async def test_one_failing_write_in_a_batch_fails_alone(db_path):
    """A write that breaks a constraint mid-batch: the others of its batch still commit."""
    async with await Store.open(db_path) as store:
        await store.ensure_session("gone")  # the store now knows the room exists…
        other = sqlite3.connect(db_path)
        other.execute("DELETE FROM sessions WHERE id = 'gone'")  # …but another process removed it
        other.commit()
        other.close()
        before = store.batches
        results = await asyncio.gather(
            store.append("r", "ann", "first"),
            store.append("gone", "bob", "breaks the foreign key"),
            store.append("r", "ann", "third"),
            return_exceptions=True,
        )
        assert store.batches - before == 1
        first, failed, third = results
        assert isinstance(failed, StoreError) and failed.code == "store_error"
        assert isinstance(failed.__cause__, sqlite3.IntegrityError)
        assert [m.content for m in await store.messages_after("r", 0)] == ["first", "third"]
        assert (first.message.id, third.message.id) == tuple(m.id for m in await store.messages_after("r", 0))
        assert await store.count("gone") == 0


def test_run_batch_commits_once_and_retries_alone_on_failure():
    con = sqlite3.connect(":memory:", isolation_level=None)
    con.execute("CREATE TABLE t (v INTEGER UNIQUE)")
    statements: list[str] = []
    con.set_trace_callback(statements.append)

    def insert(v: int):
        return lambda c: c.execute("INSERT INTO t (v) VALUES (?)", (v,)).lastrowid

    assert run_batch(con, [insert(1), insert(2)]) == [1, 2]
    assert statements.count("COMMIT") == 1
    statements.clear()
    results = run_batch(con, [insert(3), insert(1), insert(4)])  # 1 is taken
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert [r for i, r in enumerate(results) if i != 1] == [3, 4]
    assert statements.count("ROLLBACK") == 2 and statements.count("COMMIT") == 2
    assert [v for (v,) in con.execute("SELECT v FROM t ORDER BY v")] == [1, 2, 3, 4]


async def test_a_closed_store_refuses_with_a_coded_error():
    store = await Store.open(":memory:")
    await store.close()
    await store.close()  # twice is harmless
    for call in (store.append("r", "u", "late"), store.count()):
        with pytest.raises(StoreError) as info:
            await call
        assert info.value.code == "store_closed"


async def test_close_waits_for_queued_writes(db_path):
    store = await Store.open(db_path)
    pending = [asyncio.ensure_future(store.append("r", "u", f"m{i}")) for i in range(5)]
    await asyncio.sleep(0)  # one turn of the loop: the appends are queued, not yet committed
    await store.close()
    assert all(p.done() and not p.exception() for p in pending)
    con = sqlite3.connect(db_path)
    assert con.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 5


def store_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("chatkit-store")}


async def test_the_store_owns_one_thread_and_ends_it_on_close():
    before = store_threads()
    store = await Store.open(":memory:")
    await store.append("r", "u", "hi")
    await store.count()
    mine = store_threads() - before
    assert len(mine) == 1
    await store.close()
    assert not any(t.is_alive() for t in mine)


async def test_prompts_wait_in_the_store_until_claimed_once(store_url):
    """The cluster's reply queue: prompts wait in the store; a claim takes one and reserves its reply."""
    async with await open_store(store_url) as store:
        a = (await store.append_with_reply("r", "ann", "a?", wants_reply=True)).message
        await store.append("r", "bob", "no reply wanted")
        b = (await store.append_with_reply("r", "bob", "b?", wants_reply=True)).message
        await store.append_with_reply("other", "cho", "c?", wants_reply=True)
        assert [m.id for m in await store.pending("r", 10)] == [a.id, b.id]
        assert await store.count_pending("r") == 2
        claims = await asyncio.gather(store.claim_reply("r", a.id), store.claim_reply("r", a.id))
        winners = [c for c in claims if c is not None]
        assert len(winners) == 1 and winners[0].id > b.id and winners[0].status == "streaming"
        assert await store.claim_reply("other", b.id) is None  # another room's prompt
        assert [m.id for m in await store.pending("r")] == [b.id]
        assert await store.count_pending("r") == 1 and await store.count_pending("other") == 1


async def test_processes_opening_a_new_file_at_once_migrate_it_once(tmp_path):
    """Three processes of a cluster start together on a file that does not exist yet."""
    path = str(tmp_path / "new.db")
    code = (
        "import asyncio, sys; from chatkit.storage import open_store\n"
        "async def main():\n    s = await open_store(sys.argv[1], recover=False); await s.close()\n"
        "asyncio.run(main())"
    )
    procs = [await asyncio.create_subprocess_exec(sys.executable, "-c", code, path) for _ in range(4)]
    assert [await p.wait() for p in procs] == [0, 0, 0, 0]
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    con.close()


async def test_the_loop_writer_stores_and_resumes_like_the_thread(tmp_path):
    """``writer="loop"`` (statements on the event loop's thread): the same results, group commit kept."""
    async with await Store.open(tmp_path / "loop.db", writer="loop") as store:
        appended = await asyncio.gather(*(store.append("r", "ann", f"m{i}") for i in range(20)))
        assert store.batches < 20  # concurrent writes share transactions
        reply = await store.start_reply("r")
        assert await store.finish_reply(reply.id, "done", "complete") in (True, None)
        stored = await store.messages_after("r", 0)
        assert [m.id for m in stored] == [a.message.id for a in appended] + [reply.id]
        assert [m.id for m in await store.messages_after("r", 0, limit=5)] == [
            a.message.id for a in appended[:5]
        ]
    async with await Store.open(tmp_path / "loop.db") as again:  # the file is the same for the thread writer
        assert await again.count("r") == 21


async def test_the_loop_writer_checkpoints_the_wal_on_the_stores_thread(tmp_path):
    """The loop's connection never checkpoints (a checkpoint's fsync would stall the loop): the
    store's thread does, every CHECKPOINT_WRITES writes, so the database file itself grows."""
    path = tmp_path / "wal.db"
    async with await Store.open(path, writer="loop") as store:
        store.CHECKPOINT_WRITES = 50
        empty = path.stat().st_size
        for i in range(0, 400, 40):
            await asyncio.gather(*(store.append("r", "ann", "x" * 500 + str(i + k)) for k in range(40)))
            if store._checkpointing is not None:
                await store._checkpointing  # an event: the thread's checkpoint finished
        assert path.stat().st_size > empty + 50 * 500  # pages copied from the WAL into the file
        assert await store.count("r") == 400
