"""The reply pipeline without sockets: streaming, context, queueing, stop, errors, the watchdog.

A scripted model and a fake clock: the idle watchdog fires when the test
advances the clock, never by waiting.
"""

from __future__ import annotations

import asyncio

from chatkit import protocol

from .conftest import TIMEOUT
from .fakes import Gate, ScriptedStreamer, clock, join, llm_error, make_hub, store  # noqa: F401  (fixtures)


async def test_a_reply_streams_to_the_room_and_is_stored(make_hub, store):
    hub = make_hub(ScriptedStreamer(["Hel", "", "lo"]))
    ann, ann_sink = await join(hub, "ann")
    bob, bob_sink = await join(hub, "bob")
    posted = await hub.post("r", "ann", "hi")
    done = await bob_sink.until("ai_complete")
    assert [f["chunk"] for f in bob_sink.of("ai_chunk")] == ["Hel", "lo"]  # empty deltas are skipped
    assert done == protocol.ai_complete_frame(done["id"], "Hello")
    assert done["id"] > posted.message.id
    assert [f["id"] for f in bob_sink.of("ai_chunk")] == [done["id"]] * 2
    assert ann_sink.frames[2:] == bob_sink.frames[1:]  # ann's second frame: bob's user_join
    stored = await store.get(done["id"])
    assert (stored.content, stored.status, stored.is_user) == ("Hello", "complete", False)


async def test_sender_only_replies(make_hub):
    hub = make_hub(ScriptedStreamer(["a", "b"]), ai_replies="sender")
    ann, ann_sink = await join(hub, "ann")
    ann2, ann2_sink = await join(hub, "ann")  # ann's second tab gets it too
    bob, bob_sink = await join(hub, "bob")
    await hub.post("r", "ann", "hi")
    await ann_sink.until("ai_complete")
    await ann2_sink.until("ai_complete")
    await hub.handle(bob, protocol.Ping())  # bob's frames so far, then an ordering point
    assert bob_sink.types()[-1] == "pong"
    assert [t for t in bob_sink.types() if t.startswith("ai_")] == []
    assert len(bob_sink.of("message")) == 1  # the prompt itself goes to everyone


async def test_context_is_the_system_prompt_and_the_messages_up_to_the_prompt(make_hub, store):
    await store.append("r", "old", "earlier")
    streamer = ScriptedStreamer(["first answer"], ["second answer"])
    hub = make_hub(streamer, context_messages=3, system_prompt="be brief")
    ann, sink = await join(hub, "ann")
    await hub.post("r", "ann", "q1")
    await sink.until("ai_complete")
    await hub.post("r", "ann", "q2")
    await sink.until("ai_complete", message="second answer")
    assert streamer.calls[0] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "earlier"},
        {"role": "user", "content": "q1"},
    ]
    assert streamer.calls[1] == [  # the last 3 messages, the reply included
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "q2"},
    ]


async def test_queued_prompts_are_answered_in_order_one_at_a_time(make_hub):
    gate = Gate()
    streamer = ScriptedStreamer(["A", gate, "a"], ["B"], ["C"])
    hub = make_hub(streamer, reply_queue=2)
    ann, sink = await join(hub, "ann")
    await hub.post("r", "ann", "1")
    await gate.wait_reached()
    await hub.post("r", "ann", "2")
    await hub.post("r", "ann", "3")
    assert len(streamer.calls) == 1  # one at a time
    gate.open()
    await sink.until("ai_complete", message="C")
    assert [f["message"] for f in sink.of("ai_complete")] == ["Aa", "B", "C"]
    for kind in ("message", "ai_complete"):
        ids = [f["id"] for f in sink.of(kind)]
        assert ids == sorted(ids)
    assert [m[-1]["content"] for m in streamer.calls] == ["1", "2", "3"]


async def test_stop_cancels_the_stream_and_stores_the_partial_reply(make_hub, store):
    gate = Gate()
    streamer = ScriptedStreamer(["part", gate, "never"])
    hub = make_hub(streamer)
    ann, sink = await join(hub, "ann")
    await hub.post("r", "ann", "hi")
    await gate.wait_reached()
    await hub.handle(ann, protocol.Stop())
    done = await sink.until("ai_complete")
    assert (done["status"], done["cancelled"], done["message"]) == ("cancelled", True, "part")
    assert (await store.get(done["id"])).status == "cancelled"
    assert streamer.closed == 1  # the model's stream was closed
    assert hub.stop("r") is False  # nothing streams any more


async def test_a_model_error_is_an_error_frame_and_status(make_hub, store):
    hub = make_hub(ScriptedStreamer(["so far", llm_error("model down")]))
    ann, sink = await join(hub, "ann")
    await hub.post("r", "ann", "hi")
    done = await sink.until("ai_complete")
    assert sink.of("error") == [protocol.error_frame("llm_error", "model down")]
    assert (done["status"], done["message"]) == ("error", "so far")
    assert (await store.get(done["id"])).status == "error"


