"""Presence that scales with a class: joins and leaves coalesced per tick for ``?presence=batch``.

The hub without sockets (fake clock, memory sinks, a real store in memory):
n batch members joining one room cost O(n) frames, not O(n²); members that
did not opt in still get the seed's ``user_join``/``user_leave``, one per
change; and every member's list — its ``connection`` frame's ``online`` plus
the presence frames since, applied in order — is the room's list whenever the
member can look: at every tick and at every other frame it receives. Then the
opt-in over both transports.
"""

from __future__ import annotations

import json
import random

import httpx
from websockets.asyncio.client import connect

from chatkit.llm.echo import EchoStreamer
from chatkit.server import ChatServer

from .conftest import db_path  # noqa: F401  (fixture)
from .fakes import MemorySink, clock, make_hub, store  # noqa: F401  (fixtures)


async def join(hub, user: str, batch: bool, room: str = "r"):
    sink = MemorySink()
    member = await hub.join(room, user, sink, presence_batch=batch)
    return member, sink


def view(frames: list[dict]) -> set[str]:
    """What a client knows of who is online after these frames (the way a client applies them)."""
    online: set[str] = set()
    for frame in frames:
        kind = frame["type"]
        if kind == "connection":
            online = set(frame["online"])
        elif kind == "user_join":
            online.add(frame["username"])
        elif kind == "user_leave":
            online.discard(frame["username"])
        elif kind == "presence":
            online.update(frame["joined"])
            online.difference_update(frame["left"])
            assert frame["count"] == len(online)
    return online


async def test_n_batch_joins_cost_one_presence_frame_per_member_per_tick(make_hub, clock):
    hub = make_hub()
    n = 60
    sinks = [(await join(hub, f"u{i:02}", batch=True))[1] for i in range(n)]
    assert all(s.types() == ["connection"] for s in sinks)  # nothing until the tick
    clock.advance(hub.config.presence_tick)
    presence = [f for s in sinks for f in s.of("presence")]
    assert len(presence) == n  # O(n): one frame per member, not one per member per join
    everyone = [f"u{i:02}" for i in range(n)]
    assert all(f["joined"] == everyone and f["left"] == [] and f["count"] == n for f in presence)
    assert all(view(s.frames) == set(everyone) for s in sinks)
    clock.advance(10 * hub.config.presence_tick)  # a quiet room sends no more presence
    assert sum(len(s.of("presence")) for s in sinks) == n


async def test_members_that_did_not_opt_in_get_the_seed_frames_one_per_change(make_hub, clock):
    hub = make_hub()
    seed_member, seed_sink = await join(hub, "ann", batch=False)
    batch_member, batch_sink = await join(hub, "bob", batch=True)
    carl, _ = await join(hub, "carl", batch=False)
    dora, _ = await join(hub, "dora", batch=True)
    hub.leave(carl)
    assert seed_sink.of("user_join") == [
        {"type": "user_join", "username": n} for n in ("bob", "carl", "dora")
    ]
    assert seed_sink.of("user_leave") == [{"type": "user_leave", "username": "carl"}]
    assert seed_sink.of("presence") == [] and batch_sink.of("user_join") == []
    clock.advance(hub.config.presence_tick)
    assert batch_sink.of("presence") == [
        {"type": "presence", "joined": ["bob", "dora"], "left": ["carl"], "count": 3}
    ]
    assert view(seed_sink.frames) == view(batch_sink.frames) == {"ann", "bob", "dora"} == set(hub.online("r"))


async def test_a_leave_and_a_rejoin_in_one_tick_reach_a_member_that_joined_between(make_hub, clock):
    hub = make_hub()
    _, ann = await join(hub, "ann", batch=True)
    bob, _ = await join(hub, "bob", batch=True)
    clock.advance(hub.config.presence_tick)
    hub.leave(bob)
    _, carl = await join(hub, "carl", batch=True)  # its connection list has no bob
    assert carl.frames[0]["online"] == ["ann", "carl"]
    await join(hub, "bob", batch=True)  # bob is back in the same tick
    clock.advance(hub.config.presence_tick)
    assert view(carl.frames) == view(ann.frames) == {"ann", "bob", "carl"}


async def test_presence_comes_before_any_frame_of_a_user_who_just_joined(make_hub, clock):
    hub = make_hub(reply_queue=0)
    _, ann = await join(hub, "ann", batch=True)
    await join(hub, "bob", batch=True)
    await hub.post("r", "bob", "hi, I'm new")  # before the tick
    assert ann.types()[-2:] == ["presence", "message"]
    assert "bob" in view(ann.frames)


