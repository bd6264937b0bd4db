"""The hub without sockets: rooms, presence, typing, receipts, rate limits, posting.

Members are :class:`~tests.fakes.MemorySink`\\ s, the model is scripted, the
clock is fake: timers fire when a test advances it, and every wait is for a
frame. The store is a real SQLite database in memory.
"""

from __future__ import annotations

from chatkit import protocol
from chatkit.hub import Posted
from chatkit.ratelimit import TokenBucket
from chatkit.sinks import Outgoing, fanout

from .fakes import BatchSink, Gate, MemorySink, ScriptedStreamer, clock, join, make_hub, store  # noqa: F401  (fixtures)

# -- rooms and presence ------------------------------------------------------


async def test_join_sends_connection_and_announces_a_user_once(make_hub):
    hub = make_hub()
    ann, ann_sink = await join(hub, "ann")
    assert ann_sink.frames == [
        protocol.connection_frame("r", "ann", ["ann"], hub.config.welcome, 0, hub.limits)
    ]
    bob, bob_sink = await join(hub, "bob")
    assert bob_sink.frames[0]["online"] == ["ann", "bob"]
    assert ann_sink.of("user_join") == [{"type": "user_join", "username": "bob"}]
    assert bob_sink.of("user_join") == []  # not to the joiner itself

    bob2, bob2_sink = await join(hub, "bob")  # a second tab: bob is already online
    assert len(ann_sink.of("user_join")) == 1 and bob_sink.of("user_join") == []
    assert hub.online("r") == ["ann", "bob"]

    hub.leave(bob2)
    assert ann_sink.of("user_leave") == []  # bob is still online in his first tab
    hub.leave(bob)
    assert ann_sink.of("user_leave") == [{"type": "user_leave", "username": "bob"}]
    assert hub.online("r") == ["ann"]
    hub.leave(bob)  # leaving twice is harmless
    assert len(ann_sink.of("user_leave")) == 1


async def test_an_empty_room_is_dropped_and_rooms_are_apart(make_hub):
    hub = make_hub()
    ann, ann_sink = await join(hub, "ann", room="a")
    bob, bob_sink = await join(hub, "bob", room="b")
    assert ann_sink.of("user_join") == [] and bob_sink.frames[0]["online"] == ["bob"]
    hub.leave(ann)
    assert "a" not in hub.rooms and "b" in hub.rooms
    assert bob_sink.of("user_leave") == []


async def test_join_after_replays_what_was_missed_in_order(make_hub, store):
    hub = make_hub()
    ids = [(await store.append("r", "old", f"m{i}")).message.id for i in range(4)]
    _, sink = await join(hub, "ann", after=ids[1])
    assert sink.types() == ["connection", "message", "message"]
    assert sink.frames[0]["last_id"] == ids[-1]
    assert [f["id"] for f in sink.of("message")] == ids[2:]
    _, fresh = await join(hub, "bob")
    assert fresh.types() == ["connection"]  # no ``after``: no replay


async def test_join_mid_reply_gets_the_text_so_far_as_one_snapshot(make_hub):
    gate = Gate()
    hub = make_hub(ScriptedStreamer(["Hel", "lo", gate, "!"]))
    ann, ann_sink = await join(hub, "ann")
    posted = await hub.post("r", "ann", "hi")
    await gate.wait_reached()
    reply_id = ann_sink.of("ai_chunk")[0]["id"]
    _, late = await join(hub, "bob", after=posted.message.id - 1)
    assert [f["type"] for f in late.frames] == ["connection", "message", "ai_chunk"]
    assert late.frames[2] == {"type": "ai_chunk", "chunk": "Hello", "id": reply_id, "snapshot": True}
    gate.open()
    done = await late.until("ai_complete")
    assert done["message"] == "Hello!" and [f["chunk"] for f in late.of("ai_chunk")[1:]] == ["!"]


# -- typing ------------------------------------------------------------------


async def test_typing_goes_to_the_others_and_expires_on_the_clock(make_hub, clock):
    hub = make_hub(typing_timeout=5.0)
    ann, ann_sink = await join(hub, "ann")
    bob, bob_sink = await join(hub, "bob")
    await hub.handle(ann, protocol.Typing(True))
    assert bob_sink.of("typing") == [protocol.typing_frame("ann", True)]
    assert ann_sink.of("typing") == []
    clock.advance(4.9)
    assert len(bob_sink.of("typing")) == 1
    clock.advance(0.1)
    assert bob_sink.of("typing")[-1] == protocol.typing_frame("ann", False)
    assert clock.pending == 0


