"""Rooms, membership, presence, typing, fan-out and AI replies — with no sockets.

The hub is the transport-independent heart of the server. A member of a room
is anything with a :class:`Sink`: the WebSocket server and the SSE server each
wrap their connections in one, so one room can hold both kinds of members and
every frame is encoded once and handed to every sink without awaiting any of
them (a slow member never slows the room).

Ordering: every write to the store for a room (a message, a reply's start and
end, a join's replay) happens under the room's lock, so frames leave in id
order and a joining member's replay and live traffic neither overlap nor leave
a gap. AI replies run one at a time per room in a worker task that the hub
owns and cancels on :meth:`Hub.close`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Literal, Protocol

from . import protocol
from .errors import ChatkitError, LLMError, ProtocolError
from .llm.base import DEFAULT_SYSTEM_PROMPT, ChatMessage, Streamer
from .protocol import StoredMessage, encode
from .store import AI_USER, Store

__all__ = ["Hub", "HubConfig", "Member", "Sink", "TokenBucket"]

logger = logging.getLogger("chatkit.hub")

BUSY_MESSAGE = "the tutor is busy; your message is saved but gets no reply"


class Sink(Protocol):
    """Where a member's frames go. ``send`` must not block or await.

    A sink class may also define ``send_many(sinks, data)`` (a classmethod)
    to hand one frame to many of its sinks at once; fan-out uses it.
    """

    def send(self, data: str) -> None: ...


Groups = list[tuple["Callable[[list[Sink], str], None] | None", list[Sink]]]


def group_sinks(members: "list[Member] | set[Member]", exclude: "Member | None" = None) -> Groups:
    """Members' sinks grouped by sink class, with the class's ``send_many`` if it has one."""
    by_class: dict[type, list[Sink]] = {}
    for member in members:
        if member is not exclude:
            by_class.setdefault(type(member.sink), []).append(member.sink)
    return [(getattr(cls, "send_many", None), sinks) for cls, sinks in by_class.items()]


def send_groups(groups: Groups, data: str) -> None:
    """Hand one encoded frame to every sink of the groups."""
    for send_many, sinks in groups:
        if send_many is not None:
            send_many(sinks, data)
        else:
            for sink in sinks:
                sink.send(data)


def fanout(members: "list[Member] | set[Member]", data: str, exclude: "Member | None" = None) -> None:
    """Hand one encoded frame to every member's sink, batched per sink class."""
    send_groups(group_sinks(members, exclude), data)


@dataclass
class HubConfig:
    """Room behaviour; every field is also a ``chatkit serve`` option."""

    ai_replies: Literal["room", "sender"] = "room"
    """Stream AI replies to the whole room, or only to the sender (the seed's behaviour)."""
    context_messages: int = 20
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    reply_queue: int = 8
    """Replies waiting per room; past it the sender gets ``busy`` (its message is kept)."""
    llm_idle_timeout: float = 30.0
    """A stream that yields nothing for this long is cut (``llm_timeout``)."""
    rate_limit: float = 5.0
    """Chat messages per second per member (sustained)."""
    rate_burst: int = 10
    typing_timeout: float = 5.0
    """A typing state not refreshed for this long expires (``is_typing: false``)."""
    max_text: int = protocol.DEFAULT_MAX_TEXT
    ai_user: str = AI_USER
    welcome: str = "Connected to the chat."


class TokenBucket:
    """A token bucket: ``rate`` tokens per second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.clock = clock
        self.stamp = clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass(eq=False)
class Member:
    """One connection's place in a room."""

    room: "Room"
    user: str
    sink: Sink
    messages: TokenBucket
    frames: TokenBucket

    def send(self, frame: dict) -> None:
        self.sink.send(encode(frame))


@dataclass(eq=False)
class ActiveReply:
    id: int
    sender: str
    text: str = ""
    task: asyncio.Task | None = None
    stopped: bool = False
    targets: list["Member"] = field(default_factory=list)
    groups: "Groups" = field(default_factory=list)
    targets_version: int = -1


@dataclass(eq=False)
class Room:
    session_id: str
    members: set[Member] = field(default_factory=set)
    online: collections.Counter = field(default_factory=collections.Counter)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pending: int = 0
    typing: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    queue: collections.deque = field(default_factory=collections.deque)
    worker: asyncio.Task | None = None
    active: ActiveReply | None = None
    context: collections.deque | None = None
    """The last messages of the room, kept for the model's context (loaded once from the store)."""
    last_id: int | None = None
    """The newest message id of the room (loaded once, then kept up to date under the lock)."""
    version: int = 0
    """Bumped on every join and leave: cached member lists know when they are stale."""

    def users(self) -> list[str]:
        return sorted(self.online)

    def fanout(self, data: str, exclude: Member | None = None) -> None:
        fanout(list(self.members), data, exclude)

    def remember(self, msg: StoredMessage) -> None:
        if self.context is not None and msg.content:
            self.context.append(msg)

    def idle(self) -> bool:
        return not self.members and self.worker is None and self.pending == 0


