"""ChatClient: events, state, reconnect policies, resume, outbox, dedup."""

from __future__ import annotations

import asyncio
import json
import random

import pytest
from websockets.asyncio.server import serve

from chatkit.client import ChatClient, ExponentialBackoff, FixedDelay
from chatkit.errors import HandshakeRefused, MessageRefused, SendTimeout
from chatkit.llm import EchoStreamer

from .conftest import TIMEOUT, peer
from .proxy import CuttingProxy

FAST = FixedDelay(0.05)


def is_reply(event: dict) -> bool:
    """A finished AI reply: live (``ai_complete``) or replayed after a drop (an AI ``message``)."""
    return event["type"] == "ai_complete" or (event["type"] == "message" and not event["is_user"])


def test_exponential_backoff_with_jitter():
    policy = ExponentialBackoff(rng=random.Random(1))
    delays = [policy.delay(n) for n in range(1, 12)]
    assert 0.5 <= delays[0] <= 1.5 and 1.0 <= delays[1] <= 3.0
    assert all(d <= 30 for d in delays) and max(delays) > 15
    spread = {round(ExponentialBackoff(rng=random.Random(s)).delay(3), 3) for s in range(20)}
    assert len(spread) > 10  # jitter: clients dropped together do not retry together
    assert FixedDelay().delay(7) == 3.0


async def test_send_returns_stored_message_and_events_flow(server):
    seen = []
    async with ChatClient(server.ws_url("c"), user="ann", policy=FAST) as chat:
        chat.on_event(seen.append)
        stored = await chat.send("hello")
        assert stored["type"] == "message" and stored["id"] >= 1 and stored["user"] == "ann"
        done = await chat.next_event("ai_complete", timeout=TIMEOUT / 2)
        assert done["message"] == "hello"
        assert chat.state.state == "open" and chat.outbox == []
    assert seen[-1] == {"type": "state", "state": "closed", "attempt": 0, "delay": None, "error": None}
    assert [e["type"] for e in seen].count("message") == 1


async def test_client_asks_for_batched_presence_and_follows_it(server):
    url = server.ws_url("who")
    async with ChatClient(url, user="ann", policy=FAST) as ann:
        assert "presence=batch" in ann._room_url() and ann.online == ["ann"]
        seen: list[dict] = []
        ann.on_event(seen.append)
        async with ChatClient(url, user="bob", policy=FAST) as bob, ChatClient(url, user="cy", policy=FAST):
            await ann.next_event("presence", timeout=TIMEOUT, count=3)
            assert ann.online == ["ann", "bob", "cy"] and bob.online == ["ann", "bob", "cy"]
            assert ann.online_count == bob.online_count == 3
        await ann.next_event("presence", timeout=TIMEOUT, count=1)
        assert ann.online == ["ann"] and ann.online_count == 1
        assert not [e for e in seen if e["type"] in ("user_join", "user_leave")]  # batches only
    async with ChatClient(url, user="ann", policy=FAST, presence="each") as ann:
        assert "presence" not in ann._room_url()
        async with ChatClient(url, user="bob", policy=FAST):
            assert await ann.next_event("user_join", timeout=TIMEOUT) == {
                "type": "user_join",
                "username": "bob",
            }
            assert ann.online == ["ann", "bob"]
    with pytest.raises(ValueError):
        ChatClient(url, presence="all")  # type: ignore[arg-type]


async def test_refused_handshake_is_not_retried(server):
    with pytest.raises(HandshakeRefused) as info:
        async with ChatClient(f"ws://127.0.0.1:{server.port}/nope/", policy=FAST):
            pass
    assert info.value.status == 404


async def test_retries_on_5xx_until_the_server_accepts():
    refusals = 2

    def process_request(connection, request):
        nonlocal refusals
        if refusals:
            refusals -= 1
            return connection.respond(503, "busy\n")
        return None

    async def handler(ws):
        await ws.send('{"type": "connection", "online": [], "last_id": 0}')
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, process_request=process_request) as srv:
        port = srv.sockets[0].getsockname()[1]
        states = []
        chat = ChatClient(f"ws://127.0.0.1:{port}/ws/chat/x/", policy=FAST)
        chat.on_event(lambda e: e["type"] == "state" and states.append((e["state"], e["attempt"])))
        async with chat:
            assert chat.state.state == "open"
        assert states[:4] == [("connecting", 0), ("reconnecting", 1), ("reconnecting", 2), ("open", 0)]


