"""OpenAIStreamer against a real OpenAI-compatible HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import sqlite3

import pytest

from chatkit.errors import LLMError
from chatkit.llm import make_streamer, resolve_backend
from chatkit.llm.openai import OpenAIStreamer

from .conftest import peer
from .fake_openai import FakeOpenAI

CONVO = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]


async def collect(streamer, messages=CONVO):
    return [piece async for piece in streamer.stream(messages)]


async def test_streams_and_skips_empty_choices():
    async with FakeOpenAI() as fake:
        streamer = OpenAIStreamer(base_url=fake.base_url, api_key="k", model="m")
        assert await collect(streamer) == ["Hel", "lo", " there"]
        assert fake.requests[0]["stream"] is True
        assert fake.requests[0]["messages"] == CONVO
        assert fake.requests[0]["model"] == "m"


@pytest.mark.parametrize(
    "mode, code",
    [
        ("401", "llm_auth"),
        ("429", "llm_rate_limited"),
        ("drop", "llm_stream_dropped"),
        ("eof", "llm_stream_dropped"),
        ("done_only", "llm_stream_dropped"),
    ],
)
async def test_failures_become_llm_errors(mode, code):
    async with FakeOpenAI(mode) as fake:
        streamer = OpenAIStreamer(base_url=fake.base_url, api_key="sk-secret-123", model="m")
        with pytest.raises(LLMError) as info:
            await collect(streamer)
        assert info.value.code == code
        assert "sk-secret" not in info.value.message and "Traceback" not in info.value.message


async def test_a_clean_end_without_finish_reason_keeps_the_partial_text():
    async with FakeOpenAI("eof") as fake:
        streamer = OpenAIStreamer(base_url=fake.base_url, api_key="k", model="m")
        got = []
        with pytest.raises(LLMError) as info:
            async for piece in streamer.stream(CONVO):
                got.append(piece)
        assert got == ["Hel", "lo"] and info.value.code == "llm_stream_dropped"


async def test_unreachable():
    streamer = OpenAIStreamer(base_url="http://127.0.0.1:9/v1", api_key="k", model="m", timeout=2)
    with pytest.raises(LLMError) as info:
        await collect(streamer)
    assert info.value.code == "llm_unreachable"


async def test_read_timeout_on_stall():
    async with FakeOpenAI("stall") as fake:
        streamer = OpenAIStreamer(base_url=fake.base_url, api_key="k", model="m", timeout=0.5)
        got = []
        with pytest.raises(LLMError) as info:
            async for piece in streamer.stream(CONVO):
                got.append(piece)
        assert got == ["Hel", "lo"]
        assert info.value.code in ("llm_timeout", "llm_stream_dropped")


def test_environment_configures_the_streamer(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-for-logs-4242")
    monkeypatch.setenv("CHATKIT_MODEL", "llama3.2")
    streamer = make_streamer("auto")
    assert isinstance(streamer, OpenAIStreamer)
    assert streamer.model == "llama3.2" and streamer.base_url == "http://127.0.0.1:1/v1"
    described = streamer.describe()
    assert "llama3.2" in described and "http://127.0.0.1:1/v1" in described
    assert "4242" not in described and "sk-" not in described  # the key, or any part of it, never


def test_auto_backend_choice():
    assert resolve_backend("auto", {}) == "offline"
    assert resolve_backend("auto", {"OPENAI_API_KEY": "x"}) == "openai"
    assert resolve_backend("auto", {"OPENAI_BASE_URL": "http://h/v1"}) == "openai"
    assert resolve_backend("echo", {"OPENAI_API_KEY": "x"}) == "echo"
    with pytest.raises(ValueError):
        resolve_backend("gpt")


async def test_server_streams_from_openai_compatible_backend(servers, monkeypatch):
    async with FakeOpenAI(pieces=["Web", "Socket", "s!"]) as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        srv = await servers(llm="auto")
        assert srv.backend == "openai"
        async with peer(srv.ws_url("real", user="ann")) as ann:
            await ann.until("connection")
            await ann.send({"message": "first"})
            assert (await ann.until("ai_complete"))["message"] == "WebSockets!"
            await ann.send({"message": "second"})
            await ann.until("ai_complete")
        # Context: the follow-up request carries the earlier turns after the system prompt.
        roles = [(m["role"], m["content"]) for m in fake.requests[1]["messages"]]
        assert roles[0][0] == "system"
        assert roles[1:] == [("user", "first"), ("assistant", "WebSockets!"), ("user", "second")]


@pytest.mark.parametrize(
    "mode, code",
    [
        ("401", "llm_auth"),
        ("429", "llm_rate_limited"),
        ("drop", "llm_stream_dropped"),
        ("eof", "llm_stream_dropped"),
    ],
)
async def test_server_survives_backend_failure(servers, monkeypatch, mode, code):
    async with FakeOpenAI(mode) as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-123")
        srv = await servers(llm="openai")
        async with peer(srv.ws_url("fail", user="ann")) as ann:
            await ann.until("connection")
            await ann.send({"message": "hello?"})
            err = await ann.until("error")
            assert err["code"] == code and "sk-secret" not in err["message"]
            done = await ann.until("ai_complete")
            assert done["status"] == "error"
            fake.mode = "ok"  # the backend recovers: the same room keeps working
            await ann.send({"message": "again"})
            assert (await ann.until("ai_complete"))["status"] == "complete"
        con = sqlite3.connect(srv.config.db)
        status, content = con.execute(
            "SELECT status, content FROM messages WHERE id = ?", (done["id"],)
        ).fetchone()
        assert status == "error" and content == done["message"]
        if mode in ("drop", "eof"):
            assert content == "Hello"  # the partial reply is kept, and not called complete


async def test_server_cuts_a_stalled_stream(servers, monkeypatch):
    async with FakeOpenAI("stall") as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        srv = await servers(llm="openai", llm_idle_timeout=0.3)
        async with peer(srv.ws_url("stall", user="ann")) as ann:
            await ann.until("connection")
            await ann.send({"message": "hello?"})
            assert (await ann.until("error"))["code"] == "llm_timeout"
            done = await ann.until("ai_complete")
            assert done["status"] == "error" and done["message"] == "Hello"


@pytest.mark.skipif(
    not os.environ.get("OPENAI_API_KEY") or bool(os.environ.get("OPENAI_BASE_URL")),
    reason="needs OPENAI_API_KEY for the real OpenAI API",
)
async def test_real_openai_api():
    streamer = OpenAIStreamer()
    pieces = await asyncio.wait_for(collect(streamer, [{"role": "user", "content": "Say OK."}]), 60)
    assert "".join(pieces).strip()
