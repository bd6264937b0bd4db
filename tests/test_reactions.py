"""Emoji reactions: decoding, toggling, broadcast to two clients, history, resume after a restart."""

from __future__ import annotations

import httpx
import pytest

from chatkit import protocol
from chatkit.errors import ProtocolError
from chatkit.storage import open_store
from chatkit.store import MAX_REACTIONS_PER_USER

from .conftest import peer


@pytest.mark.parametrize(
    "raw, expected",
    [
        ('{"type": "reaction", "messageId": 4, "emoji": "👍"}', protocol.Reaction(4, "👍")),
        ('{"type": "reaction", "message_id": 9, "emoji": "🎉"}', protocol.Reaction(9, "🎉")),
        ('{"type": "reaction", "messageId": 2, "emoji": "👍🏽"}', protocol.Reaction(2, "👍🏽")),
        ('{"type": "reaction", "messageId": 2, "emoji": "👨‍👩‍👧‍👦"}', protocol.Reaction(2, "👨‍👩‍👧‍👦")),
        ('{"type": "reaction", "messageId": 2, "emoji": "🇰🇷"}', protocol.Reaction(2, "🇰🇷")),
    ],
)
def test_reaction_frames_decode(raw, expected):
    frame = protocol.decode(raw)
    assert frame == expected
    assert protocol.decode(frame.encode()) == frame


@pytest.mark.parametrize(
    "raw, code",
    [
        ('{"type": "reaction", "emoji": "👍"}', "missing_field"),
        ('{"type": "reaction", "messageId": 4}', "missing_field"),
        ('{"type": "reaction", "messageId": true, "emoji": "👍"}', "bad_field"),
        ('{"type": "reaction", "messageId": 2.5, "emoji": "👍"}', "bad_field"),
        ('{"type": "reaction", "messageId": -1, "emoji": "👍"}', "bad_field"),
        ('{"type": "reaction", "messageId": 4, "emoji": ""}', "bad_field"),
        ('{"type": "reaction", "messageId": 4, "emoji": "x"}', "bad_field"),
        ('{"type": "reaction", "messageId": 4, "emoji": "👍👍"}', "bad_field"),
        ('{"type": "reaction", "messageId": 4, "emoji": "<img src=x onerror=alert(1)>"}', "bad_field"),
        ('{"type": "reaction", "messageId": 4, "emoji": 1}', "bad_field"),
    ],
)
def test_bad_reaction_frames_are_refused_with_a_code(raw, code):
    with pytest.raises(ProtocolError) as info:
        protocol.decode(raw)
    assert info.value.code == code


async def test_store_toggles_and_notes_changes(store_url):
    store = await open_store(store_url)
    try:
        m1 = (await store.append("r", "ann", "one")).message
        m2 = (await store.append("r", "ann", "two")).message
        first = await store.toggle_reaction("r", m1.id, "bob", "👍")
        second = await store.toggle_reaction("r", m1.id, "cat", "👍")
        third = await store.toggle_reaction("r", m1.id, "cat", "🎉")
        assert (first.added, second.added, third.added) == (True, True, True)
        assert [r.to_object() for r in third.reactions] == [
            {"emoji": "👍", "count": 2, "users": ["bob", "cat"]},
            {"emoji": "🎉", "count": 1, "users": ["cat"]},
        ]
        again = await store.toggle_reaction("r", m1.id, "bob", "👍")  # the same frame again removes it
        assert again.added is False and [r.to_object() for r in again.reactions][0] == {
            "emoji": "👍",
            "count": 1,
            "users": ["cat"],
        }
        # m1's reactions changed while the room's newest id was m2: a client at m2 is sent them, at m2+1 not
        assert list(await store.reactions_changed_since("r", m2.id)) == [m1.id]
        assert await store.reactions_changed_since("r", m2.id + 1) == {}
        with pytest.raises(Exception) as info:
            await store.toggle_reaction("other-room", m1.id, "bob", "👍")
        assert info.value.code == "unknown_message"
        for i, e in enumerate("😀😁😂🤣😃😄😅😆😉😊😋😎😍😘🥰😗😙😚🙂🤗🤩"):
            if i < MAX_REACTIONS_PER_USER:
                await store.toggle_reaction("r", m2.id, "eve", e)
            else:
                with pytest.raises(Exception) as info:
                    await store.toggle_reaction("r", m2.id, "eve", e)
                assert info.value.code == "too_many_reactions"
    finally:
        await store.close()


