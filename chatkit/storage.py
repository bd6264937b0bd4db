"""The store interface, and :func:`open_store`, which picks SQLite or PostgreSQL by ``--db``.

Both stores keep the same promises: ids strictly increase within a room *in
commit order* (so resuming after id *n* never skips a smaller id committed
later), every write commits before it returns (group commit), a re-sent
``client_id`` is stored once, and ``messages_after`` is the one resume query.
"""

from __future__ import annotations

from typing import Protocol

from .protocol import Attachment, ReactionCount, StoredMessage
from .store import Appended, HistoryPage, StoredFile, Toggled

__all__ = ["ChatStore", "open_store", "is_postgres_url"]


class ChatStore(Protocol):
    """What the hub and the transports need from a store (SQLite or PostgreSQL)."""

    path: str

    async def close(self) -> None: ...
    async def ensure_session(self, session_id: str) -> None: ...
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
    ) -> Appended: ...
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
    ) -> Appended: ...
    async def start_reply(self, session_id: str, user: str = ...) -> StoredMessage: ...
    async def claim_reply(self, session_id: str, prompt_id: int, user: str = ...) -> StoredMessage | None: ...
    async def queued_replies(self, session_id: str) -> set[int]: ...
    async def pending(self, session_id: str, limit: int = 1) -> list[StoredMessage]: ...
    async def count_pending(self, session_id: str) -> int: ...
    async def finish_reply(self, message_id: int, content: str, status: str) -> bool | None: ...
    async def add_receipt(self, session_id: str, message_id: int, user: str) -> bool: ...
    async def delete_message(self, session_id: str, message_id: int) -> bool: ...
    async def get(self, message_id: int) -> StoredMessage | None: ...
    async def by_client_id(self, session_id: str, client_id: str) -> StoredMessage | None: ...
    async def messages_after(
        self, session_id: str, after: int, *, limit: int | None = None
    ) -> list[StoredMessage]: ...
    async def last_id(self, session_id: str) -> int: ...
    async def history(
        self, session_id: str, *, before: int | None = None, limit: int = 20
    ) -> list[StoredMessage]: ...
    async def history_page(
        self, session_id: str, *, before: int | None = None, limit: int = 20
    ) -> HistoryPage: ...
    async def recent(self, session_id: str, limit: int) -> list[StoredMessage]: ...
    async def receipts(self, message_id: int) -> list[str]: ...
    async def toggle_reaction(self, session_id: str, message_id: int, user: str, emoji: str) -> Toggled: ...
    async def reactions(self, message_ids: list[int]) -> dict[int, list[ReactionCount]]: ...
    async def reactions_changed_since(
        self, session_id: str, after: int
    ) -> dict[int, list[ReactionCount]]: ...
    async def touch_reactions(self, session_id: str, message_ids: list[int], room_last_id: int) -> None: ...
    async def count(self, session_id: str | None = None) -> int: ...
    async def put_file(
        self, session_id: str, attachment: Attachment, data: bytes, thumb: bytes | None
    ) -> bool: ...
    async def file_info(self, file_id: str) -> Attachment | None: ...
    async def file_data(self, file_id: str, *, thumb: bool = False) -> StoredFile | None: ...
    async def file_count(self) -> int: ...


def is_postgres_url(db: str) -> bool:
    return db.startswith(("postgresql://", "postgres://"))


async def open_store(db: str, *, recover: bool = True, writer: str = "thread") -> ChatStore:
    """Open the store ``db`` names: a ``postgresql://`` URL, or an SQLite path (``:memory:`` too).

    ``recover`` marks replies left ``streaming`` as ``interrupted`` — right for
    one process; with a broker the reply lease decides (see :mod:`chatkit.broker`).
    ``writer`` (SQLite only): ``"thread"``, the store's own thread, or ``"loop"``.
    """
    if is_postgres_url(db):
        from .store_pg import PostgresStore

        return await PostgresStore.open(db, recover=recover)
    from .store import Store

    return await Store.open(db, recover=recover, writer="loop" if writer == "loop" else "thread")
