"""``chatkit`` on PostgreSQL end to end: a server on ``--db postgresql://…``, real clients."""

from __future__ import annotations

from chatkit import ChatServer
from chatkit.client import ChatClient
from chatkit.llm import EchoStreamer
from chatkit.store_pg import PostgresStore


async def test_server_on_postgres_stores_replies_and_resumes(pg_dsn):
    async with ChatServer(port=0, db=pg_dsn, streamer=EchoStreamer(), http_port=-1) as server:
        assert isinstance(server.store, PostgresStore)
        async with ChatClient(server.ws_url("pg"), user="ann") as ann:
            sent = await ann.send("hello postgres")
            done = await ann.next_event("ai_complete", timeout=10)
            assert done["status"] == "complete" and done["id"] > sent["id"]
        async with ChatClient(server.ws_url("pg"), user="bob", after=0) as bob:
            replayed = [await bob.next_event("message", timeout=10) for _ in range(2)]
        assert [m["id"] for m in replayed] == [sent["id"], done["id"]]
        assert replayed[1]["message"] == done["message"]
