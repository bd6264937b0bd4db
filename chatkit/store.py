"""The message store: chat sessions, messages and read receipts in SQLite.

One :class:`Store` owns one thread with one plain :mod:`sqlite3` connection:
every statement runs there (``loop.run_in_executor`` on a one-worker executor
the store owns), reads and writes alike, so the event loop never blocks on
the disk. Writes are committed in groups (one transaction per batch, see
:meth:`Store._write`), and every write commits before it returns, so a message
the server has broadcast is always on disk (WAL mode with
``synchronous=NORMAL`` survives a killed process). Message ids
come from ``AUTOINCREMENT`` and are therefore strictly increasing, also across
restarts; they are the resume cursor of every transport (``?after=``,
``Last-Event-ID``, history paging).

The schema carries a version in ``PRAGMA user_version``; :data:`MIGRATIONS`
holds the steps from each version to the next, applied in order on open.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal, Self, TypeVar

from .errors import StoreError
from .protocol import Attachment, ReactionCount, StoredMessage, utc_now

__all__ = [
    "AI_USER",
    "MAX_PAGE",
    "MAX_REACTIONS_PER_USER",
    "SCHEMA_VERSION",
    "Appended",
    "HistoryPage",
    "Store",
    "StoredFile",
    "Toggled",
    "reaction_counts",
    "run_batch",
    "store_error",
]

logger = logging.getLogger("chatkit.store")

AI_USER = "AI"
MAX_PAGE = 100
"""Largest history page; bigger ``limit`` values are capped to it."""

MIGRATIONS: list[str] = [
    # 0 -> 1: the first schema.
    """
    CREATE TABLE sessions (
        id          TEXT PRIMARY KEY,
        created_at  TEXT NOT NULL
    );
    CREATE TABLE messages (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id  TEXT NOT NULL REFERENCES sessions(id),
        user        TEXT NOT NULL,
        is_user     INTEGER NOT NULL,
        content     TEXT NOT NULL,
        status      TEXT NOT NULL,
        client_id   TEXT,
        created_at  TEXT NOT NULL
    );
    CREATE INDEX messages_by_session ON messages(session_id, id);
    CREATE UNIQUE INDEX messages_by_client_id
        ON messages(session_id, client_id) WHERE client_id IS NOT NULL;
    CREATE TABLE read_receipts (
        message_id  INTEGER NOT NULL REFERENCES messages(id),
        user        TEXT NOT NULL,
        read_at     TEXT NOT NULL,
        PRIMARY KEY (message_id, user)
    ) WITHOUT ROWID;
    """,
    # 1 -> 2: prompts waiting for an AI reply, kept in the store so that any
    # process of a cluster can answer them (chatkit.cluster); 0 otherwise.
    """
    ALTER TABLE messages ADD COLUMN wants_reply INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX messages_wanting_reply ON messages(session_id, id) WHERE wants_reply = 1;
    """,
    # 2 -> 3: emoji reactions (one row per user per emoji per message), and for each message
    # whose reactions changed, the room's newest message id at that moment: a client resuming
    # after id N is sent the state of every message whose reactions changed at or after N.
    """
    CREATE TABLE reactions (
        message_id  INTEGER NOT NULL REFERENCES messages(id),
        user        TEXT NOT NULL,
        emoji       TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        PRIMARY KEY (message_id, emoji, user)
    );  -- a rowid table: rowid is the order of reacting (created_at has only milliseconds)
    CREATE TABLE reaction_changes (
        message_id  INTEGER PRIMARY KEY REFERENCES messages(id),
        session_id  TEXT NOT NULL,
        room_last_id INTEGER NOT NULL
    );
    CREATE INDEX reaction_changes_by_room ON reaction_changes(session_id, room_last_id);
    """,
    # 3 -> 4: attachments. Files are kept in the database, content-addressed (the SHA-256 of the
    # bytes is the key: the same bytes uploaded twice are stored once), with an image's thumbnail;
    # a message names its file in `attachment` (the file's JSON as messages show it, with the name
    # its sender gave). See docs/architecture.md for why the database and not the disk.
    """
    CREATE TABLE files (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        type        TEXT NOT NULL,
        size        INTEGER NOT NULL,
        width       INTEGER,
        height      INTEGER,
        data        BLOB NOT NULL,
        thumb       BLOB,
        session_id  TEXT NOT NULL,
        created_at  TEXT NOT NULL
    );
    ALTER TABLE messages ADD COLUMN attachment TEXT;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

