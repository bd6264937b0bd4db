"""Every refusal of issue #14, against real servers: sign-in (401 coded), impersonation,
names, origins on every route, JSON-only POST, deadlines, connection and stream caps,
rate limits keyed on who you are, /v1 limits in OpenAI's error shape, roles, CSP, TLS."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time

import httpx
import openai
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from chatkit import auth
from chatkit.auth import Authenticator
from chatkit.client import ChatClient
from chatkit.limits import Limits
from chatkit.llm import EchoStreamer
from chatkit.sse import SSEClient

from .conftest import TIMEOUT, peer, until_model

T = TIMEOUT / 2  # this module's waits (seconds): half the suite's one constant
SECRET = "test-secret"
EVIL = "http://127.0.0.1:9"  # another local origin: same site, other port


def signed_in(**options):
    return dict(
        auth=Authenticator.from_options(secret=SECRET, join_code="blue-42", teacher_code="staff-7"),
        http_port=0,
        **options,
    )


@pytest.fixture
async def secure(servers):
    return await servers(**signed_in())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def ws_refusal(url: str, **kwargs) -> tuple[int, dict]:
    with pytest.raises(InvalidStatus) as info:
        async with connect(url, proxy=None, open_timeout=T, **kwargs):
            pass
    response = info.value.response
    return response.status_code, json.loads(response.body)


def expired_token() -> str:
    return auth.TokenSigner(SECRET, clock=lambda: time.time() - 3600).issue("ann", ttl=60)


# -- sign-in -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers, code",
    [
        ({}, "auth_required"),
        ({"Authorization": "Bearer not-a-token"}, "bad_token"),
        ("expired", "expired_token"),
        ({"Authorization": "Bearer " + auth.TokenSigner("another-secret").issue("ann")}, "bad_token"),
    ],
)
async def test_handshake_without_a_valid_token_is_refused_401(secure, headers, code):
    if headers == "expired":
        headers = bearer(expired_token())
    status, body = await ws_refusal(secure.ws_url("r"), additional_headers=headers)
    assert (status, body["code"]) == (401, code)


async def test_every_http_route_refuses_without_a_token(secure):
    routes = [
        ("GET", f"{secure.http_url}sse/chat/r/"),
        ("POST", f"{secure.http_url}sse/chat/r/messages"),
        ("GET", f"{secure.http_url}api/chat/r/messages"),
        ("GET", f"{secure.url}api/chat/r/messages"),
        ("GET", f"{secure.http_url}v1/models"),
        ("POST", f"{secure.http_url}v1/chat/completions"),
    ]
    async with httpx.AsyncClient(trust_env=False, timeout=T) as client:
        for method, url in routes:
            body = (
                {"message": "hi", "messages": [{"role": "user", "content": "x"}]}
                if method == "POST"
                else None
            )
            r = await client.request(method, url, json=body)
            assert r.status_code == 401, (method, url)
            body = r.json()
            code = body["error"]["code"] if "/v1/" in url else body["code"]
            assert code == "auth_required", (method, url)
            assert r.headers["www-authenticate"].startswith("Bearer")
        # the page and health stay public: the page is where one signs in
        assert (await client.get(secure.url)).status_code == 200
        assert (await client.get(f"{secure.http_url}health")).status_code == 200


async def test_the_name_comes_from_the_token_and_impersonation_is_refused(secure):
    token = secure.token("ann")
    # a different ?user= at the handshake: refused
    status, body = await ws_refusal(secure.ws_url("imp", user="teacher"), additional_headers=bearer(token))
    assert (status, body["code"]) == (403, "name_mismatch")
    async with peer(secure.ws_url("imp"), additional_headers=bearer(token)) as ann:
        hello = await ann.until("connection")
        assert hello["user"] == "ann"
        async with httpx.AsyncClient(trust_env=False, timeout=T, headers=bearer(token)) as client:
            url = f"{secure.http_url}sse/chat/imp/messages"
            spoof = await client.post(url, json={"message": "I am the teacher", "user": "teacher"})
            assert (spoof.status_code, spoof.json()["code"]) == (403, "name_mismatch")
            ok = await client.post(url, json={"message": "hello"})
            assert ok.status_code == 201 and ok.json()["user"] == "ann"
        msg = await ann.until("message", is_user=True)
        assert (msg["user"], msg["message"]) == ("ann", "hello")


async def test_login_with_the_join_code_sets_an_httponly_cookie_that_opens_every_route(secure):
    async with httpx.AsyncClient(trust_env=False, timeout=T) as client:
        login = f"{secure.http_url}auth/login"
        wrong = await client.post(login, json={"name": "ann", "code": "blue-41"})
        assert (wrong.status_code, wrong.json()["code"]) == (401, "bad_join_code")
        reserved = await client.post(login, json={"name": "AI", "code": "blue-42"})
        assert (reserved.status_code, reserved.json()["code"]) == (400, "reserved_name")
        good = await client.post(login, json={"name": "ann", "code": "blue-42"})
        assert good.status_code == 200 and good.json()["role"] == "student"
        cookie = good.headers["set-cookie"]
        assert (
            "HttpOnly" in cookie and "SameSite=Strict" in cookie and cookie.startswith(auth.COOKIE_NAME + "=")
        )
        teacher = await client.post(login, json={"name": "Ms Kim", "code": "staff-7"})
        assert teacher.json()["role"] == "teacher"
    token = good.json()["token"]
    async with peer(
        secure.ws_url("cookie"), additional_headers={"Cookie": f"{auth.COOKIE_NAME}={token}"}
    ) as ann:
        assert (await ann.until("connection"))["user"] == "ann"


async def test_clients_take_a_token(secure):
    token = secure.token("bob")
    async with ChatClient(secure.ws_url("cl"), token=token) as client:
        async with SSEClient(secure.http_url, "cl", token=token) as sse:
            stored = await sse.post("over SSE")
            assert stored["user"] == "bob"
        await client.send("over WebSocket")
        async with asyncio.timeout(T):
            async for event in client:
                if event.get("type") == "message" and event.get("message") == "over WebSocket":
                    assert event["user"] == "bob"
                    break


async def test_tokens_are_never_logged(secure, caplog):
    caplog.set_level(logging.INFO, logger="chatkit")
    token = expired_token()
    await ws_refusal(secure.ws_url("log") + f"?token={token}")
    async with httpx.AsyncClient(trust_env=False, timeout=T) as client:
        await client.get(f"{secure.http_url}api/chat/log/messages?token={token}")
    assert "expired_token" in caplog.text
    assert token not in caplog.text and token.split(".")[-1] not in caplog.text


# -- names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, code",
    [
        ("AI", "reserved_name"),
        ("ａｉ", "reserved_name"),
        ("ann\u202egnp", "bad_user"),
        ("te\u200bacher", "bad_user"),
    ],
)
async def test_reserved_and_invisible_names_are_refused_on_both_transports(servers, name, code):
    srv = await servers(http_port=0)
    status, body = await ws_refusal(srv.ws_url("names", user=name))
    assert (status, body["code"]) == (400, code)
    async with httpx.AsyncClient(trust_env=False, timeout=T) as client:
        r = await client.post(f"{srv.http_url}sse/chat/names/messages", json={"message": "x", "user": name})
        assert (r.status_code, r.json()["code"]) == (400, code)
        r = await client.get(f"{srv.http_url}sse/chat/names/", params={"user": name})
        assert (r.status_code, r.json()["code"]) == (400, code)


# -- origins ---------------------------------------------------------------------------


async def test_a_foreign_origin_is_refused_403_on_every_route(servers):
    srv = await servers(http_port=0)
    status, body = await ws_refusal(srv.ws_url("o"), origin=EVIL)
    assert (status, body["code"]) == (403, "origin_not_allowed")
    routes = [
        ("GET", f"{srv.http_url}sse/chat/o/"),
        ("POST", f"{srv.http_url}sse/chat/o/messages"),
        ("GET", f"{srv.http_url}api/chat/o/messages"),
        ("GET", f"{srv.url}api/chat/o/messages"),
        ("GET", f"{srv.http_url}v1/models"),
        ("POST", f"{srv.http_url}v1/chat/completions"),
        ("OPTIONS", f"{srv.http_url}sse/chat/o/messages"),
    ]
    async with httpx.AsyncClient(trust_env=False, timeout=T) as client:
        for method, url in routes:
            body = (
                {"message": "x", "messages": [{"role": "user", "content": "x"}]} if method == "POST" else None
            )
            r = await client.request(method, url, headers={"Origin": EVIL}, json=body)
            assert r.status_code == 403, (method, url)
            body = r.json()
            assert (body["error"]["code"] if "/v1/" in url else body["code"]) == "origin_not_allowed"
            assert "access-control-allow-origin" not in r.headers
        # the server's own page (the WebSocket port) may call the HTTP port, with credentials
        own = f"http://127.0.0.1:{srv.port}"
        r = await client.post(
            f"{srv.http_url}sse/chat/o/messages",
            headers={"Origin": own},
            json={"message": "from my page", "user": "ann"},
        )
        assert r.status_code == 201
        assert r.headers["access-control-allow-origin"] == own
        assert r.headers["access-control-allow-credentials"] == "true"
    page = await srv.store.history_page("o", before=None, limit=10)
    assert [m.content for m in page.messages if m.is_user] == ["from my page"]  # nothing else stored
    async with peer(srv.ws_url("o"), origin=f"http://localhost:{srv.port}") as ok:
        await ok.until("connection")


async def test_simple_cross_site_posts_never_reach_the_route(servers):
    srv = await servers(http_port=0)
    async with httpx.AsyncClient(trust_env=False, timeout=T) as client:
        for url in (f"{srv.http_url}sse/chat/p/messages", f"{srv.http_url}v1/chat/completions"):
            r = await client.post(
                url,
                content=json.dumps({"message": "x", "user": "eve"}),
                headers={"Content-Type": "text/plain"},
            )
            assert r.status_code == 415
    assert await srv.store.count("p") == 0


# -- hardened ports ------------------------------------------------------------------


async def read_all(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(T):
        return await reader.read()


@pytest.mark.parametrize("port", ["ws", "http"])
async def test_a_head_sent_a_byte_at_a_time_meets_one_deadline(servers, port):
    srv = await servers(http_port=0, limits=Limits(head_timeout=0.5))
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port if port == "ws" else srv.http_port)
    started = time.monotonic()
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
    closed = asyncio.ensure_future(reader.read(200))  # the first bytes of an answer, or EOF
    for byte in head:  # one byte every 50 ms: each read is quick, the head never ends
        if closed.done():
            break
        writer.write(bytes([byte]))
        await asyncio.wait([closed], timeout=0.05)
    async with asyncio.timeout(T):
        try:
            answer = await closed
        except ConnectionResetError:  # the WebSocket port aborts; our late bytes may draw a reset
            answer = b""
    elapsed = time.monotonic() - started
    writer.close()
    assert elapsed < 0.5 + T / 2  # closed by the deadline, long before the head could end
    if port == "http":
        assert answer.startswith(b"HTTP/1.1 408")


async def open_from(number: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", number, local_addr=(source, 0))


async def served_from(stack: contextlib.AsyncExitStack, srv, port: str, source: str) -> None:
    """A connection from ``source`` whose request head the server has read: a WebSocket, or an SSE stream."""
    if port == "ws":
        await stack.enter_async_context(connect(srv.ws_url("caps"), proxy=None, local_addr=(source, 0)))
        return
    reader, writer = await open_from(srv.http_port, source)
    writer.write(b"GET /sse/chat/caps/ HTTP/1.1\r\nHost: x\r\n\r\n")
    async with asyncio.timeout(T):
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")

    async def leave() -> None:  # half-close: the stream ends, the server closes, we read its EOF
        writer.write_eof()
        await read_all(reader)
        writer.close()

    stack.push_async_callback(leave)


@pytest.mark.parametrize("port", ["ws", "http"])
async def test_connection_caps_answer_503_at_once_per_address_and_in_total(servers, port):
    srv = await servers(http_port=0, limits=Limits(max_connections=4, max_connections_per_ip=2))
    number = srv.port if port == "ws" else srv.http_port
    slots = srv.guard.connections[port]
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(2):
            await served_from(stack, srv, port, "127.0.0.2")
        third, _ = await open_from(number, "127.0.0.2")  # one address over its cap
        answer = await read_all(third)
        assert answer.startswith(b"HTTP/1.1 503") and b"Retry-After: " in answer
        assert b"too_many_connections" in answer
        for _ in range(2):
            await served_from(stack, srv, port, "127.0.0.3")  # another address: still room in total
        fifth, _ = await open_from(number, "127.0.0.4")  # total cap reached, every connection served
        assert (await read_all(fifth)).startswith(b"HTTP/1.1 503")
        assert slots.open == 4 and slots.refused == 2 and slots.evicted == 0
    # they left (each close waited for the server's side): every slot is back
    assert slots.open == 0
    async with httpx.AsyncClient(trust_env=False, timeout=T) as client:
        assert (await client.get(f"http://127.0.0.1:{number}/health")).status_code == 200


@pytest.mark.parametrize("port", ["ws", "http"])
async def test_a_full_port_closes_the_oldest_connection_without_a_request_head(servers, port):
    """Slow, head-less connections from several addresses fill the total cap (none over its
    address's cap): a normal client still gets in, at once, in place of the oldest of them."""
    srv = await servers(http_port=0, limits=Limits(max_connections=4, max_connections_per_ip=2))
    number = srv.port if port == "ws" else srv.http_port
    slow = []
    try:
        for source in ("127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.3"):
            reader, writer = await open_from(number, source)
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # ... and never more
            slow.append((reader, writer))
        if port == "ws":
            async with peer(srv.ws_url("normal")) as p:
                assert (await p.until("connection"))["type"] == "connection"
        else:
            async with httpx.AsyncClient(trust_env=False, timeout=T) as client:
                assert (await client.get(f"http://127.0.0.1:{number}/health")).status_code == 200
        evicted = await read_all(slow[0][0])  # the oldest (accepted first: the accept queue is FIFO)
        assert evicted.startswith(b"HTTP/1.1 503") and b"too_many_connections" in evicted
        assert srv.guard.connections[port].evicted == 1
    finally:
        for _, writer in slow:
            writer.close()


async def test_event_streams_are_capped_per_address(servers):
    srv = await servers(http_port=0, limits=Limits(max_streams_per_ip=2))
    url = f"{srv.http_url}sse/chat/cap/"
    async with (
        peer(srv.ws_url("cap", user="watcher")) as watcher,
        httpx.AsyncClient(trust_env=False, timeout=T) as client,
    ):
        await watcher.until("connection")
        async with (
            client.stream("GET", f"{url}?user=s1") as one,
            client.stream("GET", f"{url}?user=s2") as two,
        ):
            assert one.status_code == two.status_code == 200
            third = await client.get(url)
            assert (third.status_code, third.json()["code"]) == (429, "too_many_streams")
            assert int(third.headers["retry-after"]) >= 1
        # The slots come back when the streams end: a stream's slot is released in the same step
        # as its member leaves, so the watcher reading both departures is the ordering point.
        assert {(await watcher.until("user_leave"))["username"] for _ in range(2)} == {"s1", "s2"}
        assert srv.guard.streams.open == 0
        async with client.stream("GET", url) as again:
            assert again.status_code == 200


async def test_rate_limits_follow_the_token_not_the_declared_name(servers):
    srv = await servers(**signed_in(rate_limit=1, rate_burst=3))
    ann, bob = srv.token("ann"), srv.token("bob")
    url = f"{srv.http_url}sse/chat/rl/messages"
    async with httpx.AsyncClient(trust_env=False, timeout=T) as client:
        codes = [
            (await client.post(url, json={"message": f"m{i}"}, headers=bearer(ann))).status_code
            for i in range(5)
        ]
        assert codes[:3] == [201] * 3 and 429 in codes[3:]
        # the WebSocket shares ann's bucket
        async with peer(srv.ws_url("rl"), additional_headers=bearer(ann)) as ws:
            await ws.until("connection")
            await ws.send({"message": "one more"})
            assert (await ws.until("error"))["code"] == "rate_limited"
        # bob has his own
        assert (await client.post(url, json={"message": "bob"}, headers=bearer(bob))).status_code == 201


async def test_rooms_per_address_are_bounded_and_empty_rooms_freed(servers, monkeypatch):
    srv = await servers(http_port=0, limits=Limits(rooms_per_ip=2))
    left: asyncio.Queue[str] = asyncio.Queue()
    leave = srv.hub.leave

    def leave_and_tell(member) -> None:
        leave(member)
        left.put_nowait(member.room.session_id)

    monkeypatch.setattr(srv.hub, "leave", leave_and_tell)
    for room in ("a", "b"):
        async with peer(srv.ws_url(room)) as p:
            await p.until("connection")
        async with asyncio.timeout(T):
            assert await left.get() == room  # the server has handled the leave
    assert srv.hub.rooms == {}  # both left: their memory is freed
    status, body = await ws_refusal(srv.ws_url("c"))
    assert (status, body["code"]) == (429, "too_many_rooms")


# -- /v1 -----------------------------------------------------------------------------


async def test_v1_honours_max_tokens_limits_its_rate_and_speaks_openai_errors(servers):
    srv = await servers(**signed_in(limits=Limits(v1_rate=0.01, v1_burst=2, v1_max_tokens=50)))
    token = srv.token("ann")
    client = openai.AsyncOpenAI(base_url=f"{srv.http_url}v1", api_key=token, max_retries=0)
    messages = [{"role": "user", "content": "one two three four five six seven eight"}]
    done = await client.chat.completions.create(model="m", messages=messages, max_tokens=3)
    assert done.choices[0].finish_reason == "length"
    assert len(done.choices[0].message.content.split()) == 3
    pieces = []
    stream = await client.chat.completions.create(model="m", messages=messages, max_tokens=2, stream=True)
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
    assert len(pieces) == 2
    with pytest.raises(openai.RateLimitError) as limited:
        await client.chat.completions.create(model="m", messages=messages)
    assert (limited.value.status_code, limited.value.code) == (429, "rate_limited")
    anonymous = openai.AsyncOpenAI(base_url=f"{srv.http_url}v1", api_key="not-a-token", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        await anonymous.models.list()
    assert (refused.value.status_code, refused.value.code) == (401, "bad_token")
    with pytest.raises(openai.BadRequestError) as bad:
        await openai.AsyncOpenAI(
            base_url=f"{srv.http_url}v1", api_key=srv.token("bob"), max_retries=0
        ).chat.completions.create(model="m", messages=messages, max_tokens=0)
    assert (bad.value.status_code, bad.value.code) == (400, "invalid_value")


# -- roles ---------------------------------------------------------------------------


async def test_a_student_stops_only_the_reply_to_their_own_message(servers):
    srv = await servers(**signed_in(streamer=EchoStreamer(chunks=400, delay=0.01)))
    teacher = srv.token("Ms Kim", "teacher")
    async with (
        peer(srv.ws_url("stop"), additional_headers=bearer(srv.token("ann"))) as ann,
        peer(srv.ws_url("stop"), additional_headers=bearer(srv.token("bob"))) as bob,
        peer(srv.ws_url("stop"), additional_headers=bearer(teacher)) as kim,
    ):
        for p in (ann, bob, kim):
            await p.until("connection")
        await ann.send({"message": "a long answer please"})
        await bob.until("ai_chunk")
        await bob.send({"type": "stop"})
        assert (await bob.until("error"))["code"] == "forbidden"
        await kim.send({"type": "stop"})
        done = await ann.until("ai_complete")
        assert done["status"] == "cancelled"
        await ann.send({"message": "again"})
        await ann.until("ai_chunk")
        await ann.send({"type": "stop"})  # her own: allowed
        assert (await ann.until("ai_complete"))["status"] == "cancelled"


# -- the page ----------------------------------------------------------------------


async def test_the_page_is_served_with_csp_and_friends(servers):
    srv = await servers(http_port=0)
    async with httpx.AsyncClient(trust_env=False, timeout=T) as client:
        page = await client.get(srv.url)
        js = await client.get(f"{srv.url}chat.js")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'self'" in csp
    assert f"http://127.0.0.1:{srv.http_port}" in csp  # connect-src: its own SSE port
    for r in (page, js):
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"


# -- TLS -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca():
    trustme = pytest.importorskip("trustme")
    return trustme.CA()


async def test_tls_serves_wss_and_https_on_both_ports(servers, ca, tmp_path):
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    srv = await servers(**signed_in(ssl=server_ctx))
    assert srv.ws_url("tls").startswith("wss://") and srv.http_url.startswith("https://")
    token = srv.token("ann")
    async with peer(srv.ws_url("tls"), ssl=client_ctx, additional_headers=bearer(token)) as ann:
        assert (await ann.until("connection"))["user"] == "ann"
        async with SSEClient(srv.http_url, "tls", token=token, verify=client_ctx) as sse:
            await sse.post("over https")
        assert (await ann.until("message", is_user=True))["message"] == "over https"
    async with httpx.AsyncClient(trust_env=False, timeout=T, verify=client_ctx) as client:
        assert (await client.get(srv.url)).status_code == 200
    from chatkit.widgets import ChatPane

    pane = await ChatPane(srv, "tls", user="bob", token=srv.token("bob"), ssl=client_ctx).start()
    try:
        await until_model(lambda: any(m["text"] == "over https" for m in pane.model.messages), pane)
        assert pane.model.state == "open"
    finally:
        await pane.aclose()
    # a client that does not trust the CA is refused at the TLS handshake
    with pytest.raises(ssl.SSLCertVerificationError):
        async with connect(srv.ws_url("tls"), proxy=None, ssl=ssl.create_default_context(), open_timeout=T):
            pass


@pytest.mark.parametrize("port", ["ws", "http"])
async def test_a_tls_handshake_that_never_comes_meets_the_head_deadline(servers, ca, port):
    """Before its TLS handshake a connection is not counted yet: the head's deadline bounds it."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    srv = await servers(http_port=0, ssl=server_ctx, limits=Limits(head_timeout=0.5))
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port if port == "ws" else srv.http_port)
    try:
        assert await read_all(reader) == b""  # closed by the server long before read_all's limit
    finally:
        writer.close()


# -- delete ------------------------------------------------------------------------------


async def test_a_teacher_deletes_a_message_students_may_not_and_replays_carry_the_tombstone(servers):
    srv = await servers(**signed_in())
    teacher, ann = bearer(srv.token("Ms Kim", "teacher")), bearer(srv.token("ann"))
    async with (
        peer(srv.ws_url("del"), additional_headers=ann) as a,
        peer(srv.ws_url("del"), additional_headers=teacher) as kim,
    ):
        await a.until("connection")
        await kim.until("connection")
        await a.send({"message": "the answer is 42"})
        msg = await kim.until("message", is_user=True)
        await a.send({"type": "delete", "message_id": msg["id"]})
        assert (await a.until("error"))["code"] == "forbidden"
        await kim.send({"type": "delete", "message_id": 999_999})
        assert (await kim.until("error"))["code"] == "unknown_message"
        await kim.send({"type": "delete", "message_id": msg["id"]})
        for p in (a, kim):
            gone = await p.until("message_deleted")
            assert gone == {"type": "message_deleted", "message_id": msg["id"], "by": "Ms Kim"}
    stored = await srv.store.get(msg["id"])
    assert (stored.status, stored.content) == ("deleted", "")
    async with peer(srv.ws_url("del", after=0), additional_headers=ann) as late:
        replayed = await late.until("message", id=msg["id"])
        assert replayed["deleted"] is True and replayed["message"] == ""
    async with httpx.AsyncClient(trust_env=False, timeout=T, headers=ann) as client:
        page = (await client.get(f"{srv.http_url}api/chat/del/messages")).json()
    assert [m["deleted"] for m in page["messages"] if m["id"] == msg["id"]] == [True]


async def test_delete_over_http_for_sse_teachers(servers):
    srv = await servers(**signed_in())
    teacher, ann = bearer(srv.token("Ms Kim", "teacher")), bearer(srv.token("ann"))
    async with httpx.AsyncClient(trust_env=False, timeout=T) as client:
        posted = (
            await client.post(f"{srv.http_url}sse/chat/hd/messages", json={"message": "oops"}, headers=ann)
        ).json()
        url = f"{srv.http_url}sse/chat/hd/messages/{posted['id']}"
        refused = await client.delete(url, headers=ann)
        assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")
        done = await client.delete(url, headers=teacher)
        assert done.json() == {"type": "message_deleted", "message_id": posted["id"], "by": "Ms Kim"}
        again = await client.delete(url, headers=teacher)
        assert (again.status_code, again.json()["code"]) == (404, "unknown_message")
        evil = await client.delete(url, headers={**teacher, "Origin": "http://127.0.0.1:9"})
        assert evil.status_code == 403 and evil.json()["code"] == "origin_not_allowed"
    assert (await srv.store.get(posted["id"])).status == "deleted"


def test_the_pane_model_applies_message_deleted():
    from chatkit.widgets import ChatModel

    model = ChatModel(user="ann")
    model.apply({"type": "message", "id": 1, "message": "oops", "is_user": True, "user": "ann"})
    model.apply({"type": "message", "id": 2, "message": "fine", "is_user": True, "user": "ann"})
    model.apply({"type": "message_deleted", "message_id": 1, "by": "Ms Kim"})
    assert [m["id"] for m in model.messages] == [2]
    model.apply({"type": "message", "id": 1, "message": "", "is_user": True, "user": "ann", "deleted": True})
    assert [m["id"] for m in model.messages] == [2]
