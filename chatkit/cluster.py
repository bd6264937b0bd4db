"""One room across several processes: the hub's side of the broker.

:class:`Cluster` joins a :class:`~chatkit.hub.Hub` to the other ``chatkit
serve`` processes through a :class:`~chatkit.broker.Broker`. Its rules:

- **One order per room, from the store.** Ids come from the shared store and
  strictly increase per room in commit order. Each room keeps ``last_id``, the
  newest id this process has delivered to its members. A remote row whose id
  is ``last_id + 1`` is delivered at once; any other id may hide a gap (ids
  are global across rooms, so the gap may be empty — only the store knows),
  and the room is filled with ``store.messages_after(last_id)`` first. Local
  writes do the same before their own fan-out. Remote events are applied one
  at a time per room, under the room's lock, like local writes.
- **Replies** (ephemeral chunks, then a completion) are tracked per room;
  a completion lost with an outage is found again by re-reading the reply's
  row (``poke`` and reconnects).
- **Reactions** are relayed as events; the receiving process sends the message's
  reactions as the store has them when it applies the event (events of two processes may
  arrive out of commit order: the last state sent is the newest). A reaction applied after
  this process already delivered newer rows of the room is *late* for members who got
  those rows first: its change is noted in the store as late as the room's ``last_id``
  here (``touch_reactions``), so a member resuming from any of those ids gets it. After a
  Redis outage (*poke*) the reactions changed since the previous poke are re-sent.
- **Presence** is the union of this process's members and every other
  process's (heartbeats with expiry in Redis, plus immediate events).
- **One reply at a time per room** across processes: the reply pipeline runs
  a reply only while holding the room's lease (:meth:`Cluster.lease`); a reply
  whose holder died (lease gone, no chunk for a lease period) is stored
  ``interrupted`` by a survivor, whose own queued replies then proceed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import protocol
from .broker import Broker, Lease
from .protocol import Attachment, StoredMessage
from .rooms import HubConfig, Room
from .sinks import Outgoing, fanout

__all__ = ["Cluster", "RemoteReply"]

logger = logging.getLogger("chatkit.cluster")


class ClusteredHub(Protocol):
    """What the cluster uses of :class:`~chatkit.hub.Hub` (which imports this module)."""

    store: Any
    config: HubConfig
    rooms: dict[str, Room]
    replies: Any

    def attach_cluster(self, cluster: Cluster) -> None: ...
    def stop(self, session_id: str, *, relay: bool = True) -> bool: ...


@dataclass(eq=False)
class RemoteReply:
    """A reply another process is streaming in a room, as far as this one has seen it."""

    id: int
    sender: str
    text: str = ""
    seen: float = field(default_factory=time.monotonic)
    """When it last showed a sign of life (its start or a chunk)."""
    started: bool = False
    """``False``: a row reserved with its prompt, seen in the store, not known to run yet."""


@dataclass(eq=False)
class _RoomView:
    remote: dict[str, set[str]] = field(default_factory=dict)
    """Other processes' members of the room, by node."""
    replies: dict[int, RemoteReply] = field(default_factory=dict)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    inbox: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    worker: asyncio.Task[None] | None = None
    reactions_mark: int | None = None
    """The room's ``last_id`` when this process last caught up with reactions (watch, poke)."""

    def users(self) -> set[str]:
        out: set[str] = set()
        for users in self.remote.values():
            out |= users
        return out