async def test_every_member_sees_the_rooms_list_whenever_it_can_look(make_hub, clock):
    """Random joins, second tabs, leaves, ticks and messages over both kinds of members."""
    rng = random.Random(1606)
    hub = make_hub(reply_queue=0)
    members: list = []  # (member, sink)
    sinks: list[MemorySink] = []
    names = [f"s{i}" for i in range(12)]
    for step in range(400):
        op = rng.random()
        if op < 0.45 or not members:
            member, sink = await join(hub, rng.choice(names), batch=rng.random() < 0.7)
            members.append((member, sink))
            sinks.append(sink)
        elif op < 0.75:
            member, _ = members.pop(rng.randrange(len(members)))
            hub.leave(member)
        elif op < 0.9:
            clock.advance(rng.choice([0.01, hub.config.presence_tick]))
        else:
            sender, _ = rng.choice(members)
            before = {id(s): len(s.received) for _, s in members}
            await hub.post("r", sender.user, f"message {step}")
            truth = set(hub.online("r"))
            for _, sink in members:  # at each message, the list is the room's list
                assert sink.of("message"), "every member got the message"
                upto = len(sink.received)
                assert len(sink.received) > before[id(sink)]
                assert view(sink.frames[:upto]) == truth, (step, sink.frames[-3:])
        clock.advance(0)
    clock.advance(hub.config.presence_tick)
    truth = set(hub.online("r"))
    for _, sink in members:  # and at every tick
        assert view(sink.frames) == truth


async def test_a_big_rooms_tick_grows_so_its_presence_frames_per_second_stay_bounded(make_hub, clock):
    hub = make_hub(presence_rate=100)  # 50 batch members: a 0.5 s tick instead of 0.1 s
    sinks = [(await join(hub, f"u{i:02}", batch=True))[1] for i in range(50)]
    clock.advance(0.1)  # the tick began with one member: 0.1 s
    assert [len(s.of("presence")) for s in sinks] == [1] * 50
    await join(hub, "late", batch=True)  # this tick begins with 51 members: 0.51 s
    clock.advance(0.1)
    assert [len(s.of("presence")) for s in sinks] == [1] * 50
    clock.advance(0.41)
    assert [len(s.of("presence")) for s in sinks] == [2] * 50
    assert all(
        s.of("presence")[1] == {"type": "presence", "joined": ["late"], "left": [], "count": 51}
        for s in sinks
    )


def partial_view(frames: list[dict]) -> tuple[set[str], int]:
    """A batch client's names and count when the ``connection`` frame lists only the first names."""
    online: set[str] = set()
    count = 0
    for frame in frames:
        if frame["type"] == "connection":
            online, count = set(frame["online"]), frame["online_count"]
        elif frame["type"] == "presence":
            online = (online | set(frame["joined"])) - set(frame["left"])
            count = frame["count"]
    return online, count


async def test_a_batch_members_connection_frame_lists_the_first_names_and_the_count(make_hub, clock):
    hub = make_hub(reply_queue=0, online_list_max=3)
    for name in ["eve", "bob", "dan", "ann", "carl"]:
        await join(hub, name, batch=True)
    await join(hub, "ann", batch=False)  # a second tab: no new name
    _, fay = await join(hub, "fay", batch=True)
    _, gus = await join(hub, "gus", batch=False)
    first = fay.frames[0]
    assert first["online"] == ["ann", "bob", "carl"] and first["online_count"] == 6  # not O(n) names
    assert gus.frames[0]["online"] == ["ann", "bob", "carl", "dan", "eve", "fay", "gus"]  # the seed's: all
    assert "online_count" not in gus.frames[0]
    rng = random.Random(16)
    members = []
    for step in range(200):  # the names a batch member knows stay a subset, its count exact
        if rng.random() < 0.6 or not members:
            members.append(await join(hub, f"s{rng.randrange(30)}", batch=True))
        else:
            hub.leave(members.pop(rng.randrange(len(members)))[0])
        if rng.random() < 0.2:
            await hub.post("r", "ann", f"at {step}")
            truth = set(hub.online("r"))
            for _, sink in members:
                names, count = partial_view(sink.frames)
                assert names <= truth and count == len(truth), step
        clock.advance(rng.choice([0.0, hub.config.presence_tick]))


async def test_the_transports_opt_in_with_a_query_parameter(db_path):
    async with ChatServer(port=0, http_port=0, db=db_path, streamer=EchoStreamer()) as server:
        await _opt_in(server)


async def _opt_in(server: ChatServer) -> None:
    ws_url = server.ws_url("opt")
    async with (
        connect(ws_url + "?user=ann&presence=batch", proxy=None) as ann,
        connect(ws_url + "?user=bob", proxy=None) as bob,
    ):
        assert json.loads(await ann.recv())["type"] == "connection"
        assert json.loads(await bob.recv())["type"] == "connection"
        async with connect(ws_url + "?user=carl", proxy=None) as carl:
            await carl.recv()
            assert json.loads(await bob.recv()) == {"type": "user_join", "username": "carl"}
            frame = json.loads(await ann.recv())
            while frame["type"] != "presence":
                frame = json.loads(await ann.recv())
            assert "carl" in frame["joined"]
        async with httpx.AsyncClient(trust_env=False) as http:
            bad = await http.get(f"http://127.0.0.1:{server.http_port}/sse/chat/opt/?presence=sometimes")
            assert bad.status_code == 400 and bad.json()["code"] == "bad_field"
            async with http.stream(
                "GET", f"http://127.0.0.1:{server.http_port}/sse/chat/opt/?user=dora&presence=batch"
            ) as stream:
                events = stream.aiter_lines()
                async for line in events:
                    if line.startswith("data:") and '"presence"' in line:
                        assert "dora" in json.loads(line[5:])["joined"]
                        break
