"""The WebSocket server end to end: real clients, a real SQLite file, free ports."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import sqlite3
import urllib.request

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from chatkit.llm import EchoStreamer

from .conftest import TIMEOUT, peer


async def test_seed_client_flow(server):
    """A client written only from the seed document works unchanged."""
    async with peer(f"ws://127.0.0.1:{server.port}/ws/chat/seed/") as ws:
        hello = await ws.recv()
        assert hello["type"] == "connection" and hello["message"]
        await ws.send({"message": "hello tutor"})
        msg = await ws.until("message")
        assert msg["message"] == "hello tutor" and msg["is_user"] is True
        chunks = []
        while (frame := await ws.recv())["type"] == "ai_chunk":
            chunks.append(frame["chunk"])
        assert frame["type"] == "ai_complete"
        assert "".join(chunks) == frame["message"] == "hello tutor"


async def test_connection_frame_and_message_fields(server):
    async with peer(server.ws_url("room1", user="ann")) as ann:
        hello = await ann.recv()
        assert hello == {
            "type": "connection",
            "message": hello["message"],
            "session_id": "room1",
            "user": "ann",
            "online": ["ann"],
            "last_id": 0,
            "protocol": 1,
            "limits": {
                "max_text": 4000,
                "messages_per_s": 5.0,
                "message_burst": 10,
                "frames_per_s": 50.0,
                "frame_burst": 100,
            },
        }
        await ann.send({"type": "message", "message": "hi", "client_id": "c-1"})
        msg = await ann.until("message")
        assert msg["id"] >= 1 and msg["user"] == "ann" and msg["client_id"] == "c-1"
        assert msg["timestamp"].endswith("Z") and "T" in msg["timestamp"]
        done = await ann.until("ai_complete")
        assert done["id"] > msg["id"] and done["status"] == "complete" and done["cancelled"] is False


@pytest.mark.parametrize("n", [2, 10])
async def test_clients_in_one_room_see_same_messages_in_id_order(server, n):
    async with contextlib.AsyncExitStack() as stack:
        peers = []
        for i in range(n):
            p = await stack.enter_async_context(peer(server.ws_url("crowd", user=f"u{i}")))
            peers.append(p)
            await p.until("connection")
        senders = peers[:3]
        for i, p in enumerate(senders):
            await p.send({"message": f"from {i}"})
        expected_replies = len(senders)
        for p in peers:
            replies = 0
            while replies < expected_replies:
                if (await p.recv())["type"] == "ai_complete":
                    replies += 1
        streams = [
            [(f["type"], f["id"]) for f in p.seen if f["type"] in ("message", "ai_complete")] for p in peers
        ]
        assert all(s == streams[0] for s in streams)
        message_ids = [i for t, i in streams[0] if t == "message"]
        assert message_ids == sorted(message_ids) and len(message_ids) == len(senders)


async def test_typing_presence_and_receipts(server):
    async with peer(server.ws_url("r", user="ann")) as ann:
        await ann.until("connection")
        async with peer(server.ws_url("r", user="bob")) as bob:
            hello = await bob.until("connection")
            assert hello["online"] == ["ann", "bob"]
            join = await ann.until("user_join")
            assert join == {"type": "user_join", "username": "bob"}
            await bob.send({"type": "typing", "isTyping": True})
            assert await ann.until("typing") == {"type": "typing", "user": "bob", "is_typing": True}
            assert [f for f in await bob.settle() if f["type"] == "typing"] == []  # not echoed
            await ann.send({"message": "read me"})
            msg = await bob.until("message")
            await bob.send({"type": "read_receipt", "messageId": msg["id"]})
            receipt = await ann.until("read_receipt")
            assert receipt == {"type": "read_receipt", "message_id": msg["id"], "user": "bob"}
            await bob.send({"type": "read_receipt", "message_id": 999999})
            assert (await bob.until("error"))["code"] == "unknown_message"
        leave = await ann.until("user_leave")
        assert leave == {"type": "user_leave", "username": "bob"}
    con = sqlite3.connect(server.config.db)
    assert con.execute("SELECT user FROM read_receipts").fetchall() == [("bob",)]


async def test_typing_expires(servers):
    srv = await servers(typing_timeout=0.2)
    async with peer(srv.ws_url("r", user="ann")) as ann, peer(srv.ws_url("r", user="bob")) as bob:
        await ann.until("connection")
        await bob.until("connection")
        await bob.send({"type": "typing", "is_typing": True})
        await ann.until("typing", is_typing=True)
        stale = await ann.until("typing")  # the server's timer, 0.2 s
        assert stale == {"type": "typing", "user": "bob", "is_typing": False}


async def test_second_connection_of_a_user_does_not_rejoin(server, monkeypatch):
    left = asyncio.Event()
    leave = server.hub.leave

    def leave_and_tell(member):
        leave(member)
        left.set()

    monkeypatch.setattr(server.hub, "leave", leave_and_tell)
    async with peer(server.ws_url("r", user="ann")) as a1, peer(server.ws_url("r", user="bob")) as bob:
        await a1.until("connection")
        await bob.until("connection")
        async with peer(server.ws_url("r", user="ann")) as a2:
            await a2.until("connection")  # the join (and any user_join) is done by now
            assert [f for f in await bob.settle() if f["type"] == "user_join"] == []
        async with asyncio.timeout(TIMEOUT):
            await left.wait()  # the server has handled the second connection's leave
        assert [f for f in await bob.settle() if f["type"] == "user_leave"] == []


@pytest.mark.parametrize(
    "raw, code",
    [
        ("{oops", "bad_json"),
        ("[]", "not_an_object"),
        ('{"type": "explode"}', "unknown_type"),
        ('{"type": "message"}', "missing_field"),
        ('{"message": 42}', "bad_field"),
        ('{"message": ""}', "empty_message"),
        (json.dumps({"message": "x" * 5000}), "too_long"),
    ],
)
async def test_bad_input_gets_error_and_connection_stays(server, raw, code, caplog):
    caplog.set_level(logging.INFO, logger="chatkit")
    async with peer(server.ws_url("bad", user="ann")) as ann:
        await ann.until("connection")
        await ann.send(raw)
        err = await ann.until("error")
        assert err["code"] == code and err["message"]
        await ann.send({"message": "still here"})
        assert (await ann.until("message"))["message"] == "still here"
    assert code in caplog.text  # the refusal is logged with its reason
    con = sqlite3.connect(server.config.db)
    assert con.execute("SELECT content FROM messages WHERE is_user = 1").fetchall() == [("still here",)]


async def test_oversized_frame_closes_1009_and_server_stays_up(servers):
    srv = await servers(max_message_bytes=1024)
    async with peer(srv.ws_url("big")) as p:
        await p.until("connection")
        await p.send({"message": "x" * 2000})
        with pytest.raises(ConnectionClosed) as info:
            await p.recv()
        assert info.value.rcvd.code == 1009
    async with peer(srv.ws_url("big")) as p:
        assert (await p.recv())["type"] == "connection"


async def test_flood_is_rate_limited(servers):
    srv = await servers(rate_limit=2, rate_burst=3)
    async with peer(srv.ws_url("flood", user="spam")) as p:
        await p.until("connection")
        for i in range(10):
            await p.send({"message": f"m{i}"})
        await p.settle()  # every frame's answer (a message or an error) has arrived
        codes = [f["code"] for f in p.seen if f["type"] == "error"]
        assert codes and set(codes) == {"rate_limited"}
        stored = [f for f in p.seen if f["type"] == "message"]
        assert 3 <= len(stored) <= 4 and len(stored) + len(codes) == 10


@pytest.mark.parametrize(
    "path, status",
    [
        ("/nope/", 404),
        ("/ws/chat/bad.id/", 404),
        ("/ws/chat/" + "a" * 65 + "/", 404),
        ("/ws/chat/ok/?after=x", 400),
        ("/ws/chat/ok/?user=", 400),
    ],
)
async def test_handshake_refusals(server, path, status, caplog):
    with pytest.raises(InvalidStatus) as info:
        async with connect(f"ws://127.0.0.1:{server.port}{path}", proxy=None):
            pass
    assert info.value.response.status_code == status
    assert "refused" in caplog.text


async def test_origin_check(servers):
    srv = await servers(allowed_origins=["http://good.example"])
    with pytest.raises(InvalidStatus) as info:
        async with connect(srv.ws_url("r"), origin="http://evil.example", proxy=None):
            pass
    assert info.value.response.status_code == 403
    async with connect(srv.ws_url("r"), origin="http://good.example", proxy=None) as ws:
        assert json.loads(await ws.recv())["type"] == "connection"


def _get(url: str) -> tuple[int, dict, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


async def test_health_and_history_endpoint(server):
    async with peer(server.ws_url("hist", user="ann")) as ann:
        await ann.until("connection")
        for i in range(5):
            await ann.send({"message": f"m{i}"})
            await ann.until("ai_complete")
    base = f"http://127.0.0.1:{server.port}"
    status, _, body = await asyncio.to_thread(_get, base + "/health")
    assert status == 200 and body["status"] == "ok"
    status, _, page = await asyncio.to_thread(_get, base + "/api/chat/hist/messages?limit=4")
    assert status == 200 and len(page["messages"]) == 4 and page["has_more"] is True
    ids = [m["id"] for m in page["messages"]]
    assert ids == sorted(ids)
    status, _, older = await asyncio.to_thread(
        _get, base + f"/api/chat/hist/messages?before={ids[0]}&limit=100"
    )
    assert [m["id"] for m in older["messages"]] == list(range(1, ids[0]))
    assert older["has_more"] is False
    status, _, err = await asyncio.to_thread(_get, base + "/api/chat/hist/messages?limit=abc")
    assert status == 400 and err["code"] == "bad_field"


async def test_persistence_across_restart(servers, db_path):
    srv = await servers()
    async with peer(srv.ws_url("keep", user="ann")) as ann:
        await ann.until("connection")
        await ann.send({"message": "remember me"})
        first = await ann.until("message")
        await ann.until("ai_complete")
    await srv.stop()
    srv2 = await servers()
    async with peer(srv2.ws_url("keep", user="ann", after=0)) as ann:
        await ann.until("connection")
        replayed = await ann.until("message", message="remember me")
        assert replayed["id"] == first["id"]
        await ann.send({"message": "again"})
        assert (await ann.until("message", message="again"))["id"] > first["id"]


async def test_resume_after_id_replays_in_order(server):
    async with peer(server.ws_url("res", user="ann")) as ann:
        await ann.until("connection")
        for i in range(3):
            await ann.send({"message": f"m{i}"})
            await ann.until("ai_complete")
        ids = [f["id"] for f in ann.seen if f["type"] in ("message", "ai_complete")]
    async with peer(server.ws_url("res", user="ann", after=ids[1])) as again:
        await again.until("connection")
        replay = [await again.recv() for _ in range(len(ids) - 2)]
        assert [f["id"] for f in replay] == ids[2:]
        assert replay[0]["is_user"] is True and replay[1]["is_user"] is False


async def test_client_id_resend_is_deduplicated(server):
    async with peer(server.ws_url("dup", user="ann")) as ann:
        await ann.until("connection")
        await ann.send({"message": "once", "client_id": "k1"})
        first = await ann.until("message")
        await ann.until("ai_complete")
        await ann.send({"message": "once", "client_id": "k1"})
        again = await ann.until("message")
        assert again["id"] == first["id"]
        assert [f for f in await ann.settle() if f["type"] == "ai_chunk"] == []  # no second reply
    con = sqlite3.connect(server.config.db)
    assert con.execute("SELECT COUNT(*) FROM messages WHERE client_id = 'k1'").fetchone()[0] == 1


async def test_ai_replies_sender_only(servers):
    srv = await servers(ai_replies="sender")
    async with peer(srv.ws_url("s", user="ann")) as ann, peer(srv.ws_url("s", user="bob")) as bob:
        await ann.until("connection")
        await bob.until("connection")
        await ann.send({"message": "just for me"})
        await ann.until("ai_complete")
        await bob.until("message")
        # ann's reply went out before her ai_complete; bob's pong comes after anything sent to him then
        assert [f["type"] for f in bob.seen + await bob.settle() if f["type"].startswith("ai_")] == []


async def test_ai_replies_whole_room_by_default(server):
    async with peer(server.ws_url("s", user="ann")) as ann, peer(server.ws_url("s", user="bob")) as bob:
        await ann.until("connection")
        await bob.until("connection")
        await ann.send({"message": "for everyone"})
        assert (await bob.until("ai_complete"))["message"] == "for everyone"


async def test_stop_cancels_reply(servers):
    srv = await servers(streamer=EchoStreamer(chunks=200, delay=0.02))
    async with peer(srv.ws_url("stop", user="ann")) as ann:
        await ann.until("connection")
        await ann.send({"message": "long"})
        await ann.until("ai_chunk")
        await ann.send({"type": "stop"})
        done = await ann.until("ai_complete")
        assert done["cancelled"] is True and done["status"] == "cancelled"
        chunks = "".join(f["chunk"] for f in ann.seen if f["type"] == "ai_chunk")
        assert done["message"] == chunks and 0 < len(chunks) < len("long#0 ") * 200
    con = sqlite3.connect(srv.config.db)
    assert con.execute("SELECT status, content FROM messages WHERE id = ?", (done["id"],)).fetchone() == (
        "cancelled",
        done["message"],
    )


async def test_busy_queue_keeps_message(servers):
    srv = await servers(streamer=EchoStreamer(chunks=100, delay=0.01), reply_queue=1, rate_burst=20)
    async with peer(srv.ws_url("busy", user="ann")) as ann:
        await ann.until("connection")
        for i in range(4):
            await ann.send({"message": f"q{i}"})
        err = await ann.until("error")
        assert err["code"] == "busy"
        await ann.until("message", message="q3")
        for _ in range(4):
            await ann.send({"type": "stop"})
    con = sqlite3.connect(srv.config.db)
    stored = [r[0] for r in con.execute("SELECT content FROM messages WHERE is_user = 1 ORDER BY id")]
    assert stored == ["q0", "q1", "q2", "q3"]


async def test_graceful_shutdown_stores_partial_reply(servers):
    srv = await servers(streamer=EchoStreamer(chunks=500, delay=0.01))
    async with peer(srv.ws_url("bye", user="ann")) as ann:
        await ann.until("connection")
        await ann.send({"message": "tell me a long story"})
        for _ in range(3):
            await ann.until("ai_chunk")
        await srv.stop()
        done = await ann.until("ai_complete")
        assert done["status"] == "interrupted" and done["message"]
        with pytest.raises(ConnectionClosed) as info:
            while True:
                await ann.recv()
        assert info.value.rcvd.code == 1001
    con = sqlite3.connect(srv.config.db)
    status, content = con.execute(
        "SELECT status, content FROM messages WHERE id = ?", (done["id"],)
    ).fetchone()
    assert status == "interrupted" and content == done["message"]


async def test_garbage_does_not_disturb_other_clients(server):
    async with peer(server.ws_url("calm", user="ann")) as ann, peer(server.ws_url("calm", user="eve")) as eve:
        await ann.until("connection")
        await eve.until("connection")
        for raw in ["{", "[]", "null", '{"type": null}', "\x00" * 10, json.dumps({"message": "🙂" * 10})]:
            await eve.send(raw)
        await ann.send({"message": "fine"})
        assert (await ann.until("ai_complete", message="fine"))["message"] == "fine"


async def test_every_broadcast_message_is_in_db_with_its_id(server):
    async with peer(server.ws_url("audit", user="ann")) as ann:
        await ann.until("connection")
        for i in range(5):
            await ann.send({"message": f"a{i}"})
        for _ in range(5):
            await ann.until("ai_complete")
    con = sqlite3.connect(server.config.db)
    rows = dict(con.execute("SELECT id, content FROM messages"))
    for f in ann.seen:
        if f["type"] == "message":
            assert rows[f["id"]] == f["message"]
        if f["type"] == "ai_complete":
            assert rows[f["id"]] == f["message"]


async def read_close_code(reader: asyncio.StreamReader) -> int:
    """Skip server frames on a raw WebSocket stream until the close frame; return its code."""
    while True:
        b0, b1 = await reader.readexactly(2)
        length = b1 & 0x7F
        if length == 126:
            length = int.from_bytes(await reader.readexactly(2), "big")
        elif length == 127:
            length = int.from_bytes(await reader.readexactly(8), "big")
        payload = await reader.readexactly(length)
        if b0 & 0x0F == 8:
            return int.from_bytes(payload[:2], "big")


async def test_slow_consumer_is_closed_1013_and_the_room_keeps_going(servers, caplog):
    caplog.set_level(logging.WARNING, logger="chatkit")
    srv = await servers(
        max_buffer_bytes=256 * 1024,
        rate_limit=10_000,
        rate_burst=10_000,
        reply_queue=10_000,
        max_text=50_000,
        max_message_bytes=128 * 1024,
    )
    # The sloth: a raw WebSocket with a tiny receive buffer that stops reading after the handshake.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", srv.port))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(
        b"GET /ws/chat/slow/?user=sloth HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    writer.transport.pause_reading()
    n, big = 100, "x" * 49_000  # ~15 MB to every member (message + echoed reply)
    async with peer(srv.ws_url("slow", user="fast"), max_size=None) as fast:
        await fast.until("connection")
        for i in range(n):
            await fast.send({"message": f"{i} {big}"})
        async with asyncio.timeout(60):  # the fast member gets everything, undisturbed
            while len([f for f in fast.seen if f["type"] == "ai_complete"]) < n:
                await fast.recv()
    assert "closing slow consumer" in caplog.text
    writer.transport.resume_reading()
    assert await asyncio.wait_for(read_close_code(reader), 3 * TIMEOUT) == 1013
    writer.write(bytes([0x88, 0x82, 0, 0, 0, 0]) + (1013).to_bytes(2, "big"))  # answer the close (mask 0)
    writer.close()
    # it comes back and resumes by id: nothing was lost
    async with peer(srv.ws_url("slow", user="sloth", after=0), max_size=None) as back:
        await back.until("connection")
        async with asyncio.timeout(60):  # every message and every reply (read all, then close)
            while len([f for f in back.seen if f["type"] == "message"]) < 2 * n:
                await back.recv()
        assert len([f for f in back.seen if f["type"] == "message" and f["is_user"]]) == n


async def test_compressed_and_plain_members_get_the_same_frames(server):
    """Frames are framed once for the members without an extension and go through
    ``websockets`` for those with permessage-deflate: both read the same frames, short,
    medium (16-bit length) and long, in the same order."""
    url = server.ws_url("mixed")
    async with peer(url + "?user=ann") as ann, peer(url + "?user=bob", compression=None) as bob:
        assert ann.ws.protocol.extensions and not bob.ws.protocol.extensions
        await ann.recv()
        await bob.recv()
        for text in ["hi", "한국어 " * 40, "long " * 800]:
            await ann.send({"type": "message", "message": text})
            for who in (ann, bob):
                done = await who.until("ai_complete")
                assert done["message"] == text
        room = [[f for f in who.seen if f["type"] not in ("connection", "user_join")] for who in (ann, bob)]
        assert room[0] == room[1] and len(room[0]) > 3 * 2


async def test_app_level_ping_gets_pong(server):
    async with peer(server.ws_url("hb", user="ann")) as ann:
        await ann.until("connection")
        await ann.send({"type": "ping"})
        assert await ann.recv() == {"type": "pong"}