async def test_restart_resume_and_outbox(servers, db_path):
    srv = await servers()
    port = srv.port
    states = []
    chat = ChatClient(srv.ws_url("r"), user="ann", policy=FAST)
    chat.on_event(lambda e: e["type"] == "state" and states.append(e["state"]))
    async with chat:
        await chat.send("before")
        await chat.next_event("ai_complete", timeout=TIMEOUT / 2)
        await srv.stop()
        await chat.next_event("state", state="reconnecting", timeout=TIMEOUT / 2)
        assert chat.state.attempt >= 1 and chat.state.delay == pytest.approx(0.05)
        offline_send = asyncio.create_task(chat.send("sent while offline"))
        await asyncio.sleep(
            0
        )  # one loop turn: the task runs to its first await, the outbox is filled before it
        assert chat.outbox == ["sent while offline"]
        srv2 = await servers(port=port)
        # Someone else talks while we are (possibly) still away.
        async with peer(srv2.ws_url("r", user="bob")) as bob:
            await bob.until("connection")
            await bob.send({"message": "missed?"})
            await bob.until("ai_complete")
        stored = await asyncio.wait_for(offline_send, TIMEOUT)
        events = []
        async with asyncio.timeout(TIMEOUT):
            while len([e for e in events if is_reply(e)]) < 2:
                events.append(await chat.next_event())
        texts = [e["message"] for e in events if e["type"] == "message" and e["is_user"]]
        assert sorted(texts) == ["missed?", "sent while offline"]
        assert stored["message"] == "sent while offline"
        assert "open" in states[states.index("reconnecting") :]
        assert chat.outbox == []


async def test_drop_mid_reply_resumes_without_duplicate_text(servers):
    srv = await servers(streamer=EchoStreamer(chunks=40, delay=0.01))
    async with CuttingProxy(srv.port) as proxy:
        url = f"ws://127.0.0.1:{proxy.port}/ws/chat/mid/"
        async with ChatClient(url, user="ann", policy=FAST, compression=None) as chat:
            await chat.send("story")
            text = ""
            dropped = False
            async with asyncio.timeout(10):
                async for event in chat:
                    if event["type"] == "ai_chunk":
                        text += event["chunk"]
                        if not dropped and text.count("#") >= 5:
                            dropped = True
                            proxy.cut_all()
                    if event["type"] == "ai_complete":
                        break
            assert dropped and chat.connections == 2
            assert text == event["message"] == "".join(f"story#{i} " for i in range(40))


async def test_lost_broadcast_is_deduplicated_on_resend(servers):
    srv = await servers()
    async with CuttingProxy(srv.port) as proxy:
        url = f"ws://127.0.0.1:{proxy.port}/ws/chat/cut/"
        async with ChatClient(url, user="ann", policy=FAST, compression=None) as chat:
            proxy.cut_on(b"precious-marker")  # the server commits, the broadcast never arrives
            stored = await asyncio.wait_for(chat.send("precious-marker"), TIMEOUT)
            assert proxy.cuts == 1 and chat.connections == 2
            delivered = []
            async with asyncio.timeout(TIMEOUT):
                async for event in chat:
                    if event["type"] == "message" and event["is_user"]:
                        delivered.append(event["id"])
                    if is_reply(event):
                        break
    assert delivered == [stored["id"]]  # delivered to the application exactly once
    assert await srv.store.count("cut") == 2  # one user message, one reply: the re-send was deduplicated


async def test_fifteen_sends_at_once_all_resolve_at_the_default_rate_limit(server):
    """Issue 13: 15 concurrent sends on one client left 5 unresolved (rate-limited, unmatched)."""
    async with ChatClient(server.ws_url("burst"), user="ann", policy=FAST) as chat:
        assert chat.limits.message_burst >= 1
        stored = await asyncio.wait_for(
            asyncio.gather(*(chat.send(f"m{i}") for i in range(15))), timeout=TIMEOUT
        )
        assert sorted(m["message"] for m in stored) == sorted(f"m{i}" for i in range(15))
        assert len({m["id"] for m in stored}) == 15 and chat.outbox == []
    assert await server.store.count("burst") >= 15


