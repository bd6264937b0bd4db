"""Big rooms: a long replay (``?after=``/``Last-Event-ID``) streams from the store in pages
without holding the room, and stays exact under concurrent traffic.

The hub without sockets, a real SQLite store in memory. Ordering and frames are
asserted, never timing: another member's whole join happens while the big replay
is still being written, which cannot happen while the replay holds the room's lock.
"""

from __future__ import annotations

import asyncio

from chatkit.hub import REPLAY_PAGE
from chatkit.sinks import Outgoing

from .conftest import TIMEOUT
from .fakes import Gate, MemorySink, ScriptedStreamer, clock, join, make_hub, store  # noqa: F401  (fixtures)

ROOM_SIZE = 20_000


class Tripwire(MemorySink):
    """A memory sink that sets ``tripped`` when its ``at``-th frame arrives."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at
        self.tripped = asyncio.Event()

    def send(self, frame: Outgoing) -> None:
        super().send(frame)
        if len(self.received) == self.at:
            self.tripped.set()


async def fill(store, room: str, n: int) -> list[int]:
    ids: list[int] = []
    for start in range(0, n, 1000):  # concurrent appends commit as a few group-commit batches
        batch = await asyncio.gather(
            *(store.append(room, "old", f"m{i}") for i in range(start, min(n, start + 1000)))
        )
        ids += [appended.message.id for appended in batch]
    return ids


async def test_a_join_is_not_blocked_behind_a_20000_message_replay(make_hub, store):
    hub = make_hub()
    ids = await fill(store, "big", ROOM_SIZE)
    sink = Tripwire(at=2 * REPLAY_PAGE)
    replaying = asyncio.create_task(hub.join("big", "ann", sink, after=0))
    async with asyncio.timeout(TIMEOUT):
        await sink.tripped.wait()  # the replay is under way, past its first page
    _, other = await join(hub, "bob", room="big")  # a whole join, while ann's replay runs
    assert other.types() == ["connection"]
    assert not replaying.done()
    assert len(sink.received) < ROOM_SIZE + 1
    member = await asyncio.wait_for(replaying, TIMEOUT)
    assert [f["id"] for f in sink.of("message")] == ids
    assert sink.types()[0] == "connection" and sink.frames[0]["last_id"] == ids[-1]
    assert sink.of("user_join") == [{"type": "user_join", "username": "bob"}]  # held, then delivered
    assert member in hub.rooms["big"].members and member.sink is sink


async def test_a_long_replay_stays_exact_under_concurrent_traffic(make_hub, store):
    gate = Gate()
    streamer = ScriptedStreamer(["streaming ", gate, "at the join"])
    hub = make_hub(streamer=streamer)
    await fill(store, "big", 3 * REPLAY_PAGE + 7)
    poster, poster_sink = await join(hub, "poster", room="big")
    await hub.post("big", "poster", "a question before the join")
    async with asyncio.timeout(TIMEOUT):
        await gate.reached.wait()  # its reply is streaming: "streaming " so far
    sink = Tripwire(at=REPLAY_PAGE + 10)
    replaying = asyncio.create_task(hub.join("big", "ann", sink, after=0))
    async with asyncio.timeout(TIMEOUT):
        await sink.tripped.wait()
    # Traffic while the replay runs: the streaming reply goes on and ends, new messages get replies.
    gate.open()
    for i in range(3):
        await hub.post("big", "poster", f"during the replay {i}")
    await asyncio.wait_for(replaying, TIMEOUT)
    await poster_sink.until("ai_complete", message="during the replay 2")  # every reply has ended
    await sink.until("ai_complete", message="during the replay 2")

    stored = [m for m in await store.messages_after("big", 0)]
    finals = [f["id"] for f in sink.frames if f["type"] in ("message", "ai_complete")]
    assert sorted(finals) == [m.id for m in stored]  # each message exactly once
    upto = sink.frames[0]["last_id"]
    replayed = [i for i in finals if i <= upto]
    assert replayed == sorted(replayed)  # the replay in id order (live replies may end out of order)
    first_reply = next(m for m in stored if not m.is_user)
    shown = [f for f in sink.frames if f.get("id") == first_reply.id]
    assert shown[0] == {"type": "ai_chunk", "id": first_reply.id, "chunk": "streaming ", "snapshot": True}
    assert [f["chunk"] for f in shown[1:-1]] == ["at the join"]
    assert shown[-1]["message"] == "streaming at the join"
