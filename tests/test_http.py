"""The SSE/HTTP server: event-stream format, resume, one room over two transports,
POST validation, cleanup, CORS, and the OpenAI-compatible endpoint."""

from __future__ import annotations

import asyncio
import gc
import json

import httpx
import pytest
from openai import AsyncOpenAI

from chatkit import protocol
from chatkit.client import FixedDelay
from chatkit.http import SSESink
from chatkit.sinks import Outgoing
from chatkit.sse import SSEClient

from .conftest import TIMEOUT, peer
from .proxy import CuttingProxy


def whatwg_parse(stream: str) -> list[dict]:
    """The event-stream interpretation algorithm of the HTML standard, verbatim in spirit."""
    events, data, event_type, last_id = [], [], "", None
    for line in stream.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if line == "":
            if data:
                events.append({"event": event_type or "message", "data": "\n".join(data), "id": last_id})
            data, event_type = [], ""
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            data.append(value)
        elif field == "event":
            event_type = value
        elif field == "id" and "\0" not in value:
            last_id = value
    return events


def test_sse_encoding_obeys_whatwg_rules():
    raw = (
        protocol.sse_retry(3000)
        + protocol.sse_comment("hello")
        + protocol.sse_event("line one\nline two", event="message", id=7)
        + protocol.sse_event('{"a":"\u2028"}', event="x")
    )
    events = whatwg_parse(raw.decode())
    assert events == [
        {"event": "message", "data": "line one\nline two", "id": "7"},
        {"event": "x", "data": '{"a":"\u2028"}', "id": "7"},  # the last id carries over, per spec
    ]


@pytest.fixture
async def http_server(servers):
    srv = await servers(http_port=0)
    return srv


async def read_stream(
    url: str,
    headers: dict | None = None,
    until: str = "ai_complete",
    count: int = 1,
    subscribed: asyncio.Event | None = None,
) -> tuple[httpx.Response, str]:
    """Read an event stream until ``count`` events of type ``until`` have arrived.

    ``subscribed`` is set when the ``connection`` event arrived: the stream is a
    member of its room from then on.
    """
    text = ""
    async with httpx.AsyncClient(trust_env=False, timeout=TIMEOUT) as client:
        async with client.stream("GET", url, headers=headers or {}) as response:
            async with asyncio.timeout(TIMEOUT):
                async for chunk in response.aiter_text():
                    text += chunk
                    if subscribed is not None and "event: connection\n" in text:
                        subscribed.set()
                    if text.count(f"event: {until}\n") >= count and text.endswith("\n\n"):
                        break
    return response, text


async def wait(event: asyncio.Event) -> None:
    async with asyncio.timeout(TIMEOUT):
        await event.wait()


async def test_room_stream_format_and_headers(http_server):
    base = http_server.http_url
    subscribed = asyncio.Event()
    task = asyncio.create_task(read_stream(f"{base}sse/chat/fmt/?user=sse", subscribed=subscribed))
    await wait(subscribed)
    async with httpx.AsyncClient(trust_env=False) as client:
        r = await client.post(f"{base}sse/chat/fmt/messages", json={"message": "hi\nthere", "user": "ann"})
    assert r.status_code == 201
    response, text = await task
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert text.startswith("retry: 3000\n\n")
    events = whatwg_parse(text)
    frames = [json.loads(e["data"]) for e in events]
    assert [e["event"] for e in events] == [f["type"] for f in frames]
    assert frames[0]["type"] == "connection" and frames[0]["user"] == "sse"
    msg = next(e for e in events if e["event"] == "message")
    broadcast = json.loads(msg["data"])
    assert broadcast.pop("reply_id") == r.json()["id"] + 1  # the live broadcast names the reply
    assert broadcast == r.json() and msg["id"] == str(r.json()["id"])
    done = json.loads(events[-1]["data"])
    assert done["message"] == "hi\nthere" and events[-1]["id"] == str(done["id"])