_COLUMNS = "id, session_id, user, is_user, content, status, client_id, created_at, attachment"
_FILE_COLUMNS = "id, name, type, size, width, height, thumb IS NOT NULL"
_INSERT_SESSION = "INSERT OR IGNORE INTO sessions (id, created_at) VALUES (?, ?)"


@dataclass(frozen=True, slots=True)
class Appended:
    """What :meth:`Store.append` stored."""

    message: StoredMessage
    """The stored message (for a re-sent ``client_id``: the one stored the first time)."""
    created: bool
    """``False`` when the ``client_id`` was already stored and nothing was written."""
    reply: StoredMessage | None = None
    """The AI reply's row reserved in the same transaction (``streaming``), if asked for."""


MAX_REACTIONS_PER_USER = 20
"""Different emoji one user may have on one message (``too_many_reactions`` beyond)."""


@dataclass(frozen=True, slots=True)
class Toggled:
    """What :meth:`Store.toggle_reaction` did: ``added`` or removed, and the message's reactions now."""

    added: bool
    reactions: list[ReactionCount]


def reaction_counts(rows: list[Any]) -> dict[int, list[ReactionCount]]:
    """(message_id, emoji, user) rows in reaction order → each message's counts, by first reaction."""
    by_message: dict[int, dict[str, list[str]]] = {}
    for message_id, emoji, user in rows:
        by_message.setdefault(message_id, {}).setdefault(emoji, []).append(user)
    return {
        mid: [ReactionCount(emoji, len(users), tuple(users)) for emoji, users in emojis.items()]
        for mid, emojis in by_message.items()
    }


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A stored file's bytes (or its thumbnail's) and what messages show of it."""

    attachment: Attachment
    data: bytes


def file_attachment(row: Any) -> Attachment:
    """A ``files`` row (``_FILE_COLUMNS``) as an :class:`~chatkit.protocol.Attachment`."""
    return Attachment(row[0], row[1], row[2], int(row[3]), row[4], row[5], bool(row[6]))


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """One page of history, oldest first, and whether older messages remain."""

    messages: list[StoredMessage]
    has_more: bool


def _row(row: Any) -> StoredMessage:
    return StoredMessage(
        id=row[0],
        session_id=row[1],
        user=row[2],
        is_user=bool(row[3]),
        content=row[4],
        status=row[5],
        client_id=row[6],
        created_at=row[7],
        attachment=Attachment.from_json(row[8]),
    )


T = TypeVar("T")
WriteOp = Callable[[sqlite3.Connection], Any]


def store_error(exc: BaseException, path: str = "") -> StoreError:
    """The :class:`StoreError` for a failed SQLite call, with a code a client can act on:
    ``store_full`` (disk or ``max_page_count`` full), ``store_readonly`` (read-only file
    or directory, ``query_only``), else ``store_error``. The message keeps SQLite's."""
    if isinstance(exc, StoreError):
        return exc
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc)
    if name.startswith("SQLITE_FULL") or "database or disk is full" in text:
        code = "store_full"
    elif name.startswith("SQLITE_READONLY") or "readonly database" in text:
        code = "store_readonly"
    else:
        code = "store_error"
    where = f" ({path})" if path else ""
    error = StoreError(f"database write failed{where}: {text}", code=code)
    error.__cause__ = exc
    return error


def _rollback(con: sqlite3.Connection) -> None:
    """ROLLBACK unless SQLite already rolled the transaction back by itself (it does
    on SQLITE_FULL, among others): a second ROLLBACK would raise "cannot rollback -
    no transaction is active" and hide the real cause."""
    if con.in_transaction:
        con.execute("ROLLBACK")


def run_batch(con: sqlite3.Connection, ops: list[WriteOp]) -> list[Any]:
    """Run write ops in one transaction (on the store's thread); one result per op.

    The fast path runs every op in one transaction. If one raises, the
    transaction is rolled back and each op is re-run in a transaction of its
    own, so one bad op fails alone (its result is the exception) and the
    others still commit.
    """
    con.execute("BEGIN IMMEDIATE")
    try:
        results = [op(con) for op in ops]
        con.execute("COMMIT")
        return results
    except Exception:  # noqa: BLE001 — any failing op: retry each op alone below
        _rollback(con)
    except BaseException:
        _rollback(con)
        raise
    results = []
    for op in ops:
        try:
            con.execute("BEGIN IMMEDIATE")
            results.append(op(con))
            con.execute("COMMIT")
        except Exception as exc:  # noqa: BLE001 — the op's own failure is its result
            _rollback(con)
            results.append(exc)
    return results