async def test_reaction_between_two_clients_and_its_removal(servers):
    srv = await servers()
    async with peer(srv.ws_url("room", user="ann")) as ann, peer(srv.ws_url("room", user="bob")) as bob:
        await ann.until("connection")
        await bob.until("connection")
        await ann.send({"message": "react to this"})
        msg = await bob.until("message", user="ann")
        await bob.send({"type": "reaction", "messageId": msg["id"], "emoji": "👍"})
        for p in (ann, bob):
            frame = await p.until("reaction")
            assert frame == {
                "type": "reaction",
                "message_id": msg["id"],
                "user": "bob",
                "emoji": "👍",
                "added": True,
                "reactions": [{"emoji": "👍", "count": 1, "users": ["bob"]}],
            }
        await ann.send({"type": "reaction", "message_id": msg["id"], "emoji": "👍"})
        frame = await bob.until("reaction", user="ann")
        assert frame["reactions"] == [{"emoji": "👍", "count": 2, "users": ["bob", "ann"]}]
        await bob.send({"type": "reaction", "messageId": msg["id"], "emoji": "👍"})  # again: removed
        frame = await ann.until("reaction", user="bob")
        assert frame["added"] is False and frame["reactions"] == [
            {"emoji": "👍", "count": 1, "users": ["ann"]}
        ]
        await bob.send({"type": "reaction", "messageId": 99999, "emoji": "👍"})
        error = await bob.until("error")
        assert error["code"] == "unknown_message"
        assert [f["type"] for f in await ann.settle()] == []  # a refused reaction is not broadcast


async def test_reactions_survive_a_restart_and_are_replayed_on_resume_and_in_history(servers):
    srv = await servers(http_port=0)
    port = srv.port
    async with peer(srv.ws_url("keep", user="ann")) as ann:
        await ann.until("connection")
        await ann.send({"message": "first"})
        first = await ann.until("message", user="ann")
        await ann.send({"message": "second"})
        second = await ann.until("message", user="ann")
        await ann.send({"type": "reaction", "messageId": first["id"], "emoji": "🎉"})
        await ann.until("reaction")
    await srv.stop()
    srv2 = await servers(port=port, http_port=0)
    # A client that had seen everything up to the second message: the reaction on the first one
    # happened after that, so it is replayed (full state, without the live `user`/`added` fields).
    async with peer(srv2.ws_url("keep", user="bob", after=second["id"])) as bob:
        await bob.until("connection")
        frame = await bob.until("reaction")
        assert frame == {
            "type": "reaction",
            "message_id": first["id"],
            "reactions": [{"emoji": "🎉", "count": 1, "users": ["ann"]}],
        }
    # A client that joins fresh reads history: each message carries its reactions.
    async with httpx.AsyncClient(trust_env=False) as http:
        page = (await http.get(f"{srv2.url}api/chat/keep/messages")).json()
    by_id = {m["id"]: m for m in page["messages"]}
    assert by_id[first["id"]]["reactions"] == [{"emoji": "🎉", "count": 1, "users": ["ann"]}]
    assert "reactions" not in by_id[second["id"]]
    # Over SSE's POST route too (the SSE page sends reactions there).
    async with httpx.AsyncClient(trust_env=False) as http:
        response = await http.post(
            f"{srv2.http_url}sse/chat/keep/messages",
            json={"type": "reaction", "messageId": second["id"], "emoji": "👍", "user": "cat"},
        )
    assert response.status_code == 200 and response.json()["reactions"] == [
        {"emoji": "👍", "count": 1, "users": ["cat"]}
    ]


async def test_a_client_that_knows_only_messages_ignores_reactions(servers):
    """The seed's client reads `connection`, `message`, `ai_chunk`, `ai_complete` and nothing else."""
    srv = await servers()
    async with peer(srv.ws_url("seed", user="ann")) as ann, peer(srv.ws_url("seed", user="old")) as old:
        await ann.until("connection")
        await old.until("connection")
        await ann.send({"message": "hello"})
        msg = await old.until("message", user="ann")
        await ann.send({"type": "reaction", "messageId": msg["id"], "emoji": "❤️"})
        await old.send({"message": "still works"})
        assert (await old.until("message", user="old"))["message"] == "still works"
        seen = [f["type"] for f in old.seen]
        assert "reaction" in seen and all(f.get("id") is None for f in old.seen if f["type"] == "reaction")


async def test_a_reaction_reaches_members_on_another_process(redis_service, tmp_path):
    """With --broker, a reaction made on one process is shown on the others at once."""
    from chatkit import ChatServer
    from chatkit.llm import EchoStreamer

    db = str(tmp_path / "shared.db")
    one = await ChatServer(
        port=0, http_port=-1, db=db, broker=redis_service.url, streamer=EchoStreamer()
    ).start()
    try:
        two = await ChatServer(
            port=0, http_port=-1, db=db, broker=redis_service.url, streamer=EchoStreamer()
        ).start()
        try:
            async with peer(one.ws_url("x", user="ann")) as ann, peer(two.ws_url("x", user="bob")) as bob:
                await ann.until("connection")
                await bob.until("connection")
                await ann.send({"message": "over there"})
                msg = await bob.until("message", user="ann")
                await bob.send({"type": "reaction", "messageId": msg["id"], "emoji": "🎉"})
                frame = await ann.until("reaction")
                assert frame["reactions"] == [{"emoji": "🎉", "count": 1, "users": ["bob"]}]
                assert (frame["user"], frame["added"]) == ("bob", True)
        finally:
            await two.stop()
    finally:
        await one.stop()
