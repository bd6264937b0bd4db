"""Store faults (issue 13, items 3 and 5): a full disk, a read-only file, a crash with
replies waiting. The server survives them, says what happened with a documented code,
logs SQLite's own words, and never leaves a reply ``streaming`` while it runs.

A full disk is simulated portably with SQLite's ``PRAGMA max_page_count``; a
read-only file with ``chmod`` (or, for root, the immutable attribute) and, while
running, with ``PRAGMA query_only``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from chatkit.errors import StoreError
from chatkit.store import Store, run_batch
from chatkit.widgets import ChatPane

from .conftest import peer
from .test_chaos import OPTIONS

WAIT = 5.0
BIG = "x" * 200_000  # needs new pages: refused once the page budget is spent


async def set_pragma(store: Store, pragma: str) -> None:
    """Run a PRAGMA on the store's own connection (max_page_count and query_only are
    per connection). ``_run`` is the store's one way onto its thread."""
    await store._run(lambda con: con.execute(f"PRAGMA {pragma}").close())


async def fill_disk(store: Store) -> None:
    """From now on no message fits: a full disk, portably. The page budget is capped at
    the file's size, then the free space left in its pages is used up."""
    pages = await store._run(lambda con: con.execute("PRAGMA page_count").fetchone()[0])
    await set_pragma(store, f"max_page_count = {pages}")
    for size in (3000, 300, 30, 1):
        try:
            while True:
                await store.append("filler", "f", "x" * size)
        except StoreError as exc:
            assert exc.code == "store_full"


def test_a_full_disk_is_reported_as_such_not_as_a_failed_rollback(tmp_path):
    """SQLite rolls back by itself on SQLITE_FULL; a second ROLLBACK used to replace
    the real cause with "cannot rollback - no transaction is active"."""
    con = sqlite3.connect(tmp_path / "full.db", isolation_level=None)
    con.execute("CREATE TABLE t (v TEXT)")
    pages = con.execute("PRAGMA page_count").fetchone()[0]
    con.execute(f"PRAGMA max_page_count = {pages}")
    results = run_batch(
        con,
        [
            lambda c: c.execute("INSERT INTO t VALUES (?)", (BIG,)).close(),
            lambda c: c.execute("INSERT INTO t VALUES ('small')").close(),
        ],
    )
    assert isinstance(results[0], sqlite3.Error) and "full" in str(results[0])
    assert not con.in_transaction
    con.execute("PRAGMA max_page_count = 1000000")
    assert run_batch(con, [lambda c: c.execute("INSERT INTO t VALUES (?)", (BIG,)).close()]) == [None]


async def test_store_codes_for_a_full_disk_and_a_read_only_database(tmp_path, caplog):
    store = await Store.open(tmp_path / "codes.db")
    try:
        await store.append("r", "ann", "fits")
        await fill_disk(store)
        with caplog.at_level(logging.ERROR, logger="chatkit.store"):
            with pytest.raises(StoreError) as info:
                await store.append("r", "ann", BIG)
        assert info.value.code == "store_full" and "database or disk is full" in info.value.message
        assert "cannot rollback" not in info.value.message
        assert any(
            "database or disk is full" in r.getMessage() for r in caplog.records
        )  # logged when it happens
        await set_pragma(store, "max_page_count = 1000000")
        await set_pragma(store, "query_only = 1")
        with pytest.raises(StoreError) as info:
            await store.append("r", "ann", "no")
        assert info.value.code == "store_readonly" and "readonly" in info.value.message
        await set_pragma(store, "query_only = 0")
        assert (await store.append("r", "ann", "back")).created
    finally:
        await store.close()


async def test_a_full_disk_refuses_messages_with_a_code_and_a_retry_delay(servers):
    srv = await servers(http_port=0)
    async with peer(srv.ws_url("full", user="ann")) as ann:
        await ann.until("connection")
        await fill_disk(srv.store)
        await ann.send({"message": BIG[:3000], "client_id": "c-full"})
        err = await ann.until("error")
        assert (err["code"], err["client_id"]) == ("store_full", "c-full") and err["retry_after_ms"] > 0
        async with httpx.AsyncClient(trust_env=False, timeout=WAIT) as http:
            r = await http.post(
                f"{srv.http_url}sse/chat/full/messages",
                json={"message": BIG[:3000], "client_id": "p-full", "user": "ann"},
            )
            assert r.status_code == 503 and r.json()["code"] == "store_full"  # a server fault, not a 400
            assert int(r.headers["retry-after"]) >= 1
            assert (await http.get(f"{srv.http_url}health")).status_code == 200
        await set_pragma(srv.store, "query_only = 1")
        await ann.send({"message": "read-only now", "client_id": "c-ro"})
        err = await ann.until("error")
        assert (err["code"], err["client_id"]) == ("store_readonly", "c-ro") and "retry_after_ms" not in err
        await set_pragma(srv.store, "query_only = 0")
        await set_pragma(srv.store, "max_page_count = 1000000")
        await ann.send({"message": "space again", "client_id": "c-ok"})
        assert (await ann.until("message"))["client_id"] == "c-ok"


