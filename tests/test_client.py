"""ChatClient: events, state, reconnect policies, resume, outbox, dedup."""

from __future__ import annotations

import asyncio
import random

import pytest
from websockets.asyncio.server import serve

from chatkit.client import ChatClient, ExponentialBackoff, FixedDelay
from chatkit.errors import HandshakeRefused
from chatkit.llm import EchoStreamer

from .conftest import peer
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
        done = await chat.next_event("ai_complete", timeout=5)
        assert done["message"] == "hello"
        assert chat.state.state == "open" and chat.outbox == []
    assert seen[-1] == {"type": "state", "state": "closed", "attempt": 0, "delay": None, "error": None}
    assert [e["type"] for e in seen].count("message") == 1


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
        await chat.next_event("ai_complete", timeout=5)
        await srv.stop()
        await chat.next_event("state", state="reconnecting", timeout=5)
        assert chat.state.attempt >= 1 and chat.state.delay == pytest.approx(0.05)
        offline_send = asyncio.create_task(chat.send("sent while offline"))
        await asyncio.sleep(0.1)
        assert chat.outbox == ["sent while offline"]
        srv2 = await servers(port=port)
        # Someone else talks while we are (possibly) still away.
        async with peer(srv2.ws_url("r", user="bob")) as bob:
            await bob.until("connection")
            await bob.send({"message": "missed?"})
            await bob.until("ai_complete")
        stored = await asyncio.wait_for(offline_send, 5)
        events = []
        async with asyncio.timeout(5):
            while len([e for e in events if is_reply(e)]) < 2:
                events.append(await chat.next_event())
        texts = [e["message"] for e in events if e["type"] == "message" and e["is_user"]]
        assert sorted(texts) == ["missed?", "sent while offline"]
        assert stored["message"] == "sent while offline"
        assert "open" in states[states.index("reconnecting"):]
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
            stored = await asyncio.wait_for(chat.send("precious-marker"), 5)
            assert proxy.cuts == 1 and chat.connections == 2
            delivered = []
            async with asyncio.timeout(5):
                async for event in chat:
                    if event["type"] == "message" and event["is_user"]:
                        delivered.append(event["id"])
                    if is_reply(event):
                        break
    assert delivered == [stored["id"]]  # delivered to the application exactly once
    assert await srv.store.count("cut") == 2  # one user message, one reply: the re-send was deduplicated
