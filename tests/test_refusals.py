"""Bad input and refused messages (issue 13): every refusal is a coded error naming
the refused message, the server stays up, and no room is left behind.

The last tests fuzz a live server (run in a thread of its own, so Hypothesis can
drive it with blocking clients) through every door: the handshake query, every
client frame type, binary frames, the history query on both ports and the POST body.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as sync_connect

from chatkit import ChatServer, protocol
from chatkit.limits import Limits
from chatkit.llm import EchoStreamer

from .conftest import peer

WAIT = 5.0  # the one timeout constant of this module
JSON = {"Content-Type": "application/json"}

SENDER_CODES = {
    "bad_json",
    "not_an_object",
    "unknown_type",
    "missing_field",
    "bad_field",
    "empty_message",
    "too_long",
    "rate_limited",
    "busy",
    "unknown_message",
    "binary_frame",
}


def no_idle_room(srv: ChatServer) -> bool:
    """Every room the hub holds has a member, a reply worker or a call in progress."""
    return all(not room.idle() for room in list(srv.hub.rooms.values()))


async def test_too_long_is_refused_with_its_client_id(server):
    async with peer(server.ws_url("r", user="ann")) as ann:
        await ann.until("connection")
        await ann.send({"message": "x" * 5000, "client_id": "c-long"})
        err = await ann.until("error")
        assert err["code"] == "too_long" and err["client_id"] == "c-long"
        assert "retry_after_ms" not in err  # permanent: sending it again cannot help
        await ann.send({"message": "\ud800", "client_id": "c-surrogate"})
        err = await ann.until("error")
        assert (err["code"], err["client_id"]) == ("bad_field", "c-surrogate")
        await ann.send({"message": "fine", "client_id": "c-ok"})
        assert (await ann.until("message"))["client_id"] == "c-ok"
    assert await server.store.count("r") == 2  # "fine" and its reply: nothing refused was stored


async def test_rate_limited_messages_say_which_and_when(servers):
    srv = await servers(rate_limit=2.0, rate_burst=3)
    async with peer(srv.ws_url("rl", user="ann")) as ann:
        hello = await ann.until("connection")
        assert hello["limits"]["messages_per_s"] == 2.0 and hello["limits"]["message_burst"] == 3
        for i in range(5):
            await ann.send({"message": f"m{i}", "client_id": f"c{i}"})
        refused = [await ann.until("error", code="rate_limited") for _ in range(2)]
        assert [e["client_id"] for e in refused] == ["c3", "c4"]
        assert all(0 < e["retry_after_ms"] <= 1000 for e in refused)


async def test_binary_and_malformed_frames_are_coded_and_count_toward_the_frame_limit(servers):
    srv = await servers(rate_limit=1.0, rate_burst=1)  # frames: 10 per second, 10 saved up
    async with peer(srv.ws_url("junk", user="ann")) as ann:
        await ann.until("connection")
        await ann.ws.send(json.dumps({"message": "in a binary frame"}).encode())
        assert (await ann.until("error"))["code"] == "binary_frame"
        for _ in range(9):
            await ann.send("{not json")
        codes = [(await ann.until("error"))["code"] for _ in range(9)]
        assert codes == ["bad_json"] * 9
        await ann.send("{not json")
        limited = await ann.until("error")
        assert limited["code"] == "rate_limited" and limited["retry_after_ms"] > 0
        await ann.send({"message": "valid, but the frame budget is spent", "client_id": "late"})
        err = await ann.until("error")
        assert (err["code"], err["client_id"]) == ("rate_limited", "late")
    assert await srv.store.count("junk") == 0


@pytest.mark.parametrize("message_id", [2**63, "9223372036854775808", "²", "٣", "9" * 5000])
async def test_crafted_receipt_ids_are_bad_field_not_1011(server, message_id):
    async with peer(server.ws_url("ids", user="ann")) as ann:
        await ann.until("connection")
        await ann.send({"type": "read_receipt", "messageId": message_id})
        assert (await ann.until("error"))["code"] == "bad_field"
        await ann.send({"type": "ping"})
        await ann.until("pong")  # still open


@pytest.mark.parametrize("after", ["%C2%B2", str(2**63), "9" * 5000, "-1", "1e3"])
async def test_bad_after_is_400_and_leaves_no_room(server, after):
    for _ in range(20):
        with pytest.raises(InvalidStatus) as info:
            async with peer(f"ws://127.0.0.1:{server.port}/ws/chat/leak/?after={after}"):
                pass
        assert info.value.response.status_code == 400
        assert json.loads(info.value.response.body)["code"] == "bad_field"
    assert server.hub.rooms == {}


async def test_history_and_stream_cursors_on_both_ports(servers):
    srv = await servers(http_port=0)
    async with httpx.AsyncClient(trust_env=False, timeout=WAIT) as http:
        for base in (srv.url, srv.http_url):
            for before in ("%C2%B2", str(2**63), "9" * 5000, "0", "x"):
                r = await http.get(f"{base}api/chat/demo/messages?before={before}")
                assert r.status_code == 400 and r.json()["code"] == "bad_field", (base, before)
            r = await http.get(f"{base}api/chat/demo/messages?before={2**63 - 1}")
            assert r.status_code == 200 and r.json()["messages"] == []
        for after in ("%D9%A3", str(2**63), "9" * 5000):
            r = await http.get(f"{srv.http_url}sse/chat/demo/?after={after}")
            assert r.status_code == 400 and r.json()["code"] == "bad_field"
        r = await http.get(f"{srv.http_url}sse/chat/demo/", headers={"Last-Event-ID": "²".encode()})
        assert r.status_code == 400
    assert srv.hub.rooms == {}


async def test_head_is_get_without_a_body_on_both_ports(servers):
    srv = await servers(http_port=0)
    async with httpx.AsyncClient(trust_env=False, timeout=WAIT) as http:
        for base in (srv.url, srv.http_url):
            for path in ("health", "api/chat/demo/messages?limit=5"):
                get, head = await http.get(base + path), await http.head(base + path)
                assert head.status_code == get.status_code == 200
                assert head.content == b"" and head.headers["content-length"] == get.headers["content-length"]
            missing = await http.head(base + "nope")
            assert missing.status_code == 404 and missing.content == b""
        assert (await http.get(srv.http_url + "health")).status_code == 200  # the server stayed up


async def test_post_refusals_name_the_message_and_say_when(servers):
    srv = await servers(http_port=0, rate_limit=1.0, rate_burst=1, limits=Limits(per_ip_factor=1.0))
    url = None
    async with httpx.AsyncClient(trust_env=False, timeout=WAIT) as http:
        url = f"{srv.http_url}sse/chat/post/messages"
        r = await http.post(url, json={"message": "x" * 5000, "client_id": "p-long", "user": "ann"})
        assert r.status_code == 400 and r.json()["client_id"] == "p-long" and r.json()["code"] == "too_long"
        r = await http.post(
            url, content=b'{"message": "\\ud800", "client_id": "p-s", "user": "ann"}', headers=JSON
        )
        assert r.status_code == 400 and r.json()["code"] == "bad_field" and r.json()["client_id"] == "p-s"
        assert (
            await http.post(url, json={"message": "one", "client_id": "p1", "user": "ann"})
        ).status_code == 201
        r = await http.post(url, json={"message": "two", "client_id": "p2", "user": "ann"})
        assert r.status_code == 429 and r.json()["client_id"] == "p2"
        assert int(r.headers["retry-after"]) >= 1 and r.json()["retry_after_ms"] > 0


async def test_a_lone_surrogate_in_a_user_name_is_refused_cleanly(servers):
    srv = await servers(http_port=0)
    async with httpx.AsyncClient(trust_env=False, timeout=WAIT) as http:
        r = await http.post(
            f"{srv.http_url}sse/chat/u/messages",
            content=b'{"message": "hi", "user": "\\udc00"}',
            headers=JSON,
        )
        assert r.status_code == 400 and r.json()["code"] == "bad_field"


# -- fuzzing a live server -------------------------------------------------------


class ThreadedServer:
    """A ChatServer on an event loop of its own thread, for blocking (Hypothesis) clients."""

    def __init__(self, db: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzzed-server", daemon=True)
        self.thread.start()
        self.server = self.call(ChatServer(port=0, db=db, streamer=EchoStreamer(), http_port=0).start())

    def call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(WAIT * 6)

    def close(self) -> None:
        self.call(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT)
        self.loop.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    srv = ThreadedServer(str(tmp_path_factory.mktemp("fuzz") / "fuzz.db"))
    with httpx.Client(trust_env=False, timeout=WAIT) as http:
        srv.http = http
        yield srv
        assert http.get(srv.server.url + "health").status_code == 200  # still up after all of it
    assert srv.call(_no_idle_room(srv.server))
    srv.close()


async def _no_idle_room(server: ChatServer) -> bool:
    return no_idle_room(server)


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
texts = st.text(max_size=30)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(texts, kids, max_size=3),
    max_leaves=10,
)
frame_types = st.sampled_from(["message", "typing", "read_receipt", "stop", "ping"]) | texts
field_names = st.sampled_from(
    ["type", "message", "client_id", "isTyping", "is_typing", "messageId", "message_id", "user"]
)
frames = st.dictionaries(field_names, json_values | st.integers(-(2**70), 2**70), max_size=5).flatmap(
    lambda obj: frame_types.map(lambda kind: {**obj, "type": kind})
)


def _assert_coded(status: int, body: bytes) -> None:
    assert status < 500, (status, body)
    if status >= 400:
        assert json.loads(body)["code"], body


@FUZZ
@given(
    st.lists(
        st.tuples(st.sampled_from(["user", "after", "x"]), texts | st.integers(-5, 2**70).map(str)),
        max_size=3,
    )
)
def test_fuzz_handshake_query(live, pairs):
    query = "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in pairs)
    url = f"ws://127.0.0.1:{live.server.port}/ws/chat/fuzz-hs/?{query}"
    try:
        with sync_connect(url, proxy=None, open_timeout=WAIT) as ws:
            assert json.loads(ws.recv(WAIT))["type"] == "connection"
    except InvalidStatus as exc:
        assert exc.response.status_code in (400, 404)
        _assert_coded(exc.response.status_code, exc.response.body)


@FUZZ
@given(st.lists(frames, min_size=1, max_size=4), st.booleans())
def test_fuzz_every_frame_type(live, batch, binary):
    url = f"ws://127.0.0.1:{live.server.port}/ws/chat/fuzz-frames/?user=fuzzer"
    with sync_connect(url, proxy=None, open_timeout=WAIT) as ws:
        assert json.loads(ws.recv(WAIT))["type"] == "connection"
        for frame in batch:
            data = json.dumps(frame)
            ws.send(data.encode() if binary else data)
        ws.send(protocol.Ping().encode())
        try:
            while (answer := json.loads(ws.recv(WAIT)))["type"] != "pong":
                if answer["type"] == "error" and answer.get("client_id") is not None:
                    assert answer["code"] in SENDER_CODES
        except ConnectionClosed as exc:  # never 1011: a crafted frame must not crash the handler
            pytest.fail(f"connection closed: {exc}")


@FUZZ
@given(
    st.lists(
        st.tuples(st.sampled_from(["before", "limit", "x"]), texts | st.integers(-5, 2**70).map(str)),
        max_size=3,
    )
)
def test_fuzz_history_query_on_both_ports(live, pairs):
    query = "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in pairs)
    for base in (live.server.url, live.server.http_url):
        r = live.http.get(f"{base}api/chat/fuzz-history/messages?{query}")
        _assert_coded(r.status_code, r.content)


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=60),
        frames.map(lambda f: json.dumps(f).encode()),
        json_values.map(lambda v: json.dumps(v).encode()),
    )
)
def test_fuzz_post_body(live, body):
    r = live.http.post(f"{live.server.http_url}sse/chat/fuzz-post/messages", content=body, headers=JSON)
    _assert_coded(r.status_code, r.content)
    assert r.status_code in (200, 201, 400, 429)


async def test_sse_clients_leaving_are_a_normal_event(servers, caplog):
    """Clients that vanish mid-stream (while the room is busy) are logged at debug level
    at most: no warning, no traceback."""
    srv = await servers(http_port=0, streamer=EchoStreamer(chunks=20, delay=0.005))
    async with httpx.AsyncClient(trust_env=False, timeout=WAIT) as http:
        with caplog.at_level(logging.DEBUG):
            for round_ in range(5):
                streams = []
                for i in range(10):
                    cm = http.stream("GET", f"{srv.http_url}sse/chat/leave/?user=u{i}")
                    response = await cm.__aenter__()
                    await response.aiter_lines().__anext__()  # the stream is open
                    streams.append(cm)
                r = await http.post(
                    f"{srv.http_url}sse/chat/leave/messages",
                    json={"message": f"busy {round_}", "user": "poster"},
                )
                assert r.status_code == 201
                for cm in streams:
                    await cm.__aexit__(None, None, None)
            async with peer(srv.ws_url("leave", user="w")) as w:  # the server is fine
                await w.until("connection")
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert loud == [], [r.getMessage() for r in loud]
