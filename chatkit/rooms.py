"""A room's state and its configuration: members, presence, typing, reply state.

Plain data, shared by the hub (membership, presence, typing) and the reply
pipeline (:mod:`chatkit.replies`); the behaviour lives in those two modules.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field
from typing import Any, Literal

from . import protocol
from .clock import Timer
from .llm.base import DEFAULT_SYSTEM_PROMPT
from .protocol import StoredMessage
from .ratelimit import TokenBucket
from .sinks import Groups, Outgoing, Sink, fanout, group_sinks, send_groups
from .store import AI_USER

__all__ = ["BUSY_MESSAGE", "ActiveReply", "HubConfig", "Member", "Room"]

BUSY_MESSAGE = "the tutor is busy; your message is saved but gets no reply"


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
    coalesce_chunks: bool = False
    """Merge the deltas a stream yields within one event-loop iteration into one ``ai_chunk``
    frame (a late loop reading a burst from the model sends one frame, not one per delta)."""
    presence_tick: float = 0.1
    """Seconds a room collects joins and leaves for its ``?presence=batch`` members
    before sending them one ``presence`` frame (so n joins cost O(n) frames, not O(n²))."""
    presence_rate: float = 2000.0
    """Presence frames per second one room sends at most: in a room of more batch members than
    ``presence_rate × presence_tick`` the tick grows to members / rate (1 s for 2,000), so a
    storm of joins costs the room at most this many frames per second, whatever its size."""
    online_list_max: int = 100
    """Names in the ``connection`` frame of a ``?presence=batch`` member: the first this many by
    name, with ``online_count`` for all (0: no limit). A join then costs O(1) bytes, not O(n):
    n students joining one room no longer encode n²/2 names."""


@dataclass(eq=False)
class Member:
    """One connection's place in a room."""

    room: Room
    user: str
    sink: Sink
    messages: TokenBucket
    frames: TokenBucket
    presence_batch: bool = False
    """Gets joins and leaves as ``presence`` frames, one per tick, instead of one frame each."""

    def send(self, frame: dict[str, Any]) -> None:
        self.sink.send(Outgoing.encode(frame))


@dataclass(eq=False)
class ActiveReply:
    """The reply a room is streaming now."""

    id: int
    sender: str
    text: str = ""
    task: asyncio.Task[Any] | None = None
    stopped: bool = False
    targets: list[Member] = field(default_factory=list)
    groups: Groups = field(default_factory=list)
    targets_version: int = -1


@dataclass(eq=False)
class Room:
    session_id: str
    members: set[Member] = field(default_factory=set)
    online: collections.Counter[str] = field(default_factory=collections.Counter)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pending: int = 0
    """Tasks inside a hub call for this room: it is not dropped while they run."""
    typing: dict[str, Timer] = field(default_factory=dict)
    queue: collections.deque[tuple[StoredMessage, StoredMessage | None]] = field(
        default_factory=collections.deque
    )
    """Prompts waiting for a reply, with the reply's row when it was reserved with the prompt."""
    worker: asyncio.Task[None] | None = None
    active: ActiveReply | None = None
    context: collections.deque[StoredMessage] | None = None
    """The last messages of the room, kept for the model's context (loaded once from the store)."""
    last_id: int | None = None
    """The newest message id of the room (loaded once, then kept up to date under the lock)."""
    version: int = 0
    """Bumped on every join and leave: cached member lists know when they are stale."""
    presence_each: set[Member] = field(default_factory=set)
    """Members that get the seed's ``user_join``/``user_leave``, one frame per change, at once."""
    presence_changes: dict[str, bool] = field(default_factory=dict)
    """Changes not yet sent to the batch members: user → online now (the last change only)."""
    presence_timer: Timer | None = None
    _groups: Groups = field(default_factory=list)
    _groups_version: int = -1
    """Every member's sink grouped by class, as of ``version`` (a fan-out to all reuses it)."""
    names: list[str] = field(default_factory=list)
    """The users of ``online``, sorted (kept so by the hub on each first join and last leave)."""

    def users(self) -> list[str]:
        return list(self.names)

    def fanout(self, frame: Outgoing, exclude: Member | None = None) -> None:
        if self.presence_changes:  # presence first: who sent this is on every member's list
            self.flush_presence()
        if exclude is not None:
            fanout(list(self.members), frame, exclude)
            return
        send_groups(self.groups(), frame)

    def groups(self) -> Groups:
        """Every member's sink grouped by class, regrouped only when membership changed."""
        if self._groups_version != self.version:
            self._groups = group_sinks(self.members)
            self._groups_version = self.version
        return self._groups

    def flush_presence(self) -> None:
        """Send the collected joins and leaves to the batch members as one ``presence`` frame.

        Every change is a user's state *now* (last change wins), so the frame is right
        for every batch member: one that joined during the tick already has some of it
        in its ``connection`` list, and applying it again changes nothing.
        """
        if self.presence_timer is not None:
            self.presence_timer.cancel()
            self.presence_timer = None
        changes, self.presence_changes = self.presence_changes, {}
        if not changes or len(self.members) == len(self.presence_each):
            return
        frame = Outgoing.encode(
            protocol.presence_frame(
                [user for user, online in changes.items() if online],
                [user for user, online in changes.items() if not online],
                len(self.online),
            )
        )
        fanout([m for m in self.members if m.presence_batch], frame)

    def remember(self, msg: StoredMessage) -> None:
        if self.context is not None and msg.content:
            self.context.append(msg)

    def idle(self) -> bool:
        return not self.members and self.worker is None and self.pending == 0