def _open_error(exc: sqlite3.Error, path: str) -> StoreError:
    error = store_error(exc)
    return StoreError(f"cannot open the database {path}: {exc}", code=error.code)


def _migrate(con: sqlite3.Connection) -> None:
    """Bring the schema to :data:`SCHEMA_VERSION`, one transaction per step."""
    (version,) = _fetchone(con, "PRAGMA user_version", ())
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"database schema {version} is newer than this chatkit ({SCHEMA_VERSION})",
            code="schema_too_new",
        )
    for target in range(version + 1, SCHEMA_VERSION + 1):
        # Several processes may open a new file at once: take the write lock, then look again.
        con.execute("BEGIN IMMEDIATE")
        try:
            (current,) = _fetchone(con, "PRAGMA user_version", ())
            if current < target:
                for statement in MIGRATIONS[target - 1].split(";"):
                    if statement.strip():
                        con.execute(statement)
                con.execute(f"PRAGMA user_version = {target}")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise


MIN_SQLITE = (3, 35, 0)
"""``RETURNING`` and ``ON CONFLICT … DO NOTHING`` on a partial index need SQLite 3.35 (2021)."""


def _connect(path: str) -> sqlite3.Connection:
    if sqlite3.sqlite_version_info < MIN_SQLITE:
        raise StoreError(
            f"SQLite {sqlite3.sqlite_version} is too old; chatkit needs {'.'.join(map(str, MIN_SQLITE))}+",
            code="sqlite_too_old",
        )
    # The connection is made on the store's thread and used only there.
    con = sqlite3.connect(path, isolation_level=None)  # same-thread check kept on
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        con.execute("PRAGMA foreign_keys=ON")
        con.execute("PRAGMA busy_timeout=5000")
    except BaseException:
        con.close()
        raise
    return con


