"""A room named in Hangul, end to end: WebSocket (ChatClient and a raw handshake), SSE
(SSEClient), history, curl with a percent-encoded URL, and the ChatPane.

The page is tested in ``test_browser_ko.py``; the validation rules in ``test_protocol.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus

from chatkit import protocol
from chatkit.client import ChatClient, FixedDelay
from chatkit.sse import SSEClient
from chatkit.widgets import ChatPane

from .conftest import TIMEOUT, peer

ROOM = "한국어-방"
ENCODED = "%ED%95%9C%EA%B5%AD%EC%96%B4-%EB%B0%A9"


async def test_chat_client_in_a_hangul_room(servers):
    srv = await servers()
    assert srv.ws_url(ROOM, user="지민").endswith(f"/ws/chat/{ENCODED}/?user=%EC%A7%80%EB%AF%BC")
    # ws_url() and a hand-written IRI with the room as typed reach the same room.
    iri = f"ws://127.0.0.1:{srv.port}/ws/chat/{ROOM}/"
    async with ChatClient(srv.ws_url(ROOM), user="지민") as jimin, ChatClient(iri, user="민준") as minjun:
        async with asyncio.timeout(TIMEOUT):
            await jimin.send("안녕하세요")
            message = await minjun.next_event("message")
            reply = await minjun.next_event("ai_complete")
    assert (message["message"], message["user"], reply["message"]) == ("안녕하세요", "지민", "안녕하세요")
    assert [m.content for m in await srv.store.history(ROOM)] == ["안녕하세요", "안녕하세요"]


async def test_raw_handshake_reports_the_nfc_room_and_refuses_bad_ones(servers):
    srv = await servers()
    # The same room spelled with conjoining jamo (NFD) in the URL: one room, NFC.
    nfd = ENCODED.replace("%ED%95%9C", "%E1%84%92%E1%85%A1%E1%86%AB")
    async with peer(f"ws://127.0.0.1:{srv.port}/ws/chat/{nfd}/?user=ann") as ann:
        hello = await ann.recv()
        assert hello["type"] == "connection" and hello["session_id"] == ROOM
        assert srv.hub.online(ROOM) == ["ann"]
    for bad in ["%E2%80%8B", "%E3%85%A4", "%ED%95", "a%20b", "%E2%80%AEevil"]:
        with pytest.raises(InvalidStatus) as info:
            async with peer(f"ws://127.0.0.1:{srv.port}/ws/chat/{bad}/"):
                pass
        assert info.value.response.status_code == 404


async def test_sse_client_and_history_in_a_hangul_room(servers):
    srv = await servers(http_port=0)
    async with SSEClient(srv.http_url, ROOM, user="서연") as sse:
        assert f"/sse/chat/{ENCODED}/" in sse.stream_url
        async with asyncio.timeout(TIMEOUT):
            events = sse.events()
            hello = await anext(events)
            assert hello["type"] == "connection" and hello["session_id"] == ROOM
            posted = await sse.post("스트리밍 테스트")
            assert posted["message"] == "스트리밍 테스트"
            async for event in events:
                if event.get("type") == "ai_complete":
                    assert event["message"] == "스트리밍 테스트"
                    break
            await events.aclose()
    import httpx

    async with httpx.AsyncClient(trust_env=False) as http:
        for base in (srv.url, srv.http_url):  # served on both ports
            page = (await http.get(f"{base}api/chat/{ENCODED}/messages")).json()
            assert page["session_id"] == ROOM
            assert [m["message"] for m in page["messages"]] == ["스트리밍 테스트"] * 2
            refused = await http.get(f"{base}api/chat/%E2%80%8B/messages")
            assert refused.status_code == 404 and refused.json()["code"] == "bad_session_id"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_with_a_percent_encoded_room(servers):
    srv = await servers(http_port=0)

    async def curl(*args: str) -> dict:
        proc = await asyncio.create_subprocess_exec(
            "curl", "-sS", "--noproxy", "*", *args, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        assert proc.returncode == 0
        return json.loads(out)

    posted = await curl(
        "-H",
        "Content-Type: application/json",
        "--data",
        json.dumps({"message": "curl에서 보낸 메시지", "user": "curl"}),
        f"{srv.http_url}sse/chat/{ENCODED}/messages",
    )
    assert posted["type"] == "message" and posted["message"] == "curl에서 보낸 메시지"
    page = await curl(f"{srv.url}api/chat/{ENCODED}/messages")
    assert page["session_id"] == ROOM and page["messages"][0]["message"] == "curl에서 보낸 메시지"
    assert protocol.session_id_to_path(ROOM) == ENCODED


async def test_chat_pane_in_a_hangul_room(servers):
    srv = await servers()
    async with ChatClient(srv.ws_url(ROOM), user="선생님") as teacher:
        await teacher.send("먼저 온 메시지")
    for url_or_server in (srv, f"ws://127.0.0.1:{srv.port}/"):
        pane = await ChatPane(url_or_server, ROOM, user="학생", lang="ko", policy=FixedDelay(0.05)).start()
        try:
            assert pane.model.messages[0]["text"] == "먼저 온 메시지"  # history over the encoded URL
            assert "연결됨" in pane.status.value
            done = asyncio.get_running_loop().create_future()
            pane.client.on_event(
                lambda e: e.get("type") == "ai_complete" and not done.done() and done.set_result(e)
            )
            pane.input.value = "패널에서 보낸 메시지"
            pane._on_input_msg(pane.input, {"event": "submit"}, [])
            assert (await asyncio.wait_for(done, TIMEOUT))["message"] == "패널에서 보낸 메시지"
        finally:
            await pane.aclose()
    texts = [m.content for m in await srv.store.history(ROOM)]
    assert texts.count("패널에서 보낸 메시지") == 4  # two panes × (message + echo)


SEED_CLIENT = Path(__file__).resolve().parent / "seed" / "websocket_service.mjs"


@pytest.mark.parametrize("room", ["demo", ROOM])
async def test_the_seeds_typescript_client_still_works(servers, room):
    """The seed's WebSocketService (types removed) in Node: ASCII rooms as before; a Hangul room
    too, because the WHATWG URL parser percent-encodes the path of `ws://…/ws/chat/${sessionId}/`."""
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI"):
            pytest.fail("node is required in CI")
        pytest.skip("node is not installed")
    srv = await servers()
    proc = await asyncio.create_subprocess_exec(
        node,
        "--experimental-websocket",
        str(SEED_CLIENT),
        f"127.0.0.1:{srv.port}",
        room,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    assert proc.returncode == 0, err.decode()
    seen = json.loads(out)
    assert seen[0]["type"] == "connection"
    assert {"type": "message", "content": "seed client says hi", "isUser": True} in seen
    assert "".join(e["content"] for e in seen if e["type"] == "chunk") == "seed client says hi"
    assert seen[-1] == {"type": "complete", "content": "seed client says hi"}
    assert [m.content for m in await srv.store.history(room)] == ["seed client says hi"] * 2