async def test_typing_refreshed_keeps_going_and_stopping_is_announced_once(make_hub, clock):
    hub = make_hub(typing_timeout=5.0)
    ann, _ = await join(hub, "ann")
    bob, bob_sink = await join(hub, "bob")
    hub.set_typing(ann, True)
    clock.advance(3)
    hub.set_typing(ann, True)  # refreshed: the old timer is cancelled
    clock.advance(3)
    assert [f["is_typing"] for f in bob_sink.of("typing")] == [True, True]
    hub.set_typing(ann, False)
    hub.set_typing(ann, False)  # not typing any more: nothing to announce
    clock.advance(10)
    assert [f["is_typing"] for f in bob_sink.of("typing")] == [True, True, False]
    assert clock.pending == 0


async def test_a_joiner_sees_who_is_typing_and_a_message_ends_typing(make_hub):
    hub = make_hub()
    ann, _ = await join(hub, "ann")
    hub.set_typing(ann, True)
    bob, bob_sink = await join(hub, "bob")
    assert bob_sink.types()[:2] == ["connection", "typing"]
    await hub.post("r", "ann", "done typing")
    assert [(f["type"], f.get("is_typing")) for f in bob_sink.frames[1:4]] == [
        ("typing", True),
        ("message", None),
        ("typing", False),
    ]


async def test_leaving_while_typing_announces_the_stop(make_hub, clock):
    hub = make_hub()
    ann, _ = await join(hub, "ann")
    bob, bob_sink = await join(hub, "bob")
    hub.set_typing(ann, True)
    hub.leave(ann)
    assert [f["type"] for f in bob_sink.frames[-2:]] == ["typing", "user_leave"]
    assert bob_sink.frames[-2]["is_typing"] is False
    assert clock.pending == 0


# -- receipts ----------------------------------------------------------------


async def test_read_receipts_are_announced_once(make_hub, store):
    hub = make_hub()
    ann, ann_sink = await join(hub, "ann")
    bob, bob_sink = await join(hub, "bob")
    msg = (await store.append("r", "ann", "read me")).message
    await hub.handle(bob, protocol.ReadReceipt(msg.id))
    await hub.handle(bob, protocol.ReadReceipt(msg.id))
    expected = [protocol.read_receipt_frame(msg.id, "bob")]
    assert ann_sink.of("read_receipt") == expected and bob_sink.of("read_receipt") == expected
    assert await store.receipts(msg.id) == ["bob"]


async def test_a_receipt_for_another_rooms_message_is_an_error(make_hub, store):
    hub = make_hub()
    bob, bob_sink = await join(hub, "bob")
    elsewhere = (await store.append("other", "ann", "not yours")).message
    await hub.handle(bob, protocol.ReadReceipt(elsewhere.id))
    assert [f["code"] for f in bob_sink.of("error")] == ["unknown_message"]
    assert bob_sink.of("read_receipt") == []


# -- rate limits -------------------------------------------------------------


def test_token_bucket_on_a_fake_clock(clock):
    bucket = TokenBucket(rate=2, burst=3, clock=clock.time)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    clock.advance(0.4)  # 0.8 tokens: not yet
    assert bucket.take() is False
    clock.advance(0.1)  # 1.0
    assert bucket.take() is True and bucket.take() is False
    clock.advance(100)  # saved up to the burst, no more
    assert sum(bucket.take() for _ in range(10)) == 3


async def test_messages_are_rate_limited_per_member_and_refill_with_time(make_hub, clock, store):
    hub = make_hub(rate_limit=1.0, rate_burst=2, reply_queue=0)
    ann, ann_sink = await join(hub, "ann")
    bob, bob_sink = await join(hub, "bob")
    for i in range(3):
        await hub.handle(ann, protocol.SendMessage(f"m{i}"))
    assert [f["code"] for f in ann_sink.of("error")] == ["busy", "busy", "rate_limited"]
    await hub.handle(bob, protocol.SendMessage("bob has his own bucket"))
    assert bob_sink.of("error")[-1]["code"] == "busy"  # stored, just no reply (queue 0)
    clock.advance(1.0)
    await hub.handle(ann, protocol.SendMessage("after a second"))
    assert ann_sink.of("error")[-1]["code"] == "busy"
    assert await store.count("r") == 4