class Cluster:
    """This process's place in a cluster of ``chatkit serve`` processes (see the module doc)."""

    def __init__(self, hub: ClusteredHub, broker: Broker) -> None:
        self.hub = hub
        self.broker = broker
        self.store = hub.store
        self._views: dict[str, _RoomView] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        self._grace_until = 0.0
        """After a reconnect Redis may have lost every lease: others wait this long for holders to re-claim."""
        self._held: dict[str, Lease] = {}
        hub.attach_cluster(self)

    @property
    def node(self) -> str:
        return self.broker.node

    async def start(self) -> Cluster:
        await self.broker.start(self._on_event, self._on_reconnect)
        self._heartbeat = asyncio.create_task(self._beat(), name=f"chatkit-cluster-{self.node}")
        return self

    async def close(self) -> None:
        if self._heartbeat is not None:
            await _cancel(self._heartbeat)
        for room_id in list(self.hub.rooms):
            await self.broker.drop_presence(room_id, self.hub.rooms[room_id].online)
        await self.broker.flush()
        tasks = [v.worker for v in self._views.values() if v.worker is not None] + list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.broker.close()

    def _view(self, room_id: str) -> _RoomView:
        view = self._views.get(room_id)
        if view is None:
            view = self._views[room_id] = _RoomView()
        return view

    # -- called by the hub ---------------------------------------------------

    async def watch(self, room_id: str) -> None:
        """Receive the room's events from now on (before a join reads the store)."""
        new = room_id not in self._views
        view = self._view(room_id)
        await self.broker.subscribe(room_id)
        if view.reactions_mark is None:  # reactions relayed from now on; earlier ones are in the store
            view.reactions_mark = await self.store.last_id(room_id)
        if new:  # who is already online on other processes
            nodes = await self.broker.refresh_presence(room_id, [])
            if nodes is not None:
                nodes.pop(self.node, None)
                view.remote = nodes

    def users(self, room: Room) -> list[str]:
        """Who is online in the room: this process's members and every other process's."""
        return sorted(set(room.online) | self._view(room.session_id).users())

    def online_elsewhere(self, room_id: str, user: str) -> bool:
        return user in self._view(room_id).users()

    def streaming(self, room_id: str) -> tuple[int, str] | None:
        """The reply another process is streaming in the room, and its text so far (for a join's replay)."""
        started = [r for r in self._view(room_id).replies.values() if r.started]
        if not started:
            return None
        reply = max(started, key=lambda r: r.id)
        return reply.id, reply.text

    def snapshot(self, room_id: str, msg_id: int) -> str | None:
        """The text so far of a reply another process is streaming (for a joining member's replay)."""
        reply = self._view(room_id).replies.get(msg_id)
        return None if reply is None else reply.text

    def presence(self, room_id: str, user: str, online: bool) -> None:
        """A user's first connection here joined (or its last one left): tell the others now,
        and write the room's presence entry at once (a process joining later reads it)."""
        self.broker.publish(room_id, {"kind": "presence", "user": user, "online": online})
        if online:
            room = self.hub.rooms.get(room_id)
            if room is not None:
                self._spawn(self.broker.refresh_presence(room_id, list(room.online)))
        else:
            self._spawn(self.broker.drop_presence(room_id, [user]))

    def relay(self, room_id: str, frame: dict[str, Any], exclude_user: str | None = None) -> None:
        """Pass an ephemeral frame (typing, read receipt) to the room's members on other processes.
        A ``reaction`` frame is stored state, not ephemeral: it goes the way of :meth:`reacted`."""
        if frame.get("type") == "reaction":
            room = self.hub.rooms.get(room_id)
            if room is not None:
                self.reacted(room, frame)
                return
        self.broker.publish(room_id, {"kind": "frame", "frame": frame, "exclude": exclude_user})

    def stop(self, room_id: str) -> None:
        self.broker.publish(room_id, {"kind": "stop"})

    def reacted(self, room: Room, frame: dict[str, Any]) -> None:
        """A reaction toggled here (the store has it): the other processes send its state on.
        ``floor``: the newest id this process had delivered, at most the change's own position."""
        floor = room.last_id if room.last_id is not None else frame["message_id"]
        self.broker.publish(room.session_id, {"kind": "reaction", "frame": frame, "floor": floor})

    async def catch_up(self, room: Room, before: int) -> None:
        """Under the room's lock, before fanning out local row ``before``: deliver any
        row of the room committed by another process that this one has not delivered."""
        if room.last_id is None or before == room.last_id + 1 or before <= room.last_id:
            return
        self._deliver_rows(room, await self.store.messages_after(room.session_id, room.last_id), before)

    def posted(self, room: Room, msg: StoredMessage, reply: StoredMessage | None = None) -> None:
        """A row stored here; ``reply``: its reply's row, reserved in the same transaction."""
        event: dict[str, Any] = {"kind": "row", "row": _row_dict(msg)}
        if reply is not None:
            event["reply"] = _row_dict(reply)
            # whichever process answers it, this one shows it: tracked like a remote reply
            self._view(room.session_id).replies.setdefault(reply.id, RemoteReply(reply.id, ""))
        self.broker.publish(room.session_id, event)

    def reply_started(self, room: Room, row: StoredMessage, sender: str) -> None:
        self._view(room.session_id).replies.pop(row.id, None)  # it runs here now
        self.broker.publish(room.session_id, {"kind": "reply", "id": row.id, "sender": sender})

    def chunk(self, room: Room, reply_id: int, chunk: str, sender: str) -> None:
        self.broker.publish(
            room.session_id, {"kind": "chunk", "id": reply_id, "chunk": chunk, "sender": sender}
        )

    def completed(self, room: Room, reply_id: int, text: str, status: str, sender: str) -> None:
        self.broker.publish(
            room.session_id,
            {
                "kind": "complete",
                "id": reply_id,
                "text": text,
                "status": status,
                "sender": sender,
            },
        )

    # -- the reply lease -----------------------------------------------------

    @asynccontextmanager
    async def lease(self, room: Room) -> AsyncIterator[Lease]:
        """Hold the room's reply lease for one reply: wait for it, keep renewing it,
        give it back. If it is lost (another process took it over), the reply's
        task is cancelled with ``lease_lost`` set on the current task."""
        view = self._view(room.session_id)
        await self.broker.subscribe(room.session_id)
        while True:
            view.released.clear()
            if time.monotonic() >= self._grace_until:
                lease = await self.broker.acquire(room.session_id)
                if lease is not None:
                    if await self._take_over(room, view):
                        break
                    logger.info("room %s: a reply elsewhere is alive; waiting", room.session_id)
                    await self.broker.release(lease)  # a live reply elsewhere: wait for it
            try:
                async with asyncio.timeout(self.broker.config.heartbeat):
                    await view.released.wait()
            except TimeoutError:
                pass
        task = asyncio.current_task()
        assert task is not None
        task.lease_lost = False  # type: ignore[attr-defined]
        self._held[room.session_id] = lease
        renewer = asyncio.create_task(self._renew(lease, task), name=f"chatkit-lease-{room.session_id}")
        try:
            yield lease
        finally:
            # bookkeeping first: the awaits below may be interrupted by a cancellation
            self._held.pop(room.session_id, None)
            await _cancel(renewer)
            await self.broker.release(lease)

    async def _renew(self, lease: Lease, task: asyncio.Task[Any]) -> None:
        period = self.broker.config.lease_ttl / 3
        while True:
            await asyncio.sleep(period)
            ok = await self.broker.renew(lease)
            if ok is False and not await self.broker.reclaim(lease):
                logger.warning(
                    "room %s: lost the reply lease %s; stopping the reply", lease.room, lease.token
                )
                task.lease_lost = True  # type: ignore[attr-defined]
                task.cancel()
                return

    async def _take_over(self, room: Room, view: _RoomView) -> bool:
        """With the lease in hand: end replies of dead holders (``interrupted``).
        ``False`` when one of them still shows signs of life (Redis lost the lease, not the holder)."""
        quiet = self.broker.config.lease_ttl
        now = time.monotonic()
        # The replies tracked *before* the store is read: a prompt posted elsewhere meanwhile is
        # delivered (its reserved reply tracked) during the read, yet missing from its answer —
        # judged on that answer, its reply would be ended while its prompt waits, and the prompt's
        # claim would then reserve a second reply. What is tracked now was committed before the
        # read, so the read names every one of these whose prompt still waits.
        tracked = list(view.replies.values())
        queued = await self.store.queued_replies(room.session_id)  # reserved, waiting: not dead
        ended = [r for r in tracked if r.id not in queued]
        if any(r.started and now - r.seen < quiet for r in ended):
            return False
        for reply in ended:
            if await self.store.finish_reply(reply.id, reply.text, "interrupted"):
                logger.warning(
                    "room %s: reply %d of a dead process stored as interrupted", room.session_id, reply.id
                )
                self.completed(room, reply.id, reply.text, "interrupted", reply.sender)
            async with room.lock:
                await self._recheck(room, view)
        return True

    # -- remote events -------------------------------------------------------

    def _on_event(self, room_id: str, event: dict[str, Any]) -> None:
        view = self._view(room_id)
        kind = event.get("kind")
        if kind == "released":
            view.released.set()
            return
        if kind == "presence":
            self._on_presence(room_id, view, event)
            return
        if kind == "frame":
            room = self.hub.rooms.get(room_id)
            if room is not None:
                exclude = event.get("exclude")
                members = [m for m in room.members if m.user != exclude]
                fanout(members, Outgoing.encode(event["frame"]))
            return
        if kind == "stop":
            self.hub.stop(room_id, relay=False)
            return
        view.inbox.put_nowait(event)
        if view.worker is None:
            view.worker = asyncio.create_task(
                self._apply_all(room_id, view), name=f"chatkit-cluster-{room_id}"
            )

    async def _apply_all(self, room_id: str, view: _RoomView) -> None:
        try:
            while not view.inbox.empty():
                event = view.inbox.get_nowait()
                room = self.hub.rooms.get(room_id)
                if room is None:
                    self._track_without_room(view, event)
                    continue
                room.pending += 1
                try:
                    async with room.lock:
                        await self._apply(room, view, event)
                except Exception:
                    logger.exception("room %s: applying a remote %s failed", room_id, event.get("kind"))
                finally:
                    room.pending -= 1
        finally:
            view.worker = None

    def _track_without_room(self, view: _RoomView, event: dict[str, Any]) -> None:
        """No local member: only keep track of remote replies (for a later takeover)."""
        kind = event.get("kind")
        if kind == "reply":
            view.replies[event["id"]] = RemoteReply(event["id"], event["sender"], started=True)
        elif kind == "chunk" and event["id"] in view.replies:
            reply = view.replies[event["id"]]
            reply.text += event["chunk"]
            reply.seen = time.monotonic()
            reply.started = True
        elif kind == "complete":
            view.replies.pop(event["id"], None)

    async def _apply(self, room: Room, view: _RoomView, event: dict[str, Any]) -> None:
        if room.last_id is None:
            room.last_id = await self.store.last_id(room.session_id)
        kind = event["kind"]
        if kind == "row":
            row = _row_from(event["row"])
            reserved = _row_from(event["reply"]) if event.get("reply") else None
            if row.id == room.last_id + 1:
                self._deliver_row(room, row, reply_id=reserved.id if reserved else None)
                if reserved is not None:
                    if reserved.id == room.last_id + 1:
                        self._deliver_row(room, reserved, announce=False)  # its frame named it
                    else:
                        await self._fill(room, reserved.id)
            else:
                await self._fill(room, reserved.id if reserved else row.id)
        elif kind == "reply":
            reply = None
            if event["id"] == room.last_id + 1:
                reply = view.replies[event["id"]] = RemoteReply(event["id"], event["sender"])
                room.last_id = event["id"]
            else:
                await self._fill(room, event["id"])
                reply = view.replies.get(event["id"])  # reserved with its prompt, or just filled
            if reply is not None:  # (not found: it finished already, and was delivered so)
                reply.sender = event["sender"]
                reply.started = True
                reply.seen = time.monotonic()
        elif kind == "chunk":
            await self._fill(room, event["id"])
            reply = view.replies.get(event["id"])
            if reply is not None:
                reply.text += event["chunk"]
                reply.seen = time.monotonic()
                reply.started = True
                self._to_targets(room, reply.sender, protocol.ai_chunk_frame(reply.id, event["chunk"]))
        elif kind == "complete":
            await self._fill(room, event["id"])
            reply = view.replies.pop(event["id"], None)
            if reply is not None:
                self._complete(room, reply.sender, event["id"], event["text"], event["status"])
        elif kind == "reaction":
            await self._reaction(room, view, event)
        elif kind == "poke":
            await self._fill(room, None)
            await self._recheck(room, view)
            await self._reactions_since_mark(room, view)

    async def _reaction(self, room: Room, view: _RoomView, event: dict[str, Any]) -> None:
        """Another process toggled a reaction: send the message's reactions as stored now."""
        frame = event["frame"]
        message_id = frame["message_id"]
        counts = (await self.store.reactions([message_id])).get(message_id, [])
        fresh = protocol.reaction_frame(
            message_id, counts, user=frame.get("user"), emoji=frame.get("emoji"), added=frame.get("added")
        )
        room.fanout(Outgoing.encode(fresh))
        floor = event.get("floor")
        assert room.last_id is not None
        if not isinstance(floor, int) or floor < room.last_id:  # late here: members got newer rows first
            await self.store.touch_reactions(room.session_id, [message_id], room.last_id)

    async def _reactions_since_mark(self, room: Room, view: _RoomView) -> None:
        """After an outage (poke): re-send the reactions changed since the last catch-up;
        they are late for every member that got newer rows meanwhile."""
        assert room.last_id is not None
        mark, view.reactions_mark = view.reactions_mark, room.last_id
        if mark is None:
            return
        changed = await self.store.reactions_changed_since(room.session_id, mark)
        for message_id, counts in changed.items():
            room.fanout(Outgoing.encode(protocol.reaction_frame(message_id, counts)))
        if changed:
            await self.store.touch_reactions(room.session_id, list(changed), room.last_id)

    async def _fill(self, room: Room, upto: int | None) -> None:
        """Deliver every row of the room after ``last_id`` (up to at least ``upto``) from the store."""
        assert room.last_id is not None
        if upto is not None and upto <= room.last_id:
            return
        self._deliver_rows(room, await self.store.messages_after(room.session_id, room.last_id))

    def _deliver_rows(self, room: Room, rows: list[StoredMessage], before: int | None = None) -> None:
        """Deliver rows read from the store (those below ``before``), in order.

        A row from the store does not say which reply was reserved with it: a prompt whose
        next row in the room is its reserved reply (an AI row of the same transaction —
        same ``created_at`` — still ``streaming``) names it (``reply_id``) as the relayed
        frame would, so a member's resume cursor stays below that reply until it ends,
        whichever way it reaches the member afterwards (snapshot, chunks, or the row).
        """
        for i, msg in enumerate(rows):
            if before is not None and msg.id >= before:
                break
            nxt = rows[i + 1] if i + 1 < len(rows) else None
            reserved = nxt is not None and _reserved_with(msg, nxt)
            self._deliver_row(room, msg, reply_id=nxt.id if reserved and nxt is not None else None)

    async def _recheck(self, room: Room, view: _RoomView) -> None:
        """Re-read remote replies whose completion may have been lost (outage, takeover)."""
        for reply in list(view.replies.values()):
            row = await self.store.get(reply.id)
            if row is not None and row.status != "streaming":
                view.replies.pop(reply.id, None)
                self._complete(room, reply.sender, row.id, row.content, row.status)

    def _deliver_row(
        self, room: Room, msg: StoredMessage, *, reply_id: int | None = None, announce: bool = True
    ) -> None:
        """Hand one committed row to this process's members, in id order.

        ``reply_id``: the reply's row reserved with this message (named in its frame, as
        on the process that stored it). A ``streaming`` row is a reply not finished yet —
        reserved and waiting, or running elsewhere: tracked, and (``announce``, in a room
        whose replies everyone sees) sent as an empty snapshot, which keeps the members'
        resume cursors below it like a named ``reply_id`` does.
        """
        if room.last_id is not None and msg.id <= room.last_id:
            return
        room.last_id = msg.id
        view = self._view(room.session_id)
        room_wide = self.hub.config.ai_replies == "room"
        if msg.status == "streaming":
            if room.active is None or room.active.id != msg.id:
                view.replies.setdefault(msg.id, RemoteReply(msg.id, ""))
                if announce and room_wide:
                    room.fanout(Outgoing.encode(protocol.ai_chunk_frame(msg.id, "", snapshot=True)))
            return
        frame = msg.to_frame()
        if reply_id is not None and room_wide:
            frame["reply_id"] = reply_id
        room.fanout(Outgoing.encode(frame))
        room.remember(msg)

    def _complete(self, room: Room, sender: str, reply_id: int, text: str, status: str) -> None:
        self._to_targets(room, sender, protocol.ai_complete_frame(reply_id, text, status=status))
        if text:
            room.remember(
                StoredMessage(
                    reply_id, room.session_id, self.hub.config.ai_user, False, text, status, None, ""
                )
            )

    def _to_targets(self, room: Room, sender: str, frame: dict[str, Any]) -> None:
        if self.hub.config.ai_replies == "sender" and sender:
            members = [m for m in room.members if m.user == sender]
        else:
            members = list(room.members)
        fanout(members, Outgoing.encode(frame))

    # -- presence --------------------------------------------------------------

    def _on_presence(self, room_id: str, view: _RoomView, event: dict[str, Any]) -> None:
        node, user = event.get("node", ""), event.get("user", "")
        before = view.users()
        if event.get("online"):
            view.remote.setdefault(node, set()).add(user)
        else:
            view.remote.get(node, set()).discard(user)
        self._announce(room_id, before, view.users())

    def _announce(self, room_id: str, before: set[str], after: set[str]) -> None:
        room = self.hub.rooms.get(room_id)
        if room is None:
            return
        local = set(room.online)
        for user in sorted(after - before - local):
            room.fanout(Outgoing.encode(protocol.user_join_frame(user)))
        for user in sorted(before - after - local):
            room.fanout(Outgoing.encode(protocol.user_leave_frame(user)))

    async def _beat(self) -> None:
        """Every heartbeat: refresh presence (a dead process's members expire), reap dead replies."""
        while True:
            for room_id in list(self.hub.rooms):
                room = self.hub.rooms.get(room_id)
                if room is None:
                    continue
                try:
                    await self._beat_room(room_id, room)
                except Exception:  # the store or Redis failed: try again next beat
                    logger.exception("room %s: heartbeat failed", room_id)
            await asyncio.sleep(self.broker.config.heartbeat)

    async def _beat_room(self, room_id: str, room: Room) -> None:
        view = self._view(room_id)
        nodes = await self.broker.refresh_presence(room_id, list(room.online))
        if nodes is not None:
            nodes.pop(self.node, None)
            before = view.users()
            view.remote = nodes
            self._announce(room_id, before, view.users())
        if room.worker is None:
            self._held.pop(room_id, None)  # nothing of ours runs here
            if view.replies:
                await self._reap(room, view)
            # prompts waiting in the store with nobody on them (their process died)
            if await self.store.count_pending(room_id) and await self.broker.holder(room_id) is None:
                self.hub.replies.kick(room)

    async def _reap(self, room: Room, view: _RoomView) -> None:
        """A remote reply that went quiet: if its lease is gone, store it ``interrupted``."""
        if time.monotonic() < self._grace_until:
            return
        quiet = self.broker.config.lease_ttl
        if any(r.started and time.monotonic() - r.seen < quiet for r in view.replies.values()):
            return
        lease = await self.broker.acquire(room.session_id)
        if lease is None:
            return
        try:
            await self._take_over(room, view)
        finally:
            await self.broker.release(lease)

    async def _on_reconnect(self) -> None:
        """Redis is back (maybe empty): re-claim our leases, re-check every room from the store."""
        self._grace_until = time.monotonic() + self.broker.config.lease_ttl
        for lease in list(self._held.values()):
            await self.broker.reclaim(lease)
        for room_id in list(self.hub.rooms):
            self._on_event(room_id, {"kind": "poke"})

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