class Hub:
    """All rooms of one server, their members and their AI replies."""

    def __init__(self, store: Store, streamer: Streamer, config: HubConfig | None = None):
        self.store = store
        self.streamer = streamer
        self.config = config or HubConfig()
        self.rooms: dict[str, Room] = {}
        self._closing = False

    # -- rooms ---------------------------------------------------------------

    def _room(self, session_id: str) -> Room:
        room = self.rooms.get(session_id)
        if room is None:
            room = self.rooms[session_id] = Room(session_id)
        return room

    def _maybe_drop(self, room: Room) -> None:
        if room.idle() and self.rooms.get(room.session_id) is room:
            for handle in room.typing.values():
                handle.cancel()
            del self.rooms[room.session_id]

    def online(self, session_id: str) -> list[str]:
        room = self.rooms.get(session_id)
        return room.users() if room else []

    # -- membership ----------------------------------------------------------

    async def join(
        self, session_id: str, user: str, sink: Sink, *, after: int | None = None
    ) -> Member:
        """Add a member: send it ``connection``, replay what it missed, announce it.

        With ``after``, every stored message of the room with a larger id is sent
        before any live frame; a reply still streaming is sent as one ``ai_chunk``
        holding the text so far, and continues live.
        """
        room = self._room(session_id)
        room.pending += 1
        try:
            async with room.lock:
                await self.store.ensure_session(session_id)
                backlog = [] if after is None else await self.store.messages_after(session_id, after)
                if room.last_id is None:
                    room.last_id = await self.store.last_id(session_id)
                last_id = room.last_id
                # From here to the end of the block nothing awaits: the replay and
                # the registration are one step as far as other tasks can see.
                member = Member(
                    room,
                    user,
                    sink,
                    self.message_bucket(),
                    TokenBucket(self.config.rate_limit * 10, self.config.rate_burst * 10),
                )
                first = room.online[user] == 0
                room.online[user] += 1
                member.send(
                    protocol.connection_frame(
                        session_id, user, room.users(), self.config.welcome, last_id
                    )
                )
                for msg in backlog:
                    self._replay(room, member, msg)
                for typist in room.typing:
                    if typist != user:
                        member.send(protocol.typing_frame(typist, True))
                room.members.add(member)
                room.version += 1
                if first:
                    room.fanout(encode(protocol.user_join_frame(user)), exclude=member)
        finally:
            room.pending -= 1
        logger.info("join room=%s user=%s after=%s replayed=%d", session_id, user, after, len(backlog))
        return member

    def _replay(self, room: Room, member: Member, msg: StoredMessage) -> None:
        if msg.status != "streaming":
            member.send(msg.to_frame())
        elif room.active is not None and room.active.id == msg.id:
            member.send(protocol.ai_chunk_frame(msg.id, room.active.text, snapshot=True))

    def leave(self, member: Member) -> None:
        """Remove a member; announce the user's departure when it was their last connection."""
        room = member.room
        if member not in room.members:
            return
        room.members.discard(member)
        room.version += 1
        room.online[member.user] -= 1
        if room.online[member.user] <= 0:
            del room.online[member.user]
            self._clear_typing(room, member.user, announce=True)
            room.fanout(encode(protocol.user_leave_frame(member.user)))
        logger.info("leave room=%s user=%s", room.session_id, member.user)
        self._maybe_drop(room)

    # -- client frames -------------------------------------------------------

    async def handle(self, member: Member, frame: protocol.ClientFrame) -> None:
        """Act on one decoded client frame; errors go back to the member as ``error`` frames."""
        try:
            if not member.frames.take():
                raise ProtocolError("too many frames; slow down", code="rate_limited")
            if isinstance(frame, protocol.SendMessage):
                self.check_rate(member.messages)
                msg, created, queued = await self.post(
                    member.room.session_id, member.user, frame.text, client_id=frame.client_id
                )
                if not created:  # a re-send: answer the sender with the stored message
                    member.send(msg.to_frame())
                elif not queued:
                    raise ProtocolError(BUSY_MESSAGE, code="busy")
            elif isinstance(frame, protocol.Typing):
                self.set_typing(member, frame.is_typing)
            elif isinstance(frame, protocol.ReadReceipt):
                await self.read(member, frame.message_id)
            elif isinstance(frame, protocol.Stop):
                self.stop(member.room.session_id)
            elif isinstance(frame, protocol.Ping):
                member.send(protocol.pong_frame())
        except ChatkitError as exc:
            logger.info(
                "refused frame room=%s user=%s code=%s: %s",
                member.room.session_id, member.user, exc.code, exc.message,
            )
            member.send(protocol.error_frame(exc.code, exc.message))

    def message_bucket(self) -> TokenBucket:
        """A fresh chat-message rate limiter (one per WebSocket member or SSE poster)."""
        return TokenBucket(self.config.rate_limit, self.config.rate_burst)

    def check_rate(self, bucket: TokenBucket) -> None:
        """Take a token or raise ``ProtocolError("rate_limited")``."""
        if not bucket.take():
            raise ProtocolError(
                f"more than {self.config.rate_limit:g} messages per second; slow down",
                code="rate_limited",
            )

    async def post(
        self, session_id: str, user: str, text: str, *, client_id: str | None = None
    ) -> tuple[StoredMessage, bool, bool]:
        """Store a chat message, broadcast it, and queue its AI reply.

        Returns ``(message, created, queued)``. ``created`` is ``False`` when the
        ``client_id`` was already stored (nothing is broadcast or replied again);
        ``queued`` is ``False`` when the room's reply queue was full: the message
        is stored and broadcast all the same, but gets no reply (``busy``).
        """
        if self._closing:
            raise ProtocolError("the server is shutting down", code="shutting_down")
        room = self._room(session_id)
        room.pending += 1
        try:
            async with room.lock:
                # When the room is idle its reply starts at once: reserve the reply's row
                # in the same transaction as the message.
                idle = (room.worker is None and not room.queue and not self._closing
                        and self.config.reply_queue > 0)
                msg, created, reserved = await self.store.append_with_reply(
                    session_id, user, text, client_id=client_id,
                    reply_user=self.config.ai_user if idle else None,
                )
                if created:
                    room.last_id = reserved.id if reserved else msg.id
                    room.fanout(encode(msg.to_frame()))
                    room.remember(msg)
        finally:
            room.pending -= 1
        if not created:
            self._maybe_drop(room)
            return msg, False, False
        self._clear_typing(room, user, announce=True)
        if len(room.queue) >= self.config.reply_queue:
            logger.warning("room %s: reply queue full, message %d gets no reply", session_id, msg.id)
            self._maybe_drop(room)
            return msg, True, False
        room.queue.append((msg, reserved))
        if room.worker is None:
            room.worker = asyncio.create_task(
                self._reply_worker(room), name=f"chatkit-replies-{session_id}"
            )
        return msg, True, True

    def set_typing(self, member: Member, is_typing: bool) -> None:
        room, user = member.room, member.user
        handle = room.typing.pop(user, None)
        if handle is not None:
            handle.cancel()
        if is_typing:
            loop = asyncio.get_running_loop()
            room.typing[user] = loop.call_later(
                self.config.typing_timeout, self._clear_typing, room, user, True
            )
        if is_typing or handle is not None:
            room.fanout(encode(protocol.typing_frame(user, is_typing)), exclude=member)

    def _clear_typing(self, room: Room, user: str, announce: bool) -> None:
        handle = room.typing.pop(user, None)
        if handle is not None:
            handle.cancel()
            if announce:
                data = encode(protocol.typing_frame(user, False))
                for member in list(room.members):
                    if member.user != user:
                        member.sink.send(data)

    async def read(self, member: Member, message_id: int) -> None:
        room = member.room
        if await self.store.add_receipt(room.session_id, message_id, member.user):
            room.fanout(encode(protocol.read_receipt_frame(message_id, member.user)))

    def stop(self, session_id: str) -> bool:
        """Stop the reply streaming in a room; ``False`` when none is."""
        room = self.rooms.get(session_id)
        active = room.active if room else None
        if active is None or active.task is None or active.stopped:
            return False
        active.stopped = True
        active.task.cancel()
        return True

    # -- AI replies ----------------------------------------------------------

    def _targets(self, room: Room, reply: ActiveReply) -> Groups:
        """Who gets the reply's frames (grouped sinks), recomputed only when membership changed."""
        if reply.targets_version != room.version:
            if self.config.ai_replies == "sender":
                reply.targets = [m for m in room.members if m.user == reply.sender]
            else:
                reply.targets = list(room.members)
            reply.groups = group_sinks(reply.targets)
            reply.targets_version = room.version
        return reply.groups

    def _send_reply_frame(self, room: Room, reply: ActiveReply, frame: dict) -> None:
        send_groups(self._targets(room, reply), encode(frame))

    async def _reply_worker(self, room: Room) -> None:
        try:
            while room.queue:
                await self._reply(room, *room.queue.popleft())
        finally:
            room.worker = None
            self._maybe_drop(room)

    async def _context(self, room: Room, prompt: StoredMessage) -> list[ChatMessage]:
        """System prompt + the room's last messages up to and including ``prompt``.

        The recent messages are kept in memory per room; they are loaded once,
        under the room lock so that no message stored meanwhile is missed.
        """
        if room.context is None:
            async with room.lock:
                if room.context is None:
                    history = await self.store.recent(room.session_id, self.config.context_messages)
                    room.context = collections.deque(history, maxlen=self.config.context_messages)
        messages: list[ChatMessage] = [{"role": "system", "content": self.config.system_prompt}]
        for msg in sorted((m for m in room.context if m.id <= prompt.id), key=lambda m: m.id):
            if msg.is_user:
                messages.append({"role": "user", "content": msg.content})
            else:
                messages.append({"role": "assistant", "content": msg.content})
        return messages

    async def _reply(self, room: Room, prompt: StoredMessage, row: StoredMessage | None) -> None:
        messages = await self._context(room, prompt)
        if row is None:
            async with room.lock:
                row = await self.store.start_reply(room.session_id, self.config.ai_user)
                room.last_id = row.id
        reply = room.active = ActiveReply(row.id, prompt.user)
        reply.task = asyncio.current_task()  # what `stop` cancels
        status = "complete"
        try:
            try:
                await self._pump(room, reply, messages)
            finally:
                reply.task = None  # past this point `stop` has nothing to cancel
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if reply.stopped and task is not None and task.uncancel() == 0:
                status = "cancelled"  # a `stop`, and nothing else, cancelled us
            else:
                await self._finish(room, reply, "interrupted")  # the hub is closing
                raise
        except LLMError as exc:
            status = "error"
            logger.warning("reply %d in room %s failed: %s", reply.id, room.session_id, exc)
            self._send_reply_frame(room, reply, protocol.error_frame(exc.code, exc.message))
        except Exception:
            status = "error"
            logger.exception("reply %d in room %s crashed", reply.id, room.session_id)
            self._send_reply_frame(
                room, reply, protocol.error_frame("llm_error", "the tutor failed to answer")
            )
        await self._finish(room, reply, status)

    async def _pump(self, room: Room, reply: ActiveReply, messages: list[ChatMessage]) -> None:
        """Forward the streamer's deltas to the room; cut the stream when it stalls.

        The idle timeout is one watchdog timer per reply that re-arms itself,
        not a timeout per chunk: the hot path only notes the time of each chunk.
        """
        loop = asyncio.get_running_loop()
        idle = self.config.llm_idle_timeout
        task = asyncio.current_task()
        assert task is not None
        last = loop.time()
        timed_out = False

        def watchdog() -> None:
            nonlocal handle, timed_out
            remaining = last + idle - loop.time()
            if remaining <= 0:
                timed_out = True
                task.cancel()
            else:
                handle = loop.call_later(remaining, watchdog)

        handle = loop.call_later(idle, watchdog)
        stream = self.streamer.stream(messages)
        try:
            async for chunk in stream:
                last = loop.time()
                if chunk:
                    reply.text += chunk
                    self._send_reply_frame(room, reply, protocol.ai_chunk_frame(reply.id, chunk))
        except asyncio.CancelledError:
            if timed_out and task.uncancel() == 0:
                raise LLMError(f"the model sent nothing for {idle:g} s", code="llm_timeout") from None
            raise
        finally:
            handle.cancel()
            await stream.aclose()  # type: ignore[attr-defined]

    async def _finish(self, room: Room, reply: ActiveReply, status: str) -> None:
        async with room.lock:
            await self.store.finish_reply(reply.id, reply.text, status)
            room.active = None
            if room.context is not None and reply.text:
                room.context.append(
                    StoredMessage(reply.id, room.session_id, self.config.ai_user, False,
                                  reply.text, status, None, "")
                )
            self._send_reply_frame(
                room, reply, protocol.ai_complete_frame(reply.id, reply.text, status=status)
            )
        logger.info(
            "reply %d in room %s %s (%d chars)", reply.id, room.session_id, status, len(reply.text)
        )

    # -- life cycle ----------------------------------------------------------

    async def close(self) -> None:
        """Refuse new messages, end in-flight replies (stored as ``interrupted``)."""
        self._closing = True
        workers = [room.worker for room in self.rooms.values() if room.worker is not None]
        for room in self.rooms.values():
            room.queue.clear()
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        for room in list(self.rooms.values()):
            for handle in room.typing.values():
                handle.cancel()
            room.typing.clear()

