"""The reply pipeline: one AI reply at a time per room, streamed to the room.

A room's prompts wait in its bounded queue; one worker task per busy room
(owned here, cancelled by :meth:`ReplyPipeline.close`) takes them in order,
builds the model's context, runs the **pump** (each delta becomes an
``ai_chunk`` frame, encoded once and handed to every target sink) under an
idle **watchdog**, and **finishes** the reply: its text and status are stored,
then ``ai_complete`` goes out.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import operator
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import protocol
from .clock import Clock, LoopClock, Timer
from .errors import ChatkitError, LLMError
from .llm.base import ChatMessage, Streamer
from .protocol import StoredMessage
from .rooms import ActiveReply, HubConfig, Room
from .sinks import Groups, Outgoing, group_sinks, send_groups
from .storage import ChatStore

if TYPE_CHECKING:
    from .cluster import Cluster

__all__ = ["ReplyPipeline"]

logger = logging.getLogger("chatkit.hub")
_BY_ID = operator.attrgetter("id")


class _Done(Exception):
    """No prompt is waiting: the cluster worker ends."""


class ReplyPipeline:
    """Queues, runs, stops and finishes the AI replies of every room of a hub."""

    def __init__(
        self,
        store: ChatStore,
        streamer: Streamer,
        config: HubConfig,
        clock: Clock,
        on_idle: Callable[[Room], None],
    ) -> None:
        self.store = store
        self.streamer = streamer
        self.config = config
        self.clock = clock
        self._on_idle = on_idle
        """Called when a room's worker ends (the hub drops the room if nothing else uses it)."""
        self._workers: set[asyncio.Task[None]] = set()
        self._worker_rooms: dict[asyncio.Task[None], Room] = {}
        self.closing = False
        self.cluster: Cluster | None = None
        """With a cluster, a reply runs only while this process holds the room's lease."""

    def starts_now(self, room: Room) -> bool:
        """Whether a prompt posted now would be replied to at once (its reply row can be
        reserved in the same transaction as the prompt)."""
        return (
            room.worker is None
            and not room.queue
            and not self.closing
            and self.config.reply_queue > 0
            and self.cluster is None
        )

    def accepts(self, room: Room) -> bool:
        """Whether a prompt posted now gets a reply from this process's queue (then its
        reply's row is reserved in the same transaction as the prompt); ``False`` when the
        room's queue is full, and with a cluster (the store's queue decides, see :meth:`admits`)."""
        return self.cluster is None and not self.closing and len(room.queue) < self.config.reply_queue

    async def abandon(self, room: Room, reserved: StoredMessage, status: str = "interrupted") -> None:
        """End a reserved reply that will never run (the server is closing, or the store
        failed before it started), so its row is not left ``streaming``."""
        try:
            await self.store.finish_reply(reserved.id, "", status)
        except ChatkitError as exc:
            logger.error(
                "reply %d in room %s stays 'streaming' until the next start: %s",
                reserved.id,
                room.session_id,
                exc,
            )

    def enqueue(
        self, room: Room, prompt: StoredMessage, reserved: StoredMessage | None, *, wanted: bool | None = None
    ) -> bool:
        """Queue a reply to ``prompt``; ``False`` when the room's queue is full (no reply).

        With a cluster the queue is in the store (``wanted``: the prompt was stored
        waiting for a reply, see :meth:`admits`); this only makes sure a worker runs.
        """
        if self.cluster is not None:
            if wanted:
                self.kick(room)
            return bool(wanted)
        if self.closing or len(room.queue) >= self.config.reply_queue:
            logger.warning("room %s: reply queue full, message %d gets no reply", room.session_id, prompt.id)
            return False
        room.queue.append((prompt, reserved))
        if room.worker is None:
            room.worker = asyncio.create_task(self._worker(room), name=f"chatkit-replies-{room.session_id}")
            self._workers.add(room.worker)
            self._worker_rooms[room.worker] = room
            room.worker.add_done_callback(self._worker_done)
        return True

    async def admits(self, room: Room) -> bool:
        """(Cluster) whether a new prompt fits in the room's queue of prompts waiting in the store."""
        return await self.store.count_pending(room.session_id) < self.config.reply_queue

    def kick(self, room: Room) -> None:
        """(Cluster) run a worker for the prompts waiting in the store, unless one runs here."""
        if room.worker is None and not self.closing:
            room.worker = asyncio.create_task(
                self._cluster_worker(room), name=f"chatkit-replies-{room.session_id}"
            )
            self._workers.add(room.worker)
            room.worker.add_done_callback(self._workers.discard)

    async def _cluster_worker(self, room: Room) -> None:
        """Answer the room's waiting prompts, oldest first, whichever process stored them —
        one reply per lease, so the processes of a cluster take turns."""
        assert self.cluster is not None
        try:
            while not self.closing:
                try:
                    await self._answer_one(room)
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if getattr(task, "lease_lost", False) and task is not None and task.uncancel() == 0:
                        continue  # the lease was taken over between replies: queue for it again
                    raise
                except _Done:
                    break
                except Exception:  # the store or Redis failed: log, wait a beat, try again
                    logger.exception("room %s: the reply worker failed; retrying", room.session_id)
                    await asyncio.sleep(self.cluster.broker.config.heartbeat)
        finally:
            room.worker = None
            self._on_idle(room)

    async def _answer_one(self, room: Room) -> None:
        """Under the room's lease: claim the oldest waiting prompt and answer it (``_Done`` if none)."""
        assert self.cluster is not None
        async with self.cluster.lease(room):
            waiting = await self.store.pending(room.session_id, 1)
            if not waiting:
                raise _Done
            prompt = waiting[0]
            logger.info("room %s: answering prompt %d", room.session_id, prompt.id)
            async with room.lock:
                row = await self.store.claim_reply(room.session_id, prompt.id, self.config.ai_user)
                if row is None:
                    return  # another claim won: look again
                await self.cluster.catch_up(room, before=row.id)  # the prompt, if stored elsewhere
                self.cluster.reply_started(room, row, prompt.user)
                # (the row was reserved with the prompt: newer rows may have been delivered since)
                room.last_id = row.id if room.last_id is None else max(room.last_id, row.id)
            await self._reply(room, prompt, row)

    def stop(self, room: Room) -> bool:
        """Stop the reply streaming in ``room``; ``False`` when none is."""
        active = room.active
        if active is None or active.task is None or active.stopped:
            return False
        active.stopped = True
        active.task.cancel()
        return True

    async def close(self) -> None:
        """Drop queued prompts, cancel the workers; partial replies, and the replies
        reserved for the dropped prompts, are stored ``interrupted``."""
        self.closing = True
        workers = list(self._workers)
        dropped = [
            (room, reserved)
            for room in list(self._worker_rooms.values())
            for _, reserved in room.queue
            if reserved is not None
        ]
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        for room, reserved in dropped:
            await self.abandon(room, reserved)

    # -- the worker ----------------------------------------------------------

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        """Log a worker's crash when it happens (``close`` only gathers them at the end)."""
        self._workers.discard(task)
        self._worker_rooms.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s crashed", task.get_name(), exc_info=task.exception())

    async def _worker(self, room: Room) -> None:
        try:
            while room.queue and not self.closing:
                prompt, reserved = room.queue.popleft()
                try:
                    await self._reply(room, prompt, reserved)
                except ChatkitError as exc:  # the store failed: this reply is lost, not the worker
                    logger.error("reply to message %d in room %s failed: %s", prompt.id, room.session_id, exc)
                    room.fanout(Outgoing.encode(protocol.refusal_frame(exc)))
                    if reserved is not None and (room.active is None or room.active.id != reserved.id):
                        await self.abandon(room, reserved, "error")  # it failed before it started
                    room.active = None
        finally:
            if self.closing:
                room.queue.clear()
            room.worker = None
            self._on_idle(room)

    def _targets(self, room: Room, reply: ActiveReply) -> Groups:
        """Who gets the reply's frames (grouped sinks), recomputed only when membership changed."""
        if reply.targets_version != room.version:
            if self.config.ai_replies == "sender":
                reply.targets = [m for m in room.members if m.user == reply.sender]
                reply.groups = group_sinks(reply.targets)
            else:
                reply.groups = room.groups()  # the room's, shared by every reply until a join or leave
            reply.targets_version = room.version
        return reply.groups

    def _send(self, room: Room, reply: ActiveReply, frame: dict[str, Any]) -> None:
        if room.presence_changes:  # presence first, as in every fan-out
            room.flush_presence()
        send_groups(self._targets(room, reply), Outgoing.encode(frame))

    async def context(self, room: Room, prompt: StoredMessage) -> list[ChatMessage]:
        """System prompt + the room's last messages up to and including ``prompt``.

        The recent messages are kept in memory per room; they are loaded once,
        under the room lock so that no message stored meanwhile is missed.
        """
        if self.cluster is not None:
            # A prompt stored by another process may be older than the room's recent
            # messages here: read its context from the store, up to the prompt.
            page = await self.store.history(
                room.session_id, before=prompt.id + 1, limit=self.config.context_messages
            )
            recent: Any = [m for m in page if m.content]
        else:
            if room.context is None:
                async with room.lock:
                    if room.context is None:
                        history = await self.store.recent(room.session_id, self.config.context_messages)
                        room.context = collections.deque(history, maxlen=self.config.context_messages)
            recent = room.context
        messages: list[ChatMessage] = [{"role": "system", "content": self.config.system_prompt}]
        for msg in sorted([m for m in recent if m.id <= prompt.id and m.content], key=_BY_ID):
            messages.append({"role": "user" if msg.is_user else "assistant", "content": msg.content})
        return messages

    async def _reply(self, room: Room, prompt: StoredMessage, row: StoredMessage | None) -> None:
        messages = await self.context(room, prompt)
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
            elif getattr(task, "lease_lost", False) and task is not None and task.uncancel() == 0:
                status = "interrupted"  # another process took the room's lease over
            else:
                await self._finish(room, reply, "interrupted")  # the hub is closing
                raise
        except LLMError as exc:
            status = "error"
            logger.warning("reply %d in room %s failed: %s", reply.id, room.session_id, exc)
            self._send(room, reply, protocol.error_frame(exc.code, exc.message))
        except Exception:
            status = "error"
            logger.exception("reply %d in room %s crashed", reply.id, room.session_id)
            self._send(room, reply, protocol.error_frame("llm_error", "the tutor failed to answer"))
        await self._finish(room, reply, status)

    async def _pump(self, room: Room, reply: ActiveReply, messages: list[ChatMessage]) -> None:
        """Forward the streamer's deltas to the room; cut the stream when it stalls.

        The idle timeout is one watchdog timer per reply that re-arms itself,
        not a timeout per chunk: the hot path only notes the time of each chunk.
        """
        clock = self.clock
        now = asyncio.get_running_loop().time if isinstance(clock, LoopClock) else clock.time
        idle = self.config.llm_idle_timeout
        task = asyncio.current_task()
        assert task is not None
        last = clock.time()
        timed_out = False
        handle: Timer

        def watchdog() -> None:
            nonlocal handle, timed_out
            remaining = last + idle - clock.time()
            if remaining <= 0:
                timed_out = True
                task.cancel()
            else:
                handle = clock.call_later(remaining, watchdog)

        def send(chunk: str) -> None:
            # The hot path of a reply, once per chunk: _send's steps inlined (the encoded
            # frame built directly, the reply's target groups reused while membership holds).
            reply.text += chunk
            if room.presence_changes:  # presence first, as in every fan-out
                room.flush_presence()
            groups = reply.groups if reply.targets_version == room.version else self._targets(room, reply)
            frame = Outgoing("ai_chunk", reply.id, protocol.encode_ai_chunk(reply.id, chunk))
            for cls, sinks in groups:
                cls.send_many(sinks, frame)
            if self.cluster is not None:
                self.cluster.chunk(room, reply.id, chunk, reply.sender)

        # Coalescing: the deltas a stream yields in one go (one read from the model's
        # socket can hold several) leave as one frame, at the end of this loop iteration.
        pending: list[str] = []
        flush: asyncio.Handle | None = None

        def flush_pending() -> None:
            nonlocal flush
            flush = None
            if pending:
                text = "".join(pending)
                pending.clear()
                send(text)

        coalesce = self.config.coalesce_chunks
        loop = asyncio.get_running_loop()
        handle = clock.call_later(idle, watchdog)
        stream = self.streamer.stream(messages)
        try:
            async for chunk in stream:
                last = now()
                if not chunk:
                    continue
                if coalesce:
                    pending.append(chunk)
                    if flush is None:
                        flush = loop.call_soon(flush_pending)
                else:
                    send(chunk)
        except asyncio.CancelledError:
            if timed_out and task.uncancel() == 0:
                raise LLMError(f"the model sent nothing for {idle:g} s", code="llm_timeout") from None
            raise
        finally:
            handle.cancel()
            if flush is not None:  # what the stream gave goes out before anything that ends the reply
                flush.cancel()
                flush_pending()
            await stream.aclose()  # type: ignore[attr-defined]

    async def _finish(self, room: Room, reply: ActiveReply, status: str) -> None:
        async with room.lock:
            try:
                stored = await self.store.finish_reply(reply.id, reply.text, status)
            except ChatkitError as exc:
                # The store refused the text (a full disk): say so, and store at least the
                # end (no text, status "error"), so the row is never left "streaming".
                logger.error("storing reply %d in room %s failed: %s", reply.id, room.session_id, exc)
                self._send(room, reply, protocol.refusal_frame(exc))
                status = "error"
                try:
                    stored = await self.store.finish_reply(reply.id, "", status)
                except ChatkitError as again:
                    stored = None
                    logger.error(
                        "reply %d in room %s stays 'streaming' until the next start: %s",
                        reply.id,
                        room.session_id,
                        again,
                    )
            if stored is False and (row := await self.store.get(reply.id)) is not None:
                reply.text, status = row.content, row.status  # fenced: a survivor finished it
            elif self.cluster is not None:
                self.cluster.completed(room, reply.id, reply.text, status, reply.sender)
            room.active = None
            if room.context is not None and reply.text:
                room.context.append(
                    StoredMessage(
                        reply.id, room.session_id, self.config.ai_user, False, reply.text, status, None, ""
                    )
                )
            self._send(room, reply, protocol.ai_complete_frame(reply.id, reply.text, status=status))
        logger.info("reply %d in room %s %s (%d chars)", reply.id, room.session_id, status, len(reply.text))