async def test_heartbeat_comment(http_server):
    http_server.http.heartbeat_s = 0.1
    text = ""
    async with httpx.AsyncClient(trust_env=False) as client:
        async with client.stream("GET", f"{http_server.http_url}sse/chat/hb/") as response:
            async with asyncio.timeout(TIMEOUT):
                async for chunk in response.aiter_text():
                    text += chunk
                    if ": heartbeat" in text:
                        break
    assert ": heartbeat\n\n" in text


async def test_last_event_id_replays_what_was_missed(http_server):
    async with peer(http_server.ws_url("resume", user="ann")) as ann:
        await ann.until("connection")
        for i in range(3):
            await ann.send({"message": f"m{i}"})
            await ann.until("ai_complete")
        ids = [f["id"] for f in ann.seen if f["type"] in ("message", "ai_complete")]
    for header in ({"Last-Event-ID": str(ids[1])}, None):
        url = f"{http_server.http_url}sse/chat/resume/" + ("" if header else f"?after={ids[1]}")
        _, text = await read_stream(url, header, until="message", count=len(ids) - 2)
        frames = [json.loads(e["data"]) for e in whatwg_parse(text)][1:]
        assert [f["id"] for f in frames] == ids[2:]


async def test_one_room_two_transports_same_ids_same_order(http_server):
    async with SSEClient(http_server.http_url, "mixed", user="sse-user") as sse:
        sse_events: list[dict] = []

        async def follow():
            async for event in sse.events():
                sse_events.append(event)
                if len([e for e in sse_events if e["type"] == "ai_complete"]) == 4:
                    return

        follower = asyncio.create_task(follow())
        async with peer(http_server.ws_url("mixed", user="ws-user")) as ws:
            await ws.until("connection")
            join = await ws.until("user_join")  # presence spans transports
            assert join["username"] == "sse-user"  # the SSE stream is in the room
            await ws.send({"message": "from websocket"})
            await ws.until("ai_complete")
            await sse.post("from sse")
            await ws.until("ai_complete")
            await ws.send({"message": "ws again"})
            await ws.until("ai_complete")
            await sse.post("sse again")
            await ws.until("ai_complete")
            await asyncio.wait_for(follower, TIMEOUT)
        key = lambda frames: [(f["type"], f["id"]) for f in frames if f["type"] in ("message", "ai_complete")]
        assert key(ws.seen) == key(sse_events) and len(key(sse_events)) == 8


async def test_sse_client_reconnects_with_last_event_id(http_server):
    async with CuttingProxy(http_server.http_port) as proxy:
        async with SSEClient(
            f"http://127.0.0.1:{proxy.port}/", "drop", user="s", policy=FixedDelay(0.05)
        ) as sse:
            got: list[dict] = []
            subscribed, first_reply = asyncio.Event(), asyncio.Event()

            async def follow():
                async for event in sse.events():
                    got.append(event)
                    if event["type"] == "connection":
                        subscribed.set()
                    replies = len(
                        [
                            e
                            for e in got
                            if e["type"] == "message" and not e["is_user"] or e["type"] == "ai_complete"
                        ]
                    )
                    if replies == 1:
                        first_reply.set()
                    if replies == 2:
                        return

            follower = asyncio.create_task(follow())
            await wait(subscribed)
            async with SSEClient(http_server.http_url, "drop", user="poster") as poster:
                await poster.post("one")
                await wait(first_reply)  # "one" and its reply went through the proxy
                proxy.cut_all()
                await poster.post("two while away")
            await asyncio.wait_for(follower, TIMEOUT)
    assert sse.connections == 2 and sse.raw_events[-1].id
    user_texts = [e["message"] for e in got if e["type"] == "message" and e["is_user"]]
    assert user_texts == ["one", "two while away"]