CANCEL_GRACE = 2.0
"""Seconds a cancelled task may take to unwind. redis-py cleans a connection up when a command is
cancelled, and on a connection broken by a Redis restart that can hang: nothing waits for it forever."""


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=CANCEL_GRACE)
    if not done:
        logger.warning(
            "task %s did not end %g s after being cancelled; left behind", task.get_name(), CANCEL_GRACE
        )


def _reserved_with(prompt: StoredMessage, row: StoredMessage) -> bool:
    """``row`` (the room's next row after ``prompt``) is the reply reserved with it, not ended yet."""
    return (
        prompt.is_user
        and not row.is_user
        and row.status == "streaming"
        and row.created_at == prompt.created_at
    )


def _row_dict(msg: StoredMessage) -> dict[str, Any]:
    return {
        "id": msg.id,
        "session_id": msg.session_id,
        "user": msg.user,
        "is_user": msg.is_user,
        "content": msg.content,
        "status": msg.status,
        "client_id": msg.client_id,
        "created_at": msg.created_at,
        "attachment": msg.attachment.to_object() if msg.attachment is not None else None,
    }


def _row_from(data: dict[str, Any]) -> StoredMessage:
    attachment = data.get("attachment")
    return StoredMessage(**{**data, "attachment": Attachment.from_object(attachment) if attachment else None})