async def test_a_crashing_model_is_contained(make_hub, caplog):
    hub = make_hub(ScriptedStreamer([RuntimeError("bug")], ["fine"]))
    ann, sink = await join(hub, "ann")
    await hub.post("r", "ann", "one")
    await sink.until("ai_complete", status="error")
    assert sink.of("error")[0]["code"] == "llm_error"
    assert "crashed" in caplog.text
    await hub.post("r", "ann", "two")  # the room goes on
    assert (await sink.until("ai_complete", message="fine"))["status"] == "complete"


async def test_the_watchdog_cuts_a_stalled_stream_on_the_clock(make_hub, clock, store):
    stall, stall_again = Gate(), Gate()
    hub = make_hub(ScriptedStreamer(["start", stall, "more", stall_again]), llm_idle_timeout=30.0)
    ann, sink = await join(hub, "ann")
    await hub.post("r", "ann", "hi")
    await stall.wait_reached()
    clock.advance(29.9)  # not yet: the stream is still alive…
    seen = len(sink.received)
    stall.open()
    assert await sink.next(seen) == protocol.ai_chunk_frame(
        sink.of("ai_chunk")[0]["id"], "more"
    )  # …and goes on
    await stall_again.wait_reached()
    clock.advance(29.9)
    seen = len(sink.received)
    clock.advance(0.1)  # 30 s since "more"
    assert (await sink.next(seen))["code"] == "llm_timeout"
    done = await sink.until("ai_complete")
    assert (done["status"], done["message"]) == ("error", "startmore")
    assert (await store.get(done["id"])).status == "error"
    assert clock.pending == 0


async def test_the_watchdog_rearms_while_chunks_arrive(make_hub, clock):
    first, second, third = Gate(), Gate(), Gate()
    hub = make_hub(ScriptedStreamer([first, "a", second, "b", third]), llm_idle_timeout=10.0)
    ann, sink = await join(hub, "ann")
    await hub.post("r", "ann", "hi")
    await first.wait_reached()
    clock.advance(6)
    first.open()
    await sink.until("ai_chunk", chunk="a")  # a chunk at t=6
    await second.wait_reached()
    clock.advance(6)  # t=12: the first deadline (t=10) passed, but the stream was idle for 6 s only
    seen = len(sink.received)
    second.open()
    assert (await sink.next(seen))["chunk"] == "b"  # still streaming: the watchdog re-armed
    await third.wait_reached()
    clock.advance(10)  # idle for 10 s since "b"
    assert (await sink.next(seen + 1))["code"] == "llm_timeout"
    done = await sink.until("ai_complete")
    assert done["message"] == "ab"


async def test_close_stores_the_streaming_reply_as_interrupted(make_hub, store):
    gate = Gate()
    hub = make_hub(ScriptedStreamer(["half", gate]), reply_queue=4)
    ann, sink = await join(hub, "ann")
    await hub.post("r", "ann", "one")
    await gate.wait_reached()
    await hub.post("r", "ann", "two (queued)")
    await hub.close()
    done = sink.of("ai_complete")
    assert [(f["status"], f["message"]) for f in done] == [("interrupted", "half")]
    assert (await store.get(done[0]["id"])).status == "interrupted"
    assert "r" not in hub.rooms or hub.rooms["r"].worker is None


async def test_no_reply_task_is_left_behind(make_hub):
    hub = make_hub(ScriptedStreamer(["x"]))
    ann, sink = await join(hub, "ann")
    await hub.post("r", "ann", "hi")
    await sink.until("ai_complete")
    worker = hub.rooms["r"].worker
    if worker is not None:  # finishing: the worker ends right after ai_complete
        await asyncio.wait_for(worker, TIMEOUT)
    assert hub.rooms["r"].worker is None


async def test_deltas_yielded_in_one_go_leave_as_one_frame_when_coalescing(make_hub, store):
    """``coalesce_chunks``: what a stream yields without waiting is one ``ai_chunk``; a member
    joining between two flushes gets the text so far once (the snapshot), then only what follows."""
    gate, end = Gate(), Gate()
    hub = make_hub(ScriptedStreamer(["Hel", "", "lo", gate, " wor", "ld", end, "!"]), coalesce_chunks=True)
    ann, ann_sink = await join(hub, "ann")
    posted = await hub.post("r", "ann", "hi")
    await gate.wait_reached()
    first = await ann_sink.until("ai_chunk")
    assert first["chunk"] == "Hello"
    gate.open()
    await end.wait_reached()
    _, late = await join(hub, "bob", after=posted.message.id)  # the pending " world" not sent yet, or sent
    end.open()
    done = await ann_sink.until("ai_complete")
    assert [f["chunk"] for f in ann_sink.of("ai_chunk")] == ["Hello", " world", "!"]
    assert done["message"] == "Hello world!"
    await late.until("ai_complete")
    assert "".join(f["chunk"] for f in late.of("ai_chunk")) == "Hello world!"  # nothing twice
    assert (await store.get(done["id"])).content == "Hello world!"
