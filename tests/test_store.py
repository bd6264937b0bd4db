"""The SQLite store: schema, ids, dedup, resume, pagination, receipts, recovery."""

from __future__ import annotations

import sqlite3

import pytest

from chatkit.errors import StoreError
from chatkit.store import MAX_PAGE, SCHEMA_VERSION, HistoryPage, Store


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


async def test_ids_increase_across_reopen(db_path):
    async with await Store.open(db_path) as store:
        a = (await store.append("r", "ann", "one")).message
        b = (await store.append("other", "bob", "two")).message
    async with await Store.open(db_path) as store:
        c = (await store.append("r", "ann", "three")).message
        assert a.id < b.id < c.id
        assert [m.content for m in await store.messages_after("r", 0)] == ["one", "three"]
        assert [m.content for m in await store.messages_after("r", a.id)] == ["three"]


async def test_client_id_dedup():
    async with await Store.open(":memory:") as store:
        first = await store.append("r", "ann", "hi", client_id="c-1")
        again = await store.append("r", "ann", "hi (re-sent)", client_id="c-1")
        assert first.created and not again.created
        assert again.message == first.message
        other_room = await store.append("r2", "ann", "hi", client_id="c-1")
        assert other_room.created and other_room.message.id != first.message.id
        assert await store.count("r") == 1


async def test_history_pages_oldest_first_and_capped():
    async with await Store.open(":memory:") as store:
        ids = [(await store.append("r", "u", f"m{i}")).message.id for i in range(250)]
        page = await store.history("r", limit=20)
        assert [m.id for m in page] == ids[-20:]
        older = await store.history("r", before=page[0].id, limit=20)
        assert [m.id for m in older] == ids[-40:-20]
        assert len(await store.history("r", limit=10_000)) == MAX_PAGE
        assert [m.id for m in await store.history("r", before=ids[2], limit=20)] == ids[:2]
        assert await store.history("r", before=ids[0]) == []
        assert await store.history("empty-room") == []


async def test_streaming_reply_marked_interrupted_on_reopen(db_path):
    async with await Store.open(db_path) as store:
        reply = await store.start_reply("r")
        assert (await store.get(reply.id)).status == "streaming"
    async with await Store.open(db_path) as store:
        assert (await store.get(reply.id)).status == "interrupted"


async def test_receipts():
    async with await Store.open(":memory:") as store:
        msg = (await store.append("r", "ann", "hi")).message
        assert await store.add_receipt("r", msg.id, "bob") is True
        assert await store.add_receipt("r", msg.id, "bob") is False
        assert await store.receipts(msg.id) == ["bob"]
        with pytest.raises(StoreError) as info:
            await store.add_receipt("other-room", msg.id, "bob")
        assert info.value.code == "unknown_message"


async def test_history_page_reports_older_messages_in_one_query():
    async with await Store.open(":memory:") as store:
        ids = [(await store.append("r", "u", f"m{i}")).message.id for i in range(150)]
        page = await store.history_page("r", limit=MAX_PAGE)
        assert [m.id for m in page.messages] == ids[-MAX_PAGE:] and page.has_more is True
        page = await store.history_page("r", before=page.messages[0].id, limit=MAX_PAGE)
        assert [m.id for m in page.messages] == ids[:50] and page.has_more is False
        assert await store.history_page("r", before=ids[0]) == HistoryPage([], has_more=False)