async def test_too_long_and_blank_messages_raise_instead_of_hanging(server):
    async with ChatClient(server.ws_url("long"), user="ann", policy=FAST) as chat:
        with pytest.raises(MessageRefused) as info:
            await asyncio.wait_for(chat.send("x" * 5000), timeout=TIMEOUT / 2)
        assert info.value.code == "too_long"
        with pytest.raises(MessageRefused) as info:
            await chat.send("  ")
        assert info.value.code == "empty_message"
        with pytest.raises(MessageRefused) as info:
            await chat.send("\ud800")
        assert info.value.code == "bad_field"
        assert chat.outbox == []
        assert (await chat.send("fine"))["message"] == "fine"


async def refusing_server(script):
    """A bare WebSocket server: ``script(frame, attempt)`` answers each message frame
    with a list of frames (``attempt`` counts the sends of that client_id)."""
    attempts: dict[str, int] = {}
    next_id = 0

    async def handler(ws):
        nonlocal next_id
        await ws.send(
            json.dumps(
                {
                    "type": "connection",
                    "online": [],
                    "last_id": 0,
                    "limits": {"max_text": 50, "messages_per_s": 100, "message_burst": 100},
                }
            )
        )
        async for raw in ws:
            frame = json.loads(raw)
            cid = frame["client_id"]
            attempts[cid] = attempts.get(cid, 0) + 1
            for answer in script(frame, attempts[cid]):
                if answer == "store":
                    next_id += 1
                    answer = {
                        "type": "message",
                        "id": next_id,
                        "is_user": True,
                        "message": frame["message"],
                        "user": "ann",
                        "client_id": cid,
                    }
                await ws.send(json.dumps(answer))

    return attempts, serve(handler, "127.0.0.1", 0)


async def test_refusals_are_matched_by_client_id_and_retried_after_the_stated_delay():
    def script(frame, attempt):
        cid, text = frame["client_id"], frame["message"]
        if text == "bad":
            return [{"type": "error", "code": "bad_field", "message": "no", "client_id": cid}]
        if text == "silent":
            return []
        if text == "slow" and attempt < 3:
            return [
                {
                    "type": "error",
                    "code": "rate_limited",
                    "message": "later",
                    "client_id": cid,
                    "retry_after_ms": 20,
                }
            ]
        return ["store"]

    attempts, server_cm = await refusing_server(script)
    async with server_cm as srv:
        url = f"ws://127.0.0.1:{srv.sockets[0].getsockname()[1]}/ws/chat/x/"
        async with ChatClient(url, user="ann", policy=FAST) as chat:
            assert chat.limits.max_text == 50  # taken from the connection frame
            with pytest.raises(MessageRefused) as info:
                await chat.send("y" * 51)
            assert info.value.code == "too_long"  # refused locally by the server's own limit
            bad, slow, silent = await asyncio.gather(
                chat.send("bad"),
                chat.send("slow"),
                chat.send("silent", timeout=0.3),
                return_exceptions=True,
            )
            assert isinstance(bad, MessageRefused) and bad.code == "bad_field"
            assert slow["message"] == "slow"
            assert isinstance(silent, SendTimeout) and silent.code == "send_timeout"
            assert sorted(attempts.values()) == [1, 1, 3]
            assert chat.outbox == []


async def test_send_while_offline_times_out_by_its_own_deadline(servers):
    srv = await servers()
    chat = ChatClient(srv.ws_url("off"), user="ann", policy=FixedDelay(30))
    async with chat:
        await srv.stop()
        await chat.next_event("state", state="reconnecting", timeout=TIMEOUT / 2)
        with pytest.raises(SendTimeout):
            await chat.send("into the void", timeout=0.2)
        assert chat.outbox == []


async def test_the_outbox_is_flushed_after_a_reconnect_at_the_pace_the_server_allows(servers):
    """25 messages written while offline: after the reconnect they go out paced to the
    limits of the connection frame, so the server (default limits) refuses none of them."""
    srv = await servers()
    port = srv.port
    errors = []
    chat = ChatClient(srv.ws_url("pace"), user="ann", policy=FAST)
    chat.on_event(lambda e: e["type"] == "error" and errors.append(e))
    async with chat:
        await srv.stop()
        await chat.next_event("state", state="reconnecting", timeout=TIMEOUT / 2)
        sends = [asyncio.create_task(chat.send(f"offline {i}")) for i in range(25)]
        await servers(port=port)
        stored = await asyncio.wait_for(asyncio.gather(*sends), timeout=2 * TIMEOUT)
        assert [m["message"] for m in sorted(stored, key=lambda m: m["id"])] == [
            f"offline {i}" for i in range(25)
        ]
    assert [e for e in errors if e["code"] == "rate_limited"] == []