@pytest.mark.parametrize(
    "body, status, code",
    [
        (b"{bad", 400, "bad_json"),
        (b"[1]", 400, "not_an_object"),
        (json.dumps({"user": "ann"}).encode(), 400, "missing_field"),
        (json.dumps({"message": ""}).encode(), 400, "empty_message"),
        (json.dumps({"message": "x" * 5000}).encode(), 400, "too_long"),
        (json.dumps({"message": "hi", "user": 5}).encode(), 400, "bad_field"),
        (json.dumps({"message": "hi", "client_id": 7}).encode(), 400, "bad_field"),
        (b"x" * 300_000, 413, "too_large"),
    ],
)
async def test_post_validation(http_server, body, status, code):
    async with httpx.AsyncClient(trust_env=False) as client:
        r = await client.post(
            f"{http_server.http_url}sse/chat/val/messages",
            content=body,
            headers={"Content-Type": "application/json"},
        )
    assert r.status_code == status and r.json()["code"] == code
    assert await http_server.store.count("val") == 0


async def test_post_dedup_rate_limit_and_routes(servers):
    srv = await servers(http_port=0, rate_limit=1, rate_burst=2)
    url = f"{srv.http_url}sse/chat/post/messages"
    async with httpx.AsyncClient(trust_env=False) as client:
        first = await client.post(url, json={"message": "hi", "user": "ann", "client_id": "c1"})
        again = await client.post(url, json={"message": "hi", "user": "ann", "client_id": "c1"})
        assert (first.status_code, again.status_code) == (201, 200) and first.json() == again.json()
        # keyed on the client address (no sign-in), never on the declared name: new names do not help
        # (all at once: sent one by one, a loaded machine can be slower than the bucket refills)
        codes = [
            r.status_code
            for r in await asyncio.gather(
                *(client.post(url, json={"message": f"m{i}", "user": f"ann{i}"}) for i in range(25))
            )
        ]
        assert 429 in codes
        assert (await client.get(f"{srv.http_url}nowhere")).status_code == 404
        assert (await client.get(url)).status_code == 405
        assert (await client.get(f"{srv.http_url}sse/chat/bad.id/")).status_code == 404
        assert (await client.get(f"{srv.http_url}health")).json()["status"] == "ok"


async def test_history_cors_limited_to_allowed_origins(servers):
    srv = await servers(http_port=0, allowed_origins=["http://class.example"])
    url = f"{srv.http_url}api/chat/cors/messages?limit=5"
    async with httpx.AsyncClient(trust_env=False) as client:
        ok = await client.get(url, headers={"Origin": "http://class.example"})
        bad = await client.get(url, headers={"Origin": "http://evil.example"})
    assert ok.headers["access-control-allow-origin"] == "http://class.example"
    assert "access-control-allow-origin" not in bad.headers
    assert ok.json() == {"session_id": "cors", "messages": [], "has_more": False}


async def test_disconnect_cleanup_after_100_clients(http_server, monkeypatch):
    base = f"{http_server.http_url}sse/chat/churn/"
    left, round_left = 0, asyncio.Event()
    leave = http_server.hub.leave

    def leave_and_count(member):
        nonlocal left
        leave(member)
        left += 1
        if left % 50 == 0:
            round_left.set()

    monkeypatch.setattr(http_server.hub, "leave", leave_and_count)
    gc.collect()
    tasks_before = asyncio.all_tasks()
    async with httpx.AsyncClient(trust_env=False, limits=httpx.Limits(max_connections=200)) as client:
        for round_ in range(2):
            streams = []
            for i in range(50):
                cm = client.stream("GET", f"{base}?user=u{round_}-{i}")
                response = await cm.__aenter__()
                streams.append((cm, response))
            for _, response in streams:  # each stream's first event: it is in the room
                text = ""
                async with asyncio.timeout(TIMEOUT):
                    async for chunk in response.aiter_text():
                        text += chunk
                        if "event: connection\n" in text:
                            break
            assert http_server.http.streams == 50
            assert len(http_server.hub.online("churn")) == 50
            round_left.clear()
            for cm, _ in streams:
                await cm.__aexit__(None, None, None)
            await wait(round_left)  # the server has seen all 50 go
    assert left == 100
    assert http_server.http.streams == 0
    assert "churn" not in http_server.hub.rooms
    others = asyncio.all_tasks() - tasks_before - {asyncio.current_task()}
    if others:  # the stream handlers end right after their leave
        await asyncio.wait(others, timeout=TIMEOUT)
    assert len(asyncio.all_tasks()) <= len(tasks_before)