async def test_any_frame_flood_is_rate_limited(make_hub):
    hub = make_hub(rate_limit=1.0, rate_burst=2)  # frames: 10x the message limits
    ann, sink = await join(hub, "ann")
    for _ in range(25):
        await hub.handle(ann, protocol.Ping())
    assert len(sink.of("pong")) == 20
    assert [f["code"] for f in sink.of("error")] == ["rate_limited"] * 5


# -- posting -----------------------------------------------------------------


async def test_post_returns_a_named_result_and_broadcasts_after_commit(make_hub, store):
    gate = Gate()
    hub = make_hub(ScriptedStreamer([gate]), reply_queue=1)
    ann, ann_sink = await join(hub, "ann")
    first = await hub.post("r", "ann", "one", client_id="c1")
    assert first == Posted(first.message, created=True, queued=True)
    assert ann_sink.of("message")[0]["id"] == first.message.id
    assert await store.get(first.message.id) == first.message  # on disk when broadcast

    again = await hub.post("r", "ann", "one (re-sent)", client_id="c1")
    assert again == Posted(first.message, created=False, queued=False)
    assert len(ann_sink.of("message")) == 1  # a re-send is not broadcast again

    await gate.wait_reached()  # the first reply streams; the queue holds one more
    second = await hub.post("r", "ann", "two")
    third = await hub.post("r", "ann", "three")
    assert (second.queued, third.created, third.queued) == (True, True, False)
    assert [f["message"] for f in ann_sink.of("message")] == ["one", "two", "three"]
    gate.open()


async def test_a_resent_message_is_answered_to_the_sender_only(make_hub):
    hub = make_hub()
    ann, ann_sink = await join(hub, "ann")
    bob, bob_sink = await join(hub, "bob")
    await hub.handle(ann, protocol.SendMessage("hi", client_id="c1"))
    await ann_sink.until("ai_complete")
    bob_before = len(bob_sink.received)
    await hub.handle(ann, protocol.SendMessage("hi", client_id="c1"))
    assert ann_sink.of("message")[-1]["client_id"] == "c1" and len(ann_sink.of("message")) == 2
    assert len(bob_sink.received) == bob_before


async def test_a_closing_hub_refuses_messages(make_hub):
    hub = make_hub()
    ann, sink = await join(hub, "ann")
    await hub.close()
    await hub.handle(ann, protocol.SendMessage("too late"))
    assert sink.of("error")[-1]["code"] == "shutting_down"


async def test_guest_names_are_one_series_per_hub(make_hub):
    hub = make_hub()
    assert [hub.next_guest(), hub.next_guest()] == ["guest-1", "guest-2"]
    assert make_hub().next_guest() == "guest-1"


# -- fan-out -----------------------------------------------------------------


async def test_fanout_encodes_once_and_batches_per_sink_class(make_hub):
    BatchSink.batches = []
    hub = make_hub()
    plain = [await join(hub, f"p{i}") for i in range(2)]
    batched = []
    for i in range(3):
        sink = BatchSink()
        batched.append((await hub.join("r", f"b{i}", sink), sink))
    BatchSink.batches.clear()
    await hub.post("r", "p0", "to everyone")
    msg = [(n, f) for n, f in BatchSink.batches if f.type == "message"]
    assert [n for n, _ in msg] == [3]  # one call for the three batch sinks
    frame = msg[0][1]
    assert frame.id is not None and frame.text == protocol.encode(plain[1][1].of("message")[0])
    for _, sink in plain + batched:  # every sink got the very same encoded object
        assert any(f is frame for f in sink.received)


def test_outgoing_carries_type_and_id():
    chunk = Outgoing.encode(protocol.ai_chunk_frame(7, "x"))
    assert (chunk.type, chunk.id) == ("ai_chunk", 7)
    assert Outgoing.encode(protocol.typing_frame("ann", True)).id is None
    assert (
        Outgoing.encode(protocol.connection_frame("r", "a", [], "hi", 5)).id is None
    )  # last_id is not an id
    sinks = [MemorySink(), MemorySink()]

    class Holder:
        def __init__(self, sink: MemorySink) -> None:
            self.sink = sink

    holders = [Holder(s) for s in sinks]
    fanout(holders, chunk, exclude=holders[0])
    assert sinks[0].received == [] and sinks[1].received == [chunk]
