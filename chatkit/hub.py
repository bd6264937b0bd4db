"""Rooms, membership, presence, typing, receipts and rate limits — with no sockets.

The hub is the transport-independent heart of the server. A member of a room
is anything with a :class:`~chatkit.sinks.Sink`: the WebSocket server and the
SSE server each wrap their connections in one, so one room can hold both kinds
of members and every frame is encoded once and handed to every sink without
awaiting any of them (a slow member never slows the room).

Ordering: every write to the store for a room (a message, a reply's start and
end, a join's replay) happens under the room's lock, so frames leave in id
order and a joining member's replay and live traffic neither overlap nor leave
a gap. AI replies are the reply pipeline's job (:mod:`chatkit.replies`).
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from . import protocol
from .clock import Clock, LoopClock
from .errors import ChatkitError, ProtocolError
from .files import clean_name
from .llm.base import Streamer
from .protocol import StoredMessage
from .ratelimit import TokenBucket
from .replies import ReplyPipeline
from .rooms import BUSY_MESSAGE, HubConfig, Member, Room
from .sinks import Outgoing, Sink, fanout
from .storage import ChatStore

REPLAY_PAGE = 500
"""Messages per store read when a member resumes (``?after=``/``Last-Event-ID``)."""

if TYPE_CHECKING:
    from .cluster import Cluster

__all__ = ["BUSY_MESSAGE", "Hub", "HubConfig", "Member", "Posted", "Sink", "TokenBucket"]

logger = logging.getLogger("chatkit.hub")


@dataclass(frozen=True, slots=True)
class Posted:
    """What :meth:`Hub.post` did with a message."""

    message: StoredMessage
    """The stored message (for a re-sent ``client_id``: the one stored the first time)."""
    created: bool
    """``False`` when the ``client_id`` was already stored: nothing was broadcast or replied again."""
    queued: bool
    """``False`` when it gets no AI reply (the room's reply queue was full, or it was a re-send)."""
    asks_reply: bool = True
    """``False`` for a message that asks for no AI reply (an attachment without a caption)."""


class Hub:
    """All rooms of one server, their members and their AI replies.

    ``clock`` drives the typing timers, the rate limits and the replies' idle
    watchdog (default: the running event loop's); tests pass a fake one.
    """

    def __init__(
        self,
        store: ChatStore,
        streamer: Streamer,
        config: HubConfig | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.streamer = streamer
        self.config = config or HubConfig()
        self.clock: Clock = clock or LoopClock()
        self.rooms: dict[str, Room] = {}
        self.replies = ReplyPipeline(store, streamer, self.config, self.clock, self._maybe_drop)
        self.limits = protocol.Limits(
            max_text=self.config.max_text,
            messages_per_s=self.config.rate_limit,
            message_burst=self.config.rate_burst,
            frames_per_s=self.config.rate_limit * 10,
            frame_burst=self.config.rate_burst * 10,
        )
        """What one connection may send, stated in every ``connection`` frame."""
        self._closing = False
        self._guest = 0
        self.cluster: Cluster | None = None
        """Set by :class:`~chatkit.cluster.Cluster` when rooms span several processes."""

    def attach_cluster(self, cluster: Cluster) -> None:
        """Share this hub's rooms with other processes (see :mod:`chatkit.cluster`)."""
        self.cluster = cluster
        self.replies.cluster = cluster

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
            if room.presence_timer is not None:
                room.presence_timer.cancel()
            del self.rooms[room.session_id]

    def online(self, session_id: str) -> list[str]:
        room = self.rooms.get(session_id)
        return self._users(room) if room else []

    def _users(self, room: Room) -> list[str]:
        return self.cluster.users(room) if self.cluster is not None else room.users()

    def next_guest(self) -> str:
        """A name for a member that gave none: ``guest-1``, ``guest-2``, … (one series per hub)."""
        self._guest += 1
        return f"guest-{self._guest}"

    # -- membership ----------------------------------------------------------

    async def join(
        self,
        session_id: str,
        user: str,
        sink: Sink,
        *,
        after: int | None = None,
        presence_batch: bool = False,
    ) -> Member:
        """Add a member: send it ``connection``, replay what it missed, announce it.

        With ``after``, every stored message of the room with a larger id is sent
        before any live frame; a reply still streaming is sent as one ``ai_chunk``
        holding the text so far, and continues live. With ``presence_batch`` the
        member gets others' joins and leaves as ``presence`` frames, one per tick.

        A long replay does not hold the room: under the room's lock the member gets
        ``connection`` and the first page, and is registered with its live frames
        held back; the rest is read from the store page by page with the lock free
        (other members join and post meanwhile), written as the member's transport
        drains; then the held live frames follow, in one step with the hand-over.
        """
        if self.cluster is not None:
            await self.cluster.watch(session_id)  # before reading the store: no gap
        room = self._room(session_id)
        room.pending += 1
        replay: _Replay | None = None
        replayed = 0
        member = None
        try:
            async with room.lock:
                await self.store.ensure_session(session_id)
                reacted = {} if after is None else await self.store.reactions_changed_since(session_id, after)
                if room.last_id is None:
                    room.last_id = await self.store.last_id(session_id)
                last_id = room.last_id
                backlog: list[StoredMessage] = []
                if after is not None and after < last_id:
                    backlog = await self.store.messages_after(session_id, after, limit=REPLAY_PAGE)
                # From here to the end of the block nothing awaits: the first page and
                # the registration are one step as far as other tasks can see.
                member = Member(
                    room,
                    user,
                    sink,
                    self.message_bucket(),
                    TokenBucket(self.config.rate_limit * 10, self.config.rate_burst * 10, self.clock.time),
                    presence_batch,
                )
                first = room.online[user] == 0
                room.online[user] += 1
                if first:
                    bisect.insort(room.names, user)
                online = self._users(room) if self.cluster is not None else room.names
                limit = self.config.online_list_max
                if presence_batch:  # the first names and the count (O(1) bytes per join)
                    member.send(
                        protocol.connection_frame(
                            session_id,
                            user,
                            online[:limit] if limit > 0 else list(online),
                            self.config.welcome,
                            last_id,
                            self.limits,
                            online_count=len(online),
                        )
                    )
                else:  # the seed's frame: everyone
                    member.send(
                        protocol.connection_frame(
                            session_id, user, list(online), self.config.welcome, last_id, self.limits
                        )
                    )
                active = (room.active.id, room.active.text) if room.active else None
                if active is None and self.cluster is not None:
                    active = self.cluster.streaming(session_id)  # a reply streaming on another process
                replay = _Replay(sink, last_id, active[0] if active else None, active[1] if active else "")
                for msg in backlog:
                    replay.send(msg)
                replayed = len(backlog)
                if len(backlog) == REPLAY_PAGE and backlog[-1].id < last_id:
                    member.sink = replay.holding  # live frames wait until the replay is done
                else:
                    replay = None
                # Reactions that changed since `after` (full states: harmless if already seen), after
                # every replayed message: with a paged replay they are held with the live frames.
                for message_id, counts in reacted.items():
                    member.send(protocol.reaction_frame(message_id, counts))
                for typist in room.typing:
                    if typist != user:
                        member.send(protocol.typing_frame(typist, True))
                room.members.add(member)
                if not presence_batch:
                    room.presence_each.add(member)
                room.version += 1
                elsewhere = self.cluster is not None and self.cluster.online_elsewhere(session_id, user)
                if first and not elsewhere:
                    self._announce(room, user, True, exclude=member)
                if first and self.cluster is not None:
                    self.cluster.presence(session_id, user, True)
            if replay is not None:
                try:
                    replayed += await self._replay_rest(session_id, replay, backlog[-1].id)
                except BaseException:
                    self.leave(member)
                    raise
                # One step: the held live frames, then the member is live.
                member.sink = sink
                room.version += 1  # cached target lists hold the holding sink
                replay.release()
        finally:
            room.pending -= 1
            if member is None:  # the join failed (the store refused): leave no room behind
                self._maybe_drop(room)
        logger.info("join room=%s user=%s after=%s replayed=%d", session_id, user, after, replayed)
        return member

    async def _replay_rest(self, session_id: str, replay: _Replay, cursor: int) -> int:
        """Pages after ``cursor`` up to the replay's end, the room's lock free; bounded memory:
        one page in hand, and the next read only once the member's transport has drained."""
        sent = 0
        drain = getattr(replay.sink, "drain", None)
        while cursor < replay.upto:
            page = await self.store.messages_after(session_id, cursor, limit=REPLAY_PAGE)
            if not page:
                break
            for msg in page:
                if msg.id > replay.upto:
                    return sent
                replay.send(msg)
                sent += 1
            cursor = page[-1].id
            if drain is not None:
                await drain()
        return sent

    def leave(self, member: Member) -> None:
        """Remove a member; announce the user's departure when it was their last connection."""
        room = member.room
        if member not in room.members:
            return
        room.members.discard(member)
        room.presence_each.discard(member)
        room.version += 1
        room.online[member.user] -= 1
        if room.online[member.user] <= 0:
            del room.online[member.user]
            at = bisect.bisect_left(room.names, member.user)
            if at < len(room.names) and room.names[at] == member.user:
                del room.names[at]
            self._clear_typing(room, member.user, announce=True)
            if self.cluster is None or not self.cluster.online_elsewhere(room.session_id, member.user):
                self._announce(room, member.user, False)
            if self.cluster is not None:
                self.cluster.presence(room.session_id, member.user, False)
        logger.info("leave room=%s user=%s", room.session_id, member.user)
        self._maybe_drop(room)

    def _announce(self, room: Room, user: str, online: bool, exclude: Member | None = None) -> None:
        """A user came or went: the seed's frame at once to the members that want one per
        change; for the batch members, noted for the room's next ``presence`` frame."""
        if room.presence_each:
            frame = protocol.user_join_frame(user) if online else protocol.user_leave_frame(user)
            fanout(room.presence_each, Outgoing.encode(frame), exclude)
        if len(room.members) > len(room.presence_each):  # some member wants it batched
            room.presence_changes.pop(user, None)  # keep the changes in the order of their last one
            room.presence_changes[user] = online
            if room.presence_timer is None:
                batch = len(room.members) - len(room.presence_each)
                tick = max(self.config.presence_tick, batch / self.config.presence_rate)
                room.presence_timer = self.clock.call_later(tick, room.flush_presence)

    # -- client frames -------------------------------------------------------

    async def handle(self, member: Member, frame: protocol.ClientFrame) -> None:
        """Act on one decoded client frame; errors go back to the member as ``error`` frames
        (naming the refused message's ``client_id``, with ``retry_after_ms`` when it may pass later)."""
        client_id = frame.client_id if isinstance(frame, protocol.SendMessage) else None
        try:
            if not member.frames.take():
                raise ProtocolError(
                    "too many frames; slow down",
                    code="rate_limited",
                    retry_after_ms=member.frames.retry_after_ms(),
                )
            if isinstance(frame, protocol.SendMessage):
                self.check_rate(member.messages)
                posted = await self.post(
                    member.room.session_id,
                    member.user,
                    frame.text,
                    client_id=frame.client_id,
                    attachment=frame.attachment,
                )
                if not posted.created:  # a re-send: answer the sender with the stored message
                    member.send(posted.message.to_frame())
                elif not posted.queued and posted.asks_reply:
                    raise ProtocolError(BUSY_MESSAGE, code="busy")
            elif isinstance(frame, protocol.Typing):
                self.set_typing(member, frame.is_typing)
            elif isinstance(frame, protocol.ReadReceipt):
                await self.read(member, frame.message_id)
            elif isinstance(frame, protocol.Reaction):
                await self.react(member.room.session_id, member.user, frame.message_id, frame.emoji)
            elif isinstance(frame, protocol.Stop):
                self.stop(member.room.session_id)
            elif isinstance(frame, protocol.Ping):
                member.send(protocol.pong_frame())
        except ChatkitError as exc:
            logger.info(
                "refused frame room=%s user=%s code=%s: %s",
                member.room.session_id,
                member.user,
                exc.code,
                exc.message,
            )
            member.send(protocol.refusal_frame(exc, client_id))

    def refuse(self, member: Member, exc: ProtocolError) -> None:
        """Answer a frame that could not be decoded. It counts toward the frame rate
        limit like any other frame: past it, the answer is ``rate_limited``."""
        if not member.frames.take():
            refused = ProtocolError(
                "too many frames; slow down",
                code="rate_limited",
                retry_after_ms=member.frames.retry_after_ms(),
            )
            refused.client_id = exc.client_id
            exc = refused
        logger.info(
            "bad frame room=%s user=%s code=%s: %s",
            member.room.session_id,
            member.user,
            exc.code,
            exc.message,
        )
        member.send(protocol.refusal_frame(exc))

    def message_bucket(self) -> TokenBucket:
        """A fresh chat-message rate limiter (one per WebSocket member or SSE poster)."""
        return TokenBucket(self.config.rate_limit, self.config.rate_burst, self.clock.time)

    def check_rate(self, bucket: TokenBucket) -> None:
        """Take a token or raise ``ProtocolError("rate_limited")``."""
        if not bucket.take():
            raise ProtocolError(
                f"more than {self.config.rate_limit:g} messages per second; slow down",
                code="rate_limited",
                retry_after_ms=bucket.retry_after_ms(),
            )

    async def post(
        self,
        session_id: str,
        user: str,
        text: str,
        *,
        client_id: str | None = None,
        attachment: protocol.AttachmentRef | None = None,
    ) -> Posted:
        """Store a chat message, broadcast it (after COMMIT), and queue its AI reply.

        A re-sent ``client_id`` is neither broadcast nor replied to again
        (``created=False``); when the room's reply queue is full the message is
        stored and broadcast all the same, but gets no reply (``queued=False``).

        ``attachment`` names an uploaded file (``bad_attachment`` if there is none with
        that id); the message carries what it is (type, size, thumbnail). A file without
        a caption asks for no AI reply (``asks_reply=False``); with one, the model sees the
        caption only.
        """
        if self._closing:
            raise ProtocolError("the server is shutting down", code="shutting_down")
        attached = None
        if attachment is not None:
            attached = await self.store.file_info(attachment.id)
            if attached is None:
                raise ProtocolError(f"no uploaded file has the id {attachment.id}", code="bad_attachment")
            if attachment.name is not None:
                attached = replace(attached, name=clean_name(attachment.name, attached.type))
        asks_reply = bool(text.strip())
        room = self._room(session_id)
        room.pending += 1
        try:
            async with room.lock:
                # A message that will get a reply has the reply's row reserved in the same
                # transaction (status "streaming" until it is finished): its id comes right
                # after the message, a crash leaves it to be marked "interrupted" on the
                # next start, and the broadcast names it (``reply_id``) so that a client's
                # resume cursor stays below a reply it has not seen end.
                reserve = asks_reply and self.replies.accepts(room)
                # With a cluster, prompts wait for their reply in the store (any process answers),
                # their reply's row reserved with them all the same.
                wanted = await self.replies.admits(room) if self.cluster is not None and asks_reply else None
                stored = await self.store.append_with_reply(
                    session_id,
                    user,
                    text,
                    client_id=client_id,
                    reply_user=self.config.ai_user if reserve or wanted else None,
                    wants_reply=bool(wanted),
                    attachment=attached,
                )
                msg = stored.message
                if stored.created:
                    if self.cluster is not None:
                        await self.cluster.catch_up(room, before=msg.id)  # rows other processes wrote
                    room.last_id = stored.reply.id if stored.reply else msg.id
                    frame = msg.to_frame()
                    if stored.reply is not None and self.config.ai_replies == "room":
                        frame["reply_id"] = stored.reply.id
                    room.fanout(Outgoing.encode(frame))
                    room.remember(msg)
                    if self.cluster is not None:
                        self.cluster.posted(room, msg, stored.reply)
        finally:
            room.pending -= 1
        if not stored.created:
            self._maybe_drop(room)
            return Posted(msg, created=False, queued=False)
        self._clear_typing(room, user, announce=True)
        if not asks_reply:
            self._maybe_drop(room)
            return Posted(msg, created=True, queued=False, asks_reply=False)
        if not self.replies.enqueue(room, msg, stored.reply, wanted=wanted):
            if stored.reply is not None:  # the server began to close meanwhile
                await self.replies.abandon(room, stored.reply)
            self._maybe_drop(room)
            return Posted(msg, created=True, queued=False)
        return Posted(msg, created=True, queued=True)

    def set_typing(self, member: Member, is_typing: bool) -> None:
        room, user = member.room, member.user
        handle = room.typing.pop(user, None)
        if handle is not None:
            handle.cancel()
        if is_typing:
            room.typing[user] = self.clock.call_later(
                self.config.typing_timeout, self._clear_typing, room, user, True
            )
        if is_typing or handle is not None:
            room.fanout(Outgoing.encode(protocol.typing_frame(user, is_typing)), exclude=member)
            if self.cluster is not None:
                self.cluster.relay(room.session_id, protocol.typing_frame(user, is_typing), exclude_user=user)

    def _clear_typing(self, room: Room, user: str, announce: bool) -> None:
        handle = room.typing.pop(user, None)
        if handle is not None:
            handle.cancel()
            if announce:
                frame = Outgoing.encode(protocol.typing_frame(user, False))
                for member in list(room.members):
                    if member.user != user:
                        member.sink.send(frame)
                if self.cluster is not None:
                    self.cluster.relay(room.session_id, protocol.typing_frame(user, False), exclude_user=user)

    async def read(self, member: Member, message_id: int) -> None:
        room = member.room
        if await self.store.add_receipt(room.session_id, message_id, member.user):
            room.fanout(Outgoing.encode(protocol.read_receipt_frame(message_id, member.user)))
            if self.cluster is not None:
                self.cluster.relay(room.session_id, protocol.read_receipt_frame(message_id, member.user))

    async def delete(self, session_id: str, message_id: int, by: str) -> bool:
        """Tombstone a message (store first), then tell the room ``message_deleted``.

        The room's model context forgets it too. ``False`` when the room has no
        such message (or it was deleted already). Who may delete is the
        transport's decision (teachers only, with sign-in).
        """
        room = self._room(session_id)
        room.pending += 1
        try:
            async with room.lock:
                if not await self.store.delete_message(session_id, message_id):
                    return False
                if room.context is not None:
                    kept = [m for m in room.context if m.id != message_id]
                    room.context.clear()
                    room.context.extend(kept)
                room.fanout(Outgoing.encode(protocol.message_deleted_frame(message_id, by)))
                if self.cluster is not None:
                    self.cluster.relay(session_id, protocol.message_deleted_frame(message_id, by))
        finally:
            room.pending -= 1
            self._maybe_drop(room)
        logger.info("delete room=%s message=%d by=%s", session_id, message_id, by)
        return True

    async def react(self, session_id: str, user: str, message_id: int, emoji: str) -> dict:
        """Toggle ``user``'s ``emoji`` on a message of the room and broadcast the ``reaction``
        frame (the message's reactions now); returns that frame. Under the room's lock, like
        every store write of a room, so a joining member's replay and live reactions never cross."""
        room = self._room(session_id)
        room.pending += 1
        try:
            async with room.lock:
                toggled = await self.store.toggle_reaction(session_id, message_id, user, emoji)
                frame = protocol.reaction_frame(
                    message_id, toggled.reactions, user=user, emoji=emoji, added=toggled.added
                )
                room.fanout(Outgoing.encode(frame))
                if self.cluster is not None:  # ordered, and re-read from the store by the receivers
                    self.cluster.reacted(room, frame)
        finally:
            room.pending -= 1
            self._maybe_drop(room)
        return frame

    def stop(self, session_id: str, *, relay: bool = True) -> bool:
        """Stop the reply streaming in a room; ``False`` when none is (here: with a
        cluster, the process streaming it is asked to stop it)."""
        room = self.rooms.get(session_id)
        stopped = room is not None and self.replies.stop(room)
        if not stopped and relay and self.cluster is not None:
            self.cluster.stop(session_id)
        return stopped

    # -- life cycle ----------------------------------------------------------

    async def close(self) -> None:
        """Refuse new messages, end in-flight replies (stored as ``interrupted``)."""
        self._closing = True
        await self.replies.close()
        for room in list(self.rooms.values()):
            for handle in room.typing.values():
                handle.cancel()
            room.typing.clear()
            if room.presence_timer is not None:
                room.presence_timer.cancel()
                room.presence_timer = None


class _Holding(Sink):
    """Where a resuming member's live frames wait while its replay is written."""

    def __init__(self) -> None:
        self.frames: list[Outgoing] = []

    def send(self, frame: Outgoing) -> None:
        self.frames.append(frame)


class _Replay:
    """One member's replay: what was stored up to ``upto`` when it joined, then its held live frames.

    The reply streaming at the join (``active_id``) is replayed as the snapshot of its
    text at that moment (its later chunks are among the held frames), whatever the store
    says by the time its page is read. A reply that finished while the replay ran is
    replayed complete, and its held chunks and ``ai_complete`` are dropped: each message
    reaches the member once.
    """

    def __init__(self, sink: Sink, upto: int, active_id: int | None, active_text: str) -> None:
        self.sink = sink
        self.upto = upto
        self.active_id = active_id
        self.active_text = active_text
        self.holding = _Holding()
        self.final: set[int] = set()

    def send(self, msg: StoredMessage) -> None:
        if msg.id == self.active_id:
            self.sink.send(Outgoing.encode(protocol.ai_chunk_frame(msg.id, self.active_text, snapshot=True)))
        elif msg.status != "streaming":
            self.final.add(msg.id)
            self.sink.send(Outgoing.encode(msg.to_frame()))
        else:  # a reply waiting in the queue: an empty snapshot keeps the resume cursor below it
            self.sink.send(Outgoing.encode(protocol.ai_chunk_frame(msg.id, "", snapshot=True)))

    def release(self) -> None:
        for frame in self.holding.frames:
            if frame.id is None or frame.id not in self.final:
                self.sink.send(frame)
        self.holding.frames.clear()
