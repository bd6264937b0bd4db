"""The transport-neutral HTTP answers, without a server: history, health, page config, CORS, static files."""

from __future__ import annotations

import json

import pytest

from chatkit import protocol
from chatkit.endpoints import Endpoints, HTTPResponse, cors_headers, json_response
from chatkit.store import Store


@pytest.fixture
async def endpoints():
    async with await Store.open(":memory:") as store:
        yield Endpoints(store, "echo", allowed_origins=["http://class.example"], max_text=123)


def body(response: HTTPResponse) -> object:
    return json.loads(response.body)


def test_json_response_has_its_length_and_type_first():
    r = json_response(201, {"ok": "✓"}, [("X-Extra", "1")])
    assert r.status == 201 and r.reason == "Created"
    assert r.headers[:2] == [
        ("Content-Type", "application/json; charset=utf-8"),
        ("Content-Length", str(len(r.body))),
    ]
    assert r.headers[-1] == ("X-Extra", "1") and body(r) == {"ok": "✓"}


def test_cors_is_limited_to_the_allowed_origins():
    assert cors_headers(None, ["http://a"]) == []
    assert cors_headers("http://a", None) == [("Access-Control-Allow-Origin", "*")]
    assert cors_headers("http://a", ["http://a"]) == [
        ("Access-Control-Allow-Origin", "http://a"),
        ("Vary", "Origin"),
    ]
    assert cors_headers("http://evil", ["http://a"]) == [("Vary", "Origin")]


async def test_health_and_page_config(endpoints):
    health = await endpoints.get("/health", "", None, page=False)
    assert health is not None and body(health) == {"status": "ok", "llm": "echo"}
    assert await endpoints.get("/config.json", "", None, page=False) is None  # only where the page is served
    endpoints.http_port = 4321
    config = await endpoints.get("/config.json", "", None, page=True)
    assert config is not None
    assert (
        body(config).items()
        >= {"protocol": protocol.PROTOCOL_VERSION, "http_port": 4321, "llm": "echo", "max_text": 123}.items()
    )


async def test_history_pages_and_refusals(endpoints):
    ids = [(await endpoints.store.append("room", "u", f"m{i}")).message.id for i in range(5)]
    page = await endpoints.get("/api/chat/room/messages", "limit=2", "http://class.example", page=False)
    assert page is not None and page.status == 200
    assert ("Access-Control-Allow-Origin", "http://class.example") in page.headers
    payload = body(page)
    assert [m["id"] for m in payload["messages"]] == ids[-2:] and payload["has_more"] is True
    older = body(await endpoints.history("room", f"before={ids[-2]}&limit=10"))
    assert [m["id"] for m in older["messages"]] == ids[:3] and older["has_more"] is False
    for query in ("limit=x", "before=0", "limit=0"):
        refused = await endpoints.history("room", query)
        assert refused.status == 400 and body(refused)["code"] == "bad_field"
    bad = await endpoints.get("/api/chat/bad.id/messages", "", None, page=False)
    assert bad is not None and bad.status == 404 and body(bad)["code"] == "bad_session_id"
    assert await endpoints.get("/api/chat/room/messages/extra", "", None, page=False) is None


async def test_static_files_only_from_the_page_directory(endpoints):
    index = await endpoints.get("/", "", None, page=True)
    assert index is not None and index.status == 200 and b"<html" in index.body.lower()
    assert ("Content-Type", "text/html; charset=utf-8") in index.headers
    script = endpoints.static("/chat.js")
    assert script is not None and ("Content-Type", "text/javascript; charset=utf-8") in script.headers
    for path in ("/../store.py", "/.hidden.js", "/sub/dir.js", "/__init__.py", "/missing.css"):
        assert endpoints.static(path) is None, path
    assert await endpoints.get("/", "", None, page=False) is None  # the HTTP port serves no page