class GatedStreamer:
    """Streams one chunk, waits for the test to open the gate, then a big rest."""

    name = "gated"

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    async def stream(self, messages):
        yield "start "
        self.waiting.set()
        await self.gate.wait()
        self.gate.clear()
        yield BIG


async def test_a_reply_that_cannot_be_stored_ends_as_error_and_the_room_goes_on(servers, caplog):
    streamer = GatedStreamer()
    srv = await servers(streamer=streamer)
    async with peer(srv.ws_url("finish", user="ann")) as ann:
        await ann.until("connection")
        await ann.send({"message": "tell me everything"})
        await asyncio.wait_for(streamer.waiting.wait(), WAIT)
        await fill_disk(srv.store)
        with caplog.at_level(logging.ERROR):
            streamer.waiting.clear()
            streamer.gate.set()
            err = await ann.until("error")
            done = await ann.until("ai_complete")
        assert err["code"] == "store_full"
        assert done["status"] == "error"
        assert any("database or disk is full" in r.getMessage() for r in caplog.records)
        row = await srv.store.get(done["id"])
        assert row is not None and row.status == "error"  # never left "streaming"
        # The room's reply worker survived: with space again, the next reply completes.
        await set_pragma(srv.store, "max_page_count = 1000000")
        await ann.send({"message": "again"})
        await asyncio.wait_for(streamer.waiting.wait(), WAIT)
        streamer.gate.set()
        assert (await ann.until("ai_complete"))["status"] == "complete"


def make_read_only(path: Path) -> None:
    if os.geteuid() != 0:
        path.chmod(0o444)
        path.parent.chmod(0o555)
        return
    # root writes through any mode bits; the immutable attribute stops it too
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("running as root without chattr +i: cannot make a read-only file")


def undo_read_only(path: Path) -> None:
    if os.geteuid() != 0:
        path.parent.chmod(0o755)
        path.chmod(0o644)
    else:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)


@pytest.mark.parametrize("case", ["read-only file", "directory", "under a file"])
def test_an_unusable_database_file_is_one_line_at_start_up(tmp_path, case):
    db = tmp_path / "ro" / "chat.db"
    db.parent.mkdir()
    if case == "read-only file":
        sqlite3.connect(db).execute("CREATE TABLE t (a)").connection.commit()
        make_read_only(db)
    elif case == "directory":
        db.mkdir()
    else:
        (tmp_path / "ro" / "file").write_text("not a directory")
        db = tmp_path / "ro" / "file" / "chat.db"
    try:
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "chatkit",
                "serve",
                "--port",
                "0",
                "--http-port",
                "-1",
                "--db",
                str(db),
                "--llm",
                "echo",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        if case == "read-only file":
            undo_read_only(db)
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and str(db) in lines[0] and "Traceback" not in run.stderr, run.stderr
    if case == "read-only file":
        assert "readonly" in lines[0]


async def test_replies_waiting_at_a_crash_are_stored_as_interrupted(tmp_path, chatkit_serve):
    """Issue 13, item 5: a SIGKILL with one reply streaming and two waiting; after the
    restart every prompt has its reply, marked ``interrupted``, and a pane shows it so."""
    db = str(tmp_path / "crash.db")
    proc = await chatkit_serve("--db", db, *OPTIONS)  # echo replies, 20 ms per piece
    port = proc.port
    try:
        async with peer(f"ws://127.0.0.1:{port}/ws/chat/crash/?user=ann") as ann:
            await ann.until("connection")
            for i in range(3):
                await ann.send({"message": f"question {i} " + "w " * 200, "client_id": f"q{i}"})
            prompts = [await ann.until("message", client_id=f"q{i}") for i in range(3)]
            assert all(isinstance(p.get("reply_id"), int) for p in prompts)  # each names its reply
            while not (await ann.until("ai_chunk"))["chunk"]:
                pass
            proc.kill()
        proc = await chatkit_serve("--db", db, *OPTIONS, port=port)
        con = sqlite3.connect(db)
        rows = con.execute("SELECT id, is_user, status FROM messages ORDER BY id").fetchall()
        con.close()
        assert [(is_user, status) for _, is_user, status in rows] == [(1, "complete"), (0, "interrupted")] * 3
        assert [p["reply_id"] for p in prompts] == [rows[1][0], rows[3][0], rows[5][0]]
        pane = ChatPane(f"ws://127.0.0.1:{port}/", "crash", user="bob")
        await pane.start()
        try:
            replies = [m for m in pane.model.messages if not m["is_user"]]
            assert [m["status"] for m in replies] == ["interrupted"] * 3
            assert pane.message_list.value.count("[interrupted]") == 3
        finally:
            await pane.aclose()
    finally:
        proc.kill()