def _fetchall(con: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> list[Any]:
    cur = con.execute(sql, args)
    try:
        return cur.fetchall()
    finally:
        cur.close()


def _fetchone(con: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> Any:
    cur = con.execute(sql, args)
    try:
        return cur.fetchone()
    finally:
        cur.close()


class Store:
    """Async access to the chat database. Use :meth:`open` (or ``async with``)."""

    def __init__(self, con: sqlite3.Connection, executor: ThreadPoolExecutor, path: str) -> None:
        self._db = con
        self._executor = executor
        self.path = path
        self.batches = 0
        """Write transactions committed so far (group commit: fewer than writes)."""
        self._sessions: set[str] = set()  # known to exist: no INSERT OR IGNORE round trip
        self._pending: list[tuple[WriteOp, asyncio.Future[Any]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self._on_loop = False
        """Statements run on the event loop's thread (``writer="loop"``), not the store's."""
        self._checkpointer: sqlite3.Connection | None = None
        """With ``writer="loop"``: the thread's connection that checkpoints the WAL."""
        self._checkpointing: asyncio.Future[Any] | None = None
        self._since_checkpoint = 0

    @classmethod
    async def open(
        cls,
        path: str | Path = "chatkit.db",
        *,
        recover: bool = True,
        writer: Literal["thread", "loop"] = "thread",
    ) -> Store:
        """Open (creating or migrating) the database at ``path`` (``:memory:`` allowed).

        With ``recover``, replies that were still streaming when a previous
        process died are marked ``interrupted``, so they are never shown as in
        progress again. Processes sharing the file through a broker pass
        ``recover=False``: there the room's reply lease decides.

        ``writer="loop"`` runs every statement on the event loop's thread instead
        of the store's own (group commit unchanged): no thread hop per batch, about
        half the CPU per store call in ``benchmarks/README.md``'s measurement, but
        a slow disk stalls the loop. The default keeps the loop off the disk.
        """
        path = str(path)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chatkit-store")
        loop = asyncio.get_running_loop()
        try:
            con = _connect(path) if writer == "loop" else await loop.run_in_executor(executor, _connect, path)
        except sqlite3.Error as exc:  # e.g. a read-only file or directory: say which, in one line
            executor.shutdown(wait=False)
            raise _open_error(exc, path) from None
        except BaseException:
            executor.shutdown(wait=False)
            raise
        store = cls(con, executor, path)
        store._on_loop = writer == "loop"
        if store._on_loop and path != ":memory:":
            # The loop's connection never checkpoints (the fsyncs of a checkpoint would stall the
            # loop on a busy disk); the store's thread checkpoints the WAL with a connection of its own.
            con.execute("PRAGMA wal_autocheckpoint=0")
            try:
                store._checkpointer = await loop.run_in_executor(executor, _connect, path)
            except BaseException:
                await store.close()
                raise
        try:
            await store._run(_migrate)
            if recover:
                await store._run(
                    lambda c: c.execute(
                        "UPDATE messages SET status = 'interrupted' WHERE status = 'streaming'"
                    ).close()
                )
        except sqlite3.Error as exc:
            await store.close()
            raise _open_error(exc, path) from None
        except BaseException:
            await store.close()
            raise
        return store

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the store's thread."""
        if self._closed:
            raise StoreError("the store is closed", code="store_closed")
        if self._on_loop:
            return fn(self._db)
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, self._db)

    async def _select_all(self, sql: str, *args: Any) -> list[Any]:
        return await self._run(partial(_fetchall, sql=sql, args=args))

    async def _select_one(self, sql: str, *args: Any) -> Any:
        return await self._run(partial(_fetchone, sql=sql, args=args))

    async def close(self) -> None:
        """Finish the writes queued so far, then close the database and end its thread."""
        while self._writer is not None:
            await asyncio.shield(self._writer)
        if self._closed:
            return
        try:
            if self._checkpointing is not None:
                await asyncio.wait([self._checkpointing])  # its failure is logged by its callback
            if self._checkpointer is not None:
                checkpointer, self._checkpointer = self._checkpointer, None
                await asyncio.get_running_loop().run_in_executor(self._executor, checkpointer.close)
            await self._run(lambda con: con.close())
        finally:
            self._closed = True
            self._executor.shutdown(wait=True)  # the thread is idle: this joins it at once

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- group commit --------------------------------------------------------

    async def _write(self, op: WriteOp) -> Any:
        """Run ``op(connection)`` in the next write batch and return its result.

        Writes are committed in groups: every write queued while the previous
        batch was being committed goes into one transaction, run in one hop to
        the store's thread; a failing op is retried alone, so it does not undo
        the others, and fails with ``StoreError("store_error")``. The result is
        returned only after COMMIT: nothing is broadcast before it is on disk.
        """
        if self._closed:
            raise StoreError("the store is closed", code="store_closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((op, future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_batches(), name="chatkit-store-writer")
        return await future

    async def _write_batches(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    results = await self._run(partial(run_batch, ops=[op for op, _ in batch]))
                    self.batches += 1
                    if self._checkpointer is not None:
                        self._maybe_checkpoint(len(batch))
                except BaseException as exc:  # the whole transaction failed (disk full, closed)
                    if isinstance(exc, asyncio.CancelledError):
                        for _, future in batch:
                            if not future.done():
                                future.set_exception(StoreError("the store is closing", code="store_closed"))
                        raise
                    logger.error("store %s: a batch of %d writes failed: %s", self.path, len(batch), exc)
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(store_error(exc, self.path))
                    continue
                for (_, future), result in zip(batch, results):
                    if future.done():
                        continue
                    if isinstance(result, StoreError):  # an op's own refusal keeps its code
                        future.set_exception(result)
                        continue
                    if isinstance(result, Exception):
                        error = store_error(result, self.path)
                        if error.code != "store_error":  # a fault of the disk, not of one write
                            logger.error("store %s: %s", self.path, result)
                        future.set_exception(error)
                    else:
                        future.set_result(result)
        finally:
            self._writer = None

    CHECKPOINT_WRITES = 500
    """With ``writer="loop"``: writes between two checkpoints of the WAL on the store's thread."""

    def _maybe_checkpoint(self, writes: int) -> None:
        """Start a PASSIVE checkpoint on the store's thread every :attr:`CHECKPOINT_WRITES` writes
        (one at a time; it never blocks the loop's writes, which append to the WAL meanwhile)."""
        self._since_checkpoint += writes
        if self._since_checkpoint < self.CHECKPOINT_WRITES or self._checkpointing is not None:
            return
        self._since_checkpoint = 0
        checkpointer = self._checkpointer
        assert checkpointer is not None
        future = asyncio.get_running_loop().run_in_executor(
            self._executor, lambda: checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        )
        self._checkpointing = future

        def done(f: asyncio.Future[Any]) -> None:
            self._checkpointing = None
            if not f.cancelled() and f.exception() is not None:
                logger.warning("store %s: WAL checkpoint failed: %s", self.path, f.exception())

        future.add_done_callback(done)

    # -- writes --------------------------------------------------------------

    async def ensure_session(self, session_id: str) -> None:
        """Create the session on first use (an unknown id is not an error)."""
        if session_id in self._sessions:
            return
        created_at = utc_now()
        await self._write(lambda con: con.execute(_INSERT_SESSION, (session_id, created_at)).close())
        self._sessions.add(session_id)

    async def append(
        self,
        session_id: str,
        user: str,
        content: str,
        *,
        is_user: bool = True,
        client_id: str | None = None,
        status: str = "complete",
        attachment: Attachment | None = None,
    ) -> Appended:
        """Store a message.

        With a ``client_id`` already stored in this session, nothing is written
        and the stored message is returned with ``created=False``: a re-sent
        message never becomes a duplicate.
        """
        return await self.append_with_reply(
            session_id,
            user,
            content,
            is_user=is_user,
            client_id=client_id,
            status=status,
            attachment=attachment,
        )

    async def append_with_reply(
        self,
        session_id: str,
        user: str,
        content: str,
        *,
        is_user: bool = True,
        client_id: str | None = None,
        status: str = "complete",
        reply_user: str | None = None,
        wants_reply: bool = False,
        attachment: Attachment | None = None,
    ) -> Appended:
        """Like :meth:`append`; with ``reply_user``, also reserve the AI reply's row
        (status ``streaming``) in the same transaction — one write fewer per reply.
        With ``wants_reply``, the message waits in the store for a reply
        (:meth:`pending`, :meth:`claim_reply`: the cluster's reply queue).

        ``reply`` is ``None`` when nothing was reserved (no ``reply_user``, or a
        re-sent ``client_id``).
        """
        created_at = utc_now()
        known = session_id in self._sessions
        attached = attachment.to_json() if attachment is not None else None

        def op(con: sqlite3.Connection) -> Any:
            if not known:
                con.execute(_INSERT_SESSION, (session_id, created_at)).close()
            # The partial unique index on (session_id, client_id) turns a re-sent
            # client_id into "no row returned" instead of a duplicate.
            cur = con.execute(
                "INSERT INTO messages (session_id, user, is_user, content, status, client_id, created_at,"
                " wants_reply, attachment) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (session_id, client_id) WHERE client_id IS NOT NULL DO NOTHING RETURNING id",
                (
                    session_id,
                    user,
                    int(is_user),
                    content,
                    status,
                    client_id,
                    created_at,
                    int(wants_reply),
                    attached,
                ),
            )
            row = cur.fetchone()
            cur.close()
            if row is not None:
                if reply_user is None:
                    return row[0], None
                cur = con.execute(
                    "INSERT INTO messages (session_id, user, is_user, content, status, client_id, created_at)"
                    " VALUES (?, ?, 0, '', 'streaming', NULL, ?) RETURNING id",
                    (session_id, reply_user, created_at),
                )
                reply_row = cur.fetchone()
                cur.close()
                return row[0], reply_row[0]
            cur = con.execute(
                f"SELECT {_COLUMNS} FROM messages WHERE session_id = ? AND client_id = ?",
                (session_id, client_id),
            )
            existing = cur.fetchone()
            cur.close()
            return _row(existing)

        result = await self._write(op)
        self._sessions.add(session_id)
        if isinstance(result, StoredMessage):
            return Appended(result, created=False)
        msg_id, reply_id = result
        msg = StoredMessage(
            msg_id, session_id, user, is_user, content, status, client_id, created_at, attachment
        )
        reply = None
        if reply_id is not None:
            reply = StoredMessage(
                reply_id, session_id, reply_user or "", False, "", "streaming", None, created_at
            )
        return Appended(msg, created=True, reply=reply)

    async def start_reply(self, session_id: str, user: str = AI_USER) -> StoredMessage:
        """Reserve the id of an AI reply about to stream (status ``streaming``)."""
        return (await self.append(session_id, user, "", is_user=False, status="streaming")).message

    async def claim_reply(self, session_id: str, prompt_id: int, user: str = AI_USER) -> StoredMessage | None:
        """Take a waiting prompt off the reply queue and return its reply's row, in one
        transaction: the row reserved with the prompt (the room's next row, same time), or —
        for a prompt stored without one — a row reserved now. ``None`` when it is no longer
        waiting (claimed already)."""
        created_at = utc_now()

        def op(con: sqlite3.Connection) -> tuple[int, str, str] | None:
            cur = con.execute(
                "UPDATE messages SET wants_reply = 0 WHERE id = ? AND session_id = ? AND wants_reply = 1",
                (prompt_id, session_id),
            )
            cur.close()
            if cur.rowcount != 1:
                return None
            reserved = con.execute(
                "SELECT n.id, n.user, n.created_at FROM messages n JOIN messages p ON p.id = ?"
                " WHERE n.session_id = ? AND n.id > p.id AND n.is_user = 0 AND n.status = 'streaming'"
                " AND n.created_at = p.created_at"
                " AND n.id = (SELECT MIN(id) FROM messages WHERE session_id = ? AND id > ?)",
                (prompt_id, session_id, session_id, prompt_id),
            ).fetchone()
            if reserved is not None:
                return reserved[0], reserved[1], reserved[2]
            cur = con.execute(
                "INSERT INTO messages (session_id, user, is_user, content, status, client_id, created_at)"
                " VALUES (?, ?, 0, '', 'streaming', NULL, ?) RETURNING id",
                (session_id, user, created_at),
            )
            (reply_id,) = cur.fetchone()
            cur.close()
            return reply_id, user, created_at

        claimed = await self._write(op)
        if claimed is None:
            return None
        reply_id, reply_user, at = claimed
        return StoredMessage(reply_id, session_id, reply_user, False, "", "streaming", None, at)

    async def queued_replies(self, session_id: str) -> set[int]:
        """The reply rows reserved for the room's prompts still waiting (none of them runs yet)."""
        rows = await self._select_all(
            "SELECT n.id FROM messages p JOIN messages n ON n.session_id = p.session_id"
            " AND n.id = (SELECT MIN(id) FROM messages WHERE session_id = p.session_id AND id > p.id)"
            " WHERE p.session_id = ? AND p.wants_reply = 1 AND n.is_user = 0 AND n.status = 'streaming'",
            session_id,
        )
        return {r[0] for r in rows}

    async def pending(self, session_id: str, limit: int = 1) -> list[StoredMessage]:
        """The oldest prompts of the room still waiting for a reply (``wants_reply``)."""
        rows = await self._select_all(
            f"SELECT {_COLUMNS} FROM messages WHERE session_id = ? AND wants_reply = 1 ORDER BY id LIMIT ?",
            session_id,
            limit,
        )
        return [_row(r) for r in rows]

    async def count_pending(self, session_id: str) -> int:
        (n,) = await self._select_one(
            "SELECT COUNT(*) FROM messages WHERE session_id = ? AND wants_reply = 1", session_id
        )
        return int(n)

    async def finish_reply(self, message_id: int, content: str, status: str) -> bool:
        """Store the text of an AI reply and its final status — only if it is still
        ``streaming``; ``False`` when another process already finished it (fencing)."""

        def op(con: sqlite3.Connection) -> bool:
            cur = con.execute(
                "UPDATE messages SET content = ?, status = ? WHERE id = ? AND status = 'streaming'",
                (content, status, message_id),
            )
            cur.close()
            return cur.rowcount == 1

        return await self._write(op)

    async def delete_message(self, session_id: str, message_id: int) -> bool:
        """Replace a message of ``session_id`` by a tombstone (no text, status ``deleted``).

        The row and its id stay, so resume cursors and paging still line up;
        ``False`` when there is no such message in the room or it is gone already.
        """

        def op(con: sqlite3.Connection) -> bool:
            cur = con.execute(
                "UPDATE messages SET content = '', status = 'deleted', attachment = NULL "
                "WHERE id = ? AND session_id = ? AND status != 'deleted'",
                (message_id, session_id),
            )
            cur.close()
            return cur.rowcount == 1

        return await self._write(op)

    async def add_receipt(self, session_id: str, message_id: int, user: str) -> bool:
        """Record that ``user`` read ``message_id``; ``False`` if already recorded."""
        if (
            await self._select_one(
                "SELECT 1 FROM messages WHERE id = ? AND session_id = ?", message_id, session_id
            )
            is None
        ):
            raise StoreError(f"message {message_id} does not exist in this room", code="unknown_message")
        read_at = utc_now()

        def op(con: sqlite3.Connection) -> bool:
            cur = con.execute(
                "INSERT OR IGNORE INTO read_receipts (message_id, user, read_at) VALUES (?, ?, ?)",
                (message_id, user, read_at),
            )
            cur.close()
            return cur.rowcount == 1

        return await self._write(op)

    async def toggle_reaction(self, session_id: str, message_id: int, user: str, emoji: str) -> Toggled:
        """Add ``user``'s ``emoji`` on ``message_id``, or remove it if it is there (one transaction),
        and note the change for resuming clients. ``unknown_message`` if the message is not in the room."""
        now = utc_now()

        def op(con: sqlite3.Connection) -> Toggled:
            row = con.execute(
                "SELECT 1 FROM messages WHERE id = ? AND session_id = ?", (message_id, session_id)
            ).fetchone()
            if row is None:
                raise StoreError(f"message {message_id} does not exist in this room", code="unknown_message")
            cur = con.execute(
                "DELETE FROM reactions WHERE message_id = ? AND emoji = ? AND user = ?",
                (message_id, emoji, user),
            )
            added = cur.rowcount == 0
            cur.close()
            if added:
                (mine,) = con.execute(
                    "SELECT COUNT(*) FROM reactions WHERE message_id = ? AND user = ?", (message_id, user)
                ).fetchone()
                if mine >= MAX_REACTIONS_PER_USER:
                    raise StoreError(
                        f"at most {MAX_REACTIONS_PER_USER} different reactions per message",
                        code="too_many_reactions",
                    )
                con.execute(
                    "INSERT INTO reactions (message_id, user, emoji, created_at) VALUES (?, ?, ?, ?)",
                    (message_id, user, emoji, now),
                ).close()
            con.execute(
                "INSERT INTO reaction_changes (message_id, session_id, room_last_id)"
                " VALUES (?, ?, (SELECT MAX(id) FROM messages WHERE session_id = ?))"
                " ON CONFLICT (message_id) DO UPDATE SET room_last_id = excluded.room_last_id",
                (message_id, session_id, session_id),
            ).close()
            rows = con.execute(
                "SELECT message_id, emoji, user FROM reactions WHERE message_id = ? ORDER BY rowid",
                (message_id,),
            ).fetchall()
            return Toggled(added, reaction_counts(rows).get(message_id, []))

        return await self._write(op)

    async def reactions(self, message_ids: list[int]) -> dict[int, list[ReactionCount]]:
        """The reactions of these messages (messages without any are left out)."""
        rows: list[Any] = []
        for start in range(0, len(message_ids), 500):  # within SQLite's limit on parameters
            chunk = message_ids[start : start + 500]
            rows += await self._select_all(
                f"SELECT message_id, emoji, user FROM reactions WHERE message_id IN ({','.join('?' * len(chunk))})"
                " ORDER BY message_id, rowid",
                *chunk,
            )
        return reaction_counts(rows)

    async def reactions_changed_since(self, session_id: str, after: int) -> dict[int, list[ReactionCount]]:
        """Every message of the room whose reactions changed while its newest id was ``after`` or
        more — what a client that has seen up to ``after`` may have missed — with its reactions
        now (``[]``: all removed)."""
        rows = await self._select_all(
            "SELECT message_id FROM reaction_changes WHERE session_id = ? AND room_last_id >= ?"
            " ORDER BY message_id",
            session_id,
            after,
        )
        ids = [r[0] for r in rows]
        counts = await self.reactions(ids)
        return {mid: counts.get(mid, []) for mid in ids}

    async def touch_reactions(self, session_id: str, message_ids: list[int], room_last_id: int) -> None:
        """Note that these messages' reactions reached clients only after the room's id
        ``room_last_id`` (a cluster process relayed the change late): a client resuming
        after any id up to it is sent their state (:meth:`reactions_changed_since`)."""

        def op(con: sqlite3.Connection) -> None:
            con.executemany(
                "UPDATE reaction_changes SET room_last_id = MAX(room_last_id, ?)"
                " WHERE message_id = ? AND session_id = ?",
                [(room_last_id, mid, session_id) for mid in message_ids],
            ).close()

        await self._write(op)

    # -- files ---------------------------------------------------------------

    async def put_file(
        self, session_id: str, attachment: Attachment, data: bytes, thumb: bytes | None
    ) -> bool:
        """Keep a file under its SHA-256 (``attachment.id``); ``False`` when those bytes are
        stored already (nothing is written: one copy however often it is uploaded)."""
        a, now = attachment, utc_now()

        def op(con: sqlite3.Connection) -> bool:
            cur = con.execute(
                "INSERT INTO files (id, name, type, size, width, height, data, thumb, session_id, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (a.id, a.name, a.type, a.size, a.width, a.height, data, thumb, session_id, now),
            )
            cur.close()
            return cur.rowcount == 1

        return await self._write(op)

    async def file_info(self, file_id: str) -> Attachment | None:
        """What messages show of a stored file (the name it was first uploaded under), or ``None``."""
        row = await self._select_one(f"SELECT {_FILE_COLUMNS} FROM files WHERE id = ?", file_id)
        return None if row is None else file_attachment(row)

    async def file_data(self, file_id: str, *, thumb: bool = False) -> StoredFile | None:
        """A stored file's bytes, or its thumbnail's (``None``: no such file, or no thumbnail)."""
        column = "thumb" if thumb else "data"
        row = await self._select_one(f"SELECT {_FILE_COLUMNS}, {column} FROM files WHERE id = ?", file_id)
        if row is None or row[7] is None:
            return None
        return StoredFile(file_attachment(row), bytes(row[7]))

    async def file_count(self) -> int:
        """How many files are stored (for tests: an upload of known bytes adds none)."""
        (n,) = await self._select_one("SELECT COUNT(*) FROM files")
        return int(n)

    # -- reads ---------------------------------------------------------------

    async def get(self, message_id: int) -> StoredMessage | None:
        row = await self._select_one(f"SELECT {_COLUMNS} FROM messages WHERE id = ?", message_id)
        return None if row is None else _row(row)

    async def by_client_id(self, session_id: str, client_id: str) -> StoredMessage | None:
        row = await self._select_one(
            f"SELECT {_COLUMNS} FROM messages WHERE session_id = ? AND client_id = ?", session_id, client_id
        )
        return None if row is None else _row(row)

    async def messages_after(
        self, session_id: str, after: int, *, limit: int | None = None
    ) -> list[StoredMessage]:
        """Every message of the session with an id greater than ``after``, in id order
        (the first ``limit`` of them with ``limit``: a page, for a long replay).

        This is the one resume function of chatkit: the WebSocket ``?after=``,
        the SSE ``Last-Event-ID`` and the client's catch-up all use it.
        """
        rows = await self._select_all(
            f"SELECT {_COLUMNS} FROM messages WHERE session_id = ? AND id > ? ORDER BY id LIMIT ?",
            session_id,
            after,
            -1 if limit is None else limit,
        )
        return [_row(r) for r in rows]

    async def last_id(self, session_id: str) -> int:
        """The newest message id of the session (0 when it has none)."""
        (value,) = await self._select_one("SELECT MAX(id) FROM messages WHERE session_id = ?", session_id)
        return int(value or 0)

    async def history(
        self, session_id: str, *, before: int | None = None, limit: int = 20
    ) -> list[StoredMessage]:
        """A page of history: the ``limit`` newest messages older than ``before``.

        ``limit`` is capped at :data:`MAX_PAGE`; the page is returned oldest first,
        ready to prepend to what a client shows. Replies still streaming are left out.
        """
        return (await self.history_page(session_id, before=before, limit=limit)).messages

    async def history_page(
        self, session_id: str, *, before: int | None = None, limit: int = 20
    ) -> HistoryPage:
        """:meth:`history` plus whether older messages remain, in one query (it reads one row more)."""
        limit = max(1, min(int(limit), MAX_PAGE))
        before = before if before is not None else 2**63 - 1
        rows = await self._select_all(
            f"SELECT {_COLUMNS} FROM messages WHERE session_id = ? AND id < ?"
            " AND status != 'streaming' ORDER BY id DESC LIMIT ?",
            session_id,
            before,
            limit + 1,
        )
        return HistoryPage([_row(r) for r in reversed(rows[:limit])], has_more=len(rows) > limit)

    async def recent(self, session_id: str, limit: int) -> list[StoredMessage]:
        """The last ``limit`` finished messages (the LLM's conversation context)."""
        rows = await self._select_all(
            f"SELECT {_COLUMNS} FROM messages WHERE session_id = ? AND status != 'streaming'"
            " AND content != '' ORDER BY id DESC LIMIT ?",
            session_id,
            limit,
        )
        return [_row(r) for r in reversed(rows)]

    async def receipts(self, message_id: int) -> list[str]:
        """Users who have read ``message_id``, in the order they read it."""
        rows = await self._select_all(
            "SELECT user FROM read_receipts WHERE message_id = ? ORDER BY read_at, user", message_id
        )
        return [r[0] for r in rows]

    async def count(self, session_id: str | None = None) -> int:
        """How many messages are stored (in one session, or in all)."""
        if session_id is None:
            (n,) = await self._select_one("SELECT COUNT(*) FROM messages")
        else:
            (n,) = await self._select_one("SELECT COUNT(*) FROM messages WHERE session_id = ?", session_id)
        return int(n)
