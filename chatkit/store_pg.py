"""The message store on PostgreSQL (``asyncpg``), for several hosts.

The same interface and guarantees as the SQLite :class:`~chatkit.store.Store`:
schema migrations, group commit, ``client_id`` dedup, the reply row reserved
in the message's transaction, ``messages_after`` (resume), history pages and
read receipts. Selected with ``--db postgresql://…`` (see
:func:`chatkit.storage.open_store`).

**One order per room across processes.** A sequence hands out ids without
waiting for commits, so two processes writing one room could commit id 11
before id 10 — and a client that has seen 11 would resume past 10 forever.
Every write transaction therefore first takes a transaction-scoped advisory
lock per room it touches (``pg_advisory_xact_lock``, in a fixed order, so
batches never deadlock): within a room, ids are assigned and committed one
transaction at a time, so a reader that sees id *n* sees every smaller id of
that room. SQLite gets the same property from ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from .errors import StoreError
from .protocol import Attachment, ReactionCount, StoredMessage, utc_now
from .store import (
    AI_USER,
    MAX_PAGE,
    MAX_REACTIONS_PER_USER,
    Appended,
    HistoryPage,
    StoredFile,
    Toggled,
    file_attachment,
    reaction_counts,
)

__all__ = ["PostgresStore", "PG_SCHEMA_VERSION", "PG_MIGRATIONS"]

PG_MIGRATIONS: list[str] = [
    # 0 -> 1: the first schema (the SQLite schema, in PostgreSQL's types).
    """
    CREATE TABLE sessions (
        id          TEXT PRIMARY KEY,
        created_at  TEXT NOT NULL
    );
    CREATE TABLE messages (
        id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        session_id  TEXT NOT NULL REFERENCES sessions(id),
        "user"      TEXT NOT NULL,
        is_user     BOOLEAN NOT NULL,
        content     TEXT NOT NULL,
        status      TEXT NOT NULL,
        client_id   TEXT,
        created_at  TEXT NOT NULL
    );
    CREATE INDEX messages_by_session ON messages(session_id, id);
    CREATE UNIQUE INDEX messages_by_client_id
        ON messages(session_id, client_id) WHERE client_id IS NOT NULL;
    CREATE TABLE read_receipts (
        message_id  BIGINT NOT NULL REFERENCES messages(id),
        "user"      TEXT NOT NULL,
        read_at     TEXT NOT NULL,
        PRIMARY KEY (message_id, "user")
    );
    """,
    # 1 -> 2: prompts waiting for an AI reply (the cluster's reply queue, in the store).
    """
    ALTER TABLE messages ADD COLUMN wants_reply BOOLEAN NOT NULL DEFAULT FALSE;
    CREATE INDEX messages_wanting_reply ON messages(session_id, id) WHERE wants_reply;
    """,
    # 2 -> 3: emoji reactions (see chatkit/store.py's migration 3).
    """
    CREATE TABLE reactions (
        seq         BIGINT GENERATED ALWAYS AS IDENTITY,
        message_id  BIGINT NOT NULL REFERENCES messages(id),
        "user"      TEXT NOT NULL,
        emoji       TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        PRIMARY KEY (message_id, emoji, "user")
    );
    CREATE TABLE reaction_changes (
        message_id  BIGINT PRIMARY KEY REFERENCES messages(id),
        session_id  TEXT NOT NULL,
        room_last_id BIGINT NOT NULL
    );
    CREATE INDEX reaction_changes_by_room ON reaction_changes(session_id, room_last_id);
    """,
    # 3 -> 4: attachments, content-addressed in the database (see chatkit/store.py's migration 4).
    """
    CREATE TABLE files (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        type        TEXT NOT NULL,
        size        BIGINT NOT NULL,
        width       INTEGER,
        height      INTEGER,
        data        BYTEA NOT NULL,
        thumb       BYTEA,
        session_id  TEXT NOT NULL,
        created_at  TEXT NOT NULL
    );
    ALTER TABLE messages ADD COLUMN attachment TEXT;
    """,
]
PG_SCHEMA_VERSION = len(PG_MIGRATIONS)

_COLUMNS = 'id, session_id, "user", is_user, content, status, client_id, created_at, attachment'
_FILE_COLUMNS = "id, name, type, size, width, height, thumb IS NOT NULL"
_INSERT_SESSION = "INSERT INTO sessions (id, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING"
_INSERT_MESSAGE = (
    'INSERT INTO messages (session_id, "user", is_user, content, status, client_id, created_at)'
    " VALUES ($1, $2, $3, $4, $5, $6, $7)"
)
_MIGRATION_LOCK = 0x636B6D67  # "ckmg": one process migrates at a time

Op = Callable[[asyncpg.Connection], Awaitable[Any]]


def _row(row: Any) -> StoredMessage:
    return StoredMessage(
        id=row[0],
        session_id=row[1],
        user=row[2],
        is_user=row[3],
        content=row[4],
        status=row[5],
        client_id=row[6],
        created_at=row[7],
        attachment=Attachment.from_json(row[8]),
    )


async def _lock_rooms(con: asyncpg.Connection, rooms: set[str]) -> None:
    """Serialize writers per room until COMMIT (sorted: two batches never deadlock)."""
    for room in sorted(rooms):
        await con.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", room)


class PostgresStore:
    """Async access to a PostgreSQL chat database. Use :meth:`open` (or ``async with``)."""

    def __init__(self, pool: asyncpg.Pool, dsn: str) -> None:
        self._pool = pool
        self.path = dsn
        self._sessions: set[str] = set()
        self._pending: list[tuple[str | None, Op, asyncio.Future]] = []
        self._writer: asyncio.Task | None = None

    @classmethod
    async def open(cls, dsn: str, *, recover: bool = True, pool_size: int = 4) -> PostgresStore:
        """Connect (creating or migrating the schema).

        With ``recover``, replies left ``streaming`` by a dead process are marked
        ``interrupted`` — right for one process; with a broker, the reply lease
        decides instead (another process may be streaming them right now).
        """
        try:
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=pool_size)
        except (OSError, asyncpg.PostgresError) as exc:
            raise StoreError(f"cannot connect to {dsn}: {exc}", code="store_unavailable") from exc
        store = cls(pool, dsn)
        try:
            await store._migrate()
            if recover:
                await pool.execute("UPDATE messages SET status = 'interrupted' WHERE status = 'streaming'")
        except BaseException:
            await pool.close()
            raise
        return store

    async def _migrate(self) -> None:
        async with self._pool.acquire() as con, con.transaction():
            await con.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await con.execute("CREATE TABLE IF NOT EXISTS chatkit_schema (version INTEGER NOT NULL)")
            version = await con.fetchval("SELECT version FROM chatkit_schema")
            if version is None:
                version = 0
                await con.execute("INSERT INTO chatkit_schema (version) VALUES (0)")
            if version > PG_SCHEMA_VERSION:
                raise StoreError(
                    f"database schema {version} is newer than this chatkit ({PG_SCHEMA_VERSION})",
                    code="schema_too_new",
                )
            for target in range(version + 1, PG_SCHEMA_VERSION + 1):
                await con.execute(PG_MIGRATIONS[target - 1])
                await con.execute("UPDATE chatkit_schema SET version = $1", target)

    async def schema_version(self) -> int:
        return int(await self._pool.fetchval("SELECT version FROM chatkit_schema"))

    async def close(self) -> None:
        """Finish the writes queued so far, then close the pool."""
        while self._writer is not None:
            await asyncio.shield(self._writer)
        await self._pool.close()

    async def __aenter__(self) -> PostgresStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- group commit --------------------------------------------------------

    async def _write(self, room: str | None, op: Op) -> Any:
        """Run ``op(connection)`` in the next write batch; return its result after COMMIT.

        Every write queued while a batch commits goes into the next one (one
        transaction, the rooms' advisory locks taken first); if the batch fails,
        each op is retried in a transaction of its own so one bad op fails alone.
        """
        future = asyncio.get_running_loop().create_future()
        self._pending.append((room, op, future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_batches(), name="chatkit-pg-writer")
        return await future

    async def _write_batches(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    results = await self._run_batch(batch)
                except BaseException as exc:
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(StoreError(f"write failed: {exc}", code="store_error"))
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                for (_, _, future), result in zip(batch, results):
                    if future.done():
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._writer = None

    async def _run_batch(self, batch: list[tuple[str | None, Op, asyncio.Future]]) -> list[Any]:
        async with self._pool.acquire() as con:
            try:
                async with con.transaction():
                    await _lock_rooms(con, {room for room, _, _ in batch if room is not None})
                    return [await op(con) for _, op, _ in batch]
            except (asyncpg.PostgresError, StoreError):
                pass
            results: list[Any] = []
            for room, op, _ in batch:
                try:
                    async with con.transaction():
                        await _lock_rooms(con, {room} if room is not None else set())
                        results.append(await op(con))
                except (asyncpg.PostgresError, StoreError) as exc:
                    results.append(exc)
            return results

    # -- writes --------------------------------------------------------------

    async def ensure_session(self, session_id: str) -> None:
        if session_id in self._sessions:
            return
        created_at = utc_now()

        async def op(con: asyncpg.Connection) -> None:
            await con.execute(_INSERT_SESSION, session_id, created_at)

        await self._write(None, op)
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
        """Store a message (and, with ``reply_user``, reserve its reply's row) in one transaction."""
        created_at = utc_now()
        known = session_id in self._sessions
        attached = attachment.to_json() if attachment is not None else None

        async def op(con: asyncpg.Connection) -> Any:
            if not known:
                await con.execute(_INSERT_SESSION, session_id, created_at)
            msg_id = await con.fetchval(
                'INSERT INTO messages (session_id, "user", is_user, content, status, client_id, created_at,'
                " wants_reply, attachment) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                " ON CONFLICT (session_id, client_id) WHERE client_id IS NOT NULL DO NOTHING RETURNING id",
                session_id,
                user,
                is_user,
                content,
                status,
                client_id,
                created_at,
                wants_reply,
                attached,
            )
            if msg_id is None:
                row = await con.fetchrow(
                    f"SELECT {_COLUMNS} FROM messages WHERE session_id = $1 AND client_id = $2",
                    session_id,
                    client_id,
                )
                return _row(row)
            reply_id = None
            if reply_user is not None:
                reply_id = await con.fetchval(
                    _INSERT_MESSAGE + " RETURNING id",
                    session_id,
                    reply_user,
                    False,
                    "",
                    "streaming",
                    None,
                    created_at,
                )
            return msg_id, reply_id

        result = await self._write(session_id, op)
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
        return (await self.append(session_id, user, "", is_user=False, status="streaming")).message

    async def claim_reply(self, session_id: str, prompt_id: int, user: str = AI_USER) -> StoredMessage | None:
        """Take a waiting prompt off the reply queue and return its reply's row (one transaction):
        the row reserved with the prompt, or for a prompt stored without one a row reserved now."""
        created_at = utc_now()

        async def op(con: asyncpg.Connection) -> tuple[int, str, str] | None:
            done = await con.execute(
                "UPDATE messages SET wants_reply = FALSE WHERE id = $1 AND session_id = $2 AND wants_reply",
                prompt_id,
                session_id,
            )
            if done != "UPDATE 1":
                return None
            reserved = await con.fetchrow(
                'SELECT n.id, n."user", n.created_at FROM messages n JOIN messages p ON p.id = $1'
                " WHERE n.session_id = $2 AND n.id > p.id AND NOT n.is_user AND n.status = 'streaming'"
                " AND n.created_at = p.created_at"
                " AND n.id = (SELECT MIN(id) FROM messages WHERE session_id = $2 AND id > $1)",
                prompt_id,
                session_id,
            )
            if reserved is not None:
                return reserved[0], reserved[1], reserved[2]
            reply_id = await con.fetchval(
                _INSERT_MESSAGE + " RETURNING id", session_id, user, False, "", "streaming", None, created_at
            )
            return reply_id, user, created_at

        claimed = await self._write(session_id, op)
        if claimed is None:
            return None
        reply_id, reply_user, at = claimed
        return StoredMessage(reply_id, session_id, reply_user, False, "", "streaming", None, at)

    async def queued_replies(self, session_id: str) -> set[int]:
        rows = await self._pool.fetch(
            "SELECT n.id FROM messages p JOIN messages n ON n.session_id = p.session_id"
            " AND n.id = (SELECT MIN(id) FROM messages WHERE session_id = p.session_id AND id > p.id)"
            " WHERE p.session_id = $1 AND p.wants_reply AND NOT n.is_user AND n.status = 'streaming'",
            session_id,
        )
        return {r[0] for r in rows}

    async def pending(self, session_id: str, limit: int = 1) -> list[StoredMessage]:
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM messages WHERE session_id = $1 AND wants_reply ORDER BY id LIMIT $2",
            session_id,
            limit,
        )
        return [_row(r) for r in rows]

    async def count_pending(self, session_id: str) -> int:
        return int(
            await self._pool.fetchval(
                "SELECT COUNT(*) FROM messages WHERE session_id = $1 AND wants_reply", session_id
            )
        )

    async def finish_reply(self, message_id: int, content: str, status: str) -> bool:
        """Store a reply's text and final status — only if it is still ``streaming``.

        Returns ``False`` when it was already finished (by a process that took
        over the room's reply lease): the late writer is fenced off.
        """

        async def op(con: asyncpg.Connection) -> bool:
            done = await con.execute(
                "UPDATE messages SET content = $1, status = $2 WHERE id = $3 AND status = 'streaming'",
                content,
                status,
                message_id,
            )
            return done == "UPDATE 1"

        return await self._write(None, op)

    async def delete_message(self, session_id: str, message_id: int) -> bool:
        """Replace a message by a tombstone (no text, status ``deleted``); see ``Store.delete_message``."""

        async def op(con: asyncpg.Connection) -> bool:
            done = await con.execute(
                "UPDATE messages SET content = '', status = 'deleted', attachment = NULL "
                "WHERE id = $1 AND session_id = $2 AND status != 'deleted'",
                message_id,
                session_id,
            )
            return done == "UPDATE 1"

        return await self._write(None, op)

    async def add_receipt(self, session_id: str, message_id: int, user: str) -> bool:
        if (
            await self._pool.fetchval(
                "SELECT 1 FROM messages WHERE id = $1 AND session_id = $2", message_id, session_id
            )
            is None
        ):
            raise StoreError(f"message {message_id} does not exist in this room", code="unknown_message")
        read_at = utc_now()

        async def op(con: asyncpg.Connection) -> bool:
            done = await con.execute(
                'INSERT INTO read_receipts (message_id, "user", read_at) VALUES ($1, $2, $3)'
                " ON CONFLICT DO NOTHING",
                message_id,
                user,
                read_at,
            )
            return done == "INSERT 0 1"

        return await self._write(None, op)

    async def toggle_reaction(self, session_id: str, message_id: int, user: str, emoji: str) -> Toggled:
        now = utc_now()

        async def op(con: asyncpg.Connection) -> Toggled:
            if (
                await con.fetchval(
                    "SELECT 1 FROM messages WHERE id = $1 AND session_id = $2", message_id, session_id
                )
                is None
            ):
                raise StoreError(f"message {message_id} does not exist in this room", code="unknown_message")
            done = await con.execute(
                'DELETE FROM reactions WHERE message_id = $1 AND emoji = $2 AND "user" = $3',
                message_id,
                emoji,
                user,
            )
            added = done == "DELETE 0"
            if added:
                mine = await con.fetchval(
                    'SELECT COUNT(*) FROM reactions WHERE message_id = $1 AND "user" = $2', message_id, user
                )
                if mine >= MAX_REACTIONS_PER_USER:
                    raise StoreError(
                        f"at most {MAX_REACTIONS_PER_USER} different reactions per message",
                        code="too_many_reactions",
                    )
                await con.execute(
                    'INSERT INTO reactions (message_id, "user", emoji, created_at) VALUES ($1, $2, $3, $4)',
                    message_id,
                    user,
                    emoji,
                    now,
                )
            await con.execute(
                "INSERT INTO reaction_changes (message_id, session_id, room_last_id)"
                " VALUES ($1, $2, (SELECT MAX(id) FROM messages WHERE session_id = $2))"
                " ON CONFLICT (message_id) DO UPDATE SET room_last_id = excluded.room_last_id",
                message_id,
                session_id,
            )
            rows = await con.fetch(
                'SELECT message_id, emoji, "user" FROM reactions WHERE message_id = $1 ORDER BY seq',
                message_id,
            )
            return Toggled(added, reaction_counts([tuple(r) for r in rows]).get(message_id, []))

        return await self._write(session_id, op)

    async def reactions(self, message_ids: list[int]) -> dict[int, list[ReactionCount]]:
        if not message_ids:
            return {}
        rows = await self._pool.fetch(
            'SELECT message_id, emoji, "user" FROM reactions WHERE message_id = ANY($1::bigint[])'
            " ORDER BY message_id, seq",
            message_ids,
        )
        return reaction_counts([tuple(r) for r in rows])

    async def reactions_changed_since(self, session_id: str, after: int) -> dict[int, list[ReactionCount]]:
        rows = await self._pool.fetch(
            "SELECT message_id FROM reaction_changes WHERE session_id = $1 AND room_last_id >= $2"
            " ORDER BY message_id",
            session_id,
            after,
        )
        ids = [r[0] for r in rows]
        counts = await self.reactions(ids)
        return {mid: counts.get(mid, []) for mid in ids}

    async def touch_reactions(self, session_id: str, message_ids: list[int], room_last_id: int) -> None:
        async def op(con: asyncpg.Connection) -> None:
            await con.execute(
                "UPDATE reaction_changes SET room_last_id = GREATEST(room_last_id, $1)"
                " WHERE message_id = ANY($2::bigint[]) AND session_id = $3",
                room_last_id,
                message_ids,
                session_id,
            )

        await self._write(session_id, op)

    # -- files ---------------------------------------------------------------

    async def put_file(
        self, session_id: str, attachment: Attachment, data: bytes, thumb: bytes | None
    ) -> bool:
        """Keep a file under its SHA-256; ``False`` when those bytes are stored already."""
        a, now = attachment, utc_now()

        async def op(con: asyncpg.Connection) -> bool:
            done = await con.execute(
                "INSERT INTO files (id, name, type, size, width, height, data, thumb, session_id, created_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING",
                a.id,
                a.name,
                a.type,
                a.size,
                a.width,
                a.height,
                data,
                thumb,
                session_id,
                now,
            )
            return done == "INSERT 0 1"

        return await self._write(None, op)

    async def file_info(self, file_id: str) -> Attachment | None:
        row = await self._pool.fetchrow(f"SELECT {_FILE_COLUMNS} FROM files WHERE id = $1", file_id)
        return None if row is None else file_attachment(row)

    async def file_data(self, file_id: str, *, thumb: bool = False) -> StoredFile | None:
        column = "thumb" if thumb else "data"
        row = await self._pool.fetchrow(f"SELECT {_FILE_COLUMNS}, {column} FROM files WHERE id = $1", file_id)
        if row is None or row[7] is None:
            return None
        return StoredFile(file_attachment(row), bytes(row[7]))

    async def file_count(self) -> int:
        return int(await self._pool.fetchval("SELECT COUNT(*) FROM files"))

    # -- reads ---------------------------------------------------------------

    async def get(self, message_id: int) -> StoredMessage | None:
        row = await self._pool.fetchrow(f"SELECT {_COLUMNS} FROM messages WHERE id = $1", message_id)
        return None if row is None else _row(row)

    async def by_client_id(self, session_id: str, client_id: str) -> StoredMessage | None:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM messages WHERE session_id = $1 AND client_id = $2",
            session_id,
            client_id,
        )
        return None if row is None else _row(row)

    async def messages_after(
        self, session_id: str, after: int, *, limit: int | None = None
    ) -> list[StoredMessage]:
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM messages WHERE session_id = $1 AND id > $2 ORDER BY id LIMIT $3",
            session_id,
            after,
            limit,
        )
        return [_row(r) for r in rows]

    async def last_id(self, session_id: str) -> int:
        value = await self._pool.fetchval("SELECT MAX(id) FROM messages WHERE session_id = $1", session_id)
        return int(value or 0)

    async def history(
        self, session_id: str, *, before: int | None = None, limit: int = 20
    ) -> list[StoredMessage]:
        return (await self.history_page(session_id, before=before, limit=limit)).messages

    async def history_page(
        self, session_id: str, *, before: int | None = None, limit: int = 20
    ) -> HistoryPage:
        limit = max(1, min(int(limit), MAX_PAGE))
        before = before if before is not None else 2**63 - 1
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM messages WHERE session_id = $1 AND id < $2"
            " AND status != 'streaming' ORDER BY id DESC LIMIT $3",
            session_id,
            before,
            limit + 1,
        )
        return HistoryPage([_row(r) for r in reversed(rows[:limit])], has_more=len(rows) > limit)

    async def recent(self, session_id: str, limit: int) -> list[StoredMessage]:
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM messages WHERE session_id = $1 AND status != 'streaming'"
            " AND content != '' ORDER BY id DESC LIMIT $2",
            session_id,
            limit,
        )
        return [_row(r) for r in reversed(rows)]

    async def receipts(self, message_id: int) -> list[str]:
        rows = await self._pool.fetch(
            'SELECT "user" FROM read_receipts WHERE message_id = $1 ORDER BY read_at, "user"', message_id
        )
        return [r[0] for r in rows]

    async def count(self, session_id: str | None = None) -> int:
        if session_id is None:
            return int(await self._pool.fetchval("SELECT COUNT(*) FROM messages"))
        return int(
            await self._pool.fetchval("SELECT COUNT(*) FROM messages WHERE session_id = $1", session_id)
        )