async def test_openai_library_against_v1(servers):
    srv = await servers(http_port=0, llm="offline", first_token_ms=0, tokens_per_s=0)
    client = AsyncOpenAI(base_url=f"{srv.http_url}v1", api_key="none")
    models = [m.id async for m in client.models.list()]
    assert models == ["chatkit-offline"]
    stream = await client.chat.completions.create(
        model="chatkit-offline",
        stream=True,
        messages=[{"role": "user", "content": "How does the WebSocket handshake work?"}],
    )
    pieces = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 20 and "101 Switching Protocols" in "".join(pieces)
    reply = await client.chat.completions.create(
        model="chatkit-offline", messages=[{"role": "user", "content": "What is SSE?"}]
    )
    assert reply.choices[0].message.content == "".join(
        [p async for p in srv.streamer.stream([{"role": "user", "content": "What is SSE?"}])]
    )
    with pytest.raises(Exception) as info:
        await client.chat.completions.create(model="x", messages=[])
    assert getattr(info.value, "status_code", None) == 400
    await client.close()


# -- SSESink without a socket ---------------------------------------------------------


class BufferTransport(asyncio.WriteTransport):
    """A transport whose peer reads nothing: every byte written stays unsent (no socket)."""

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()
        self.closing = False

    def write(self, data) -> None:
        self.data += data

    def get_write_buffer_size(self) -> int:
        return len(self.data)

    def is_closing(self) -> bool:
        return self.closing


async def test_sse_sink_ids_are_the_safe_resume_cursor():
    """Type and id come from the frame, not from parsing its JSON; a streaming reply holds the cursor back."""
    transport = BufferTransport()
    sink = SSESink(transport, chunked=False)
    sink.cursor = 10
    for frame in (
        protocol.message_frame(protocol.StoredMessage(11, "r", "ann", True, "hi", "complete", None, "t")),
        protocol.ai_chunk_frame(12, "Hel"),
        protocol.typing_frame("bob", True),
        protocol.ai_chunk_frame(12, "lo"),
        protocol.ai_complete_frame(12, "Hello"),
    ):
        sink.send(Outgoing.encode(frame))
    events = whatwg_parse(transport.data.decode())
    assert [(e["event"], e["id"]) for e in events] == [
        ("message", "11"),
        ("ai_chunk", "11"),
        ("typing", "11"),
        ("ai_chunk", "11"),
        ("ai_complete", "12"),
    ]
    assert json.loads(events[-1]["data"])["message"] == "Hello"


async def test_sse_sink_writes_http_chunks_and_ends_a_stream_that_falls_behind():
    transport = BufferTransport()
    sink = SSESink(transport, limit=1)
    frame = Outgoing.encode(protocol.typing_frame("u0", True))
    sink.send(frame)
    size, _, rest = bytes(transport.data).partition(b"\r\n")
    assert int(size, 16) == len(rest) - 2 and rest.endswith(b"\r\n")  # one chunk of a chunked body
    assert whatwg_parse(rest[:-2].decode())[0]["event"] == "typing"
    assert not sink.ended.done()
    sink.send(Outgoing.encode(protocol.typing_frame("u1", True)))  # the first is still unsent: too slow
    assert sink.overflowed and sink.ended.done()
    written = len(transport.data)
    sink.send(Outgoing.encode(protocol.typing_frame("late", True)))  # dropped: the stream is ending
    assert len(transport.data) == written
