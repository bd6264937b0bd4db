"""The offline tutor: relevance, language, honesty, determinism, pace, cancellation."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from chatkit.llm import EchoStreamer, OfflineTutor
from chatkit.llm.offline import KnowledgeBase, detect_language

from .conftest import peer


def ask(text: str, history: list[dict] | None = None) -> list[dict]:
    return [{"role": "system", "content": "s"}, *(history or []), {"role": "user", "content": text}]


@pytest.mark.parametrize(
    "question, entry",
    [
        ("How does the WebSocket handshake work?", "handshake"),
        ("How do I compute Sec-WebSocket-Accept from the key?", "accept_key"),
        ("Why do clients mask their frames?", "frames"),
        ("What is Last-Event-ID in server-sent events?", "sse"),
        ("Should I use WebSocket or SSE?", "ws_vs_sse"),
        ("How should clients reconnect? backoff with jitter?", "reconnect"),
        ("How do I show who is online?", "presence"),
        ("How can a typing indicator be debounced?", "typing"),
        ("How do I scale chat rooms across many servers with Redis?", "scaling"),
        ("Is checking the Origin header important for security?", "security"),
        ("How do I prevent XSS in chat messages?", "xss"),
        ("웹소켓 핸드셰이크는 어떻게 동작하나요?", "handshake"),
        ("재연결할 때 백오프와 지터는 왜 필요해요?", "reconnect"),
        ("타이핑 표시는 어떻게 만들어요?", "typing"),
        ("대규모 채팅 서비스는 어떻게 확장할까?", "scaling"),
        ("WebSocket vs Server-Sent Events의 차이는?", "ws_vs_sse"),
    ],
)
def test_picks_the_relevant_entry(question, entry):
    assert OfflineTutor().answer(ask(question)).entry == entry


def test_answers_in_the_language_of_the_question():
    tutor = OfflineTutor()
    ko = tutor.answer(ask("웹소켓 핸드셰이크는 어떻게 동작하나요?"))
    en = tutor.answer(ask("How does the WebSocket handshake work?"))
    assert ko.language == "ko" and "핸드셰이크" in ko.text
    assert en.language == "en" and "handshake" in en.text
    assert detect_language("WebSocket이 뭐예요?") == "ko"
    assert detect_language("what is SSE") == "en"


def test_says_honestly_when_it_has_no_answer():
    tutor = OfflineTutor()
    for question, lang in [("What is the best pizza topping?", "en"), ("오늘 날씨 어때?", "ko")]:
        answer = tutor.answer(ask(question))
        assert answer.entry is None and answer.language == lang
        assert answer.text == KnowledgeBase.load().fallback[lang]


def test_follow_up_uses_the_conversation():
    tutor = OfflineTutor()
    first = tutor.answer(ask("How does the WebSocket handshake work?"))
    follow = tutor.answer(ask("tell me more", [
        {"role": "user", "content": "How does the WebSocket handshake work?"},
        {"role": "assistant", "content": first.text},
    ]))
    assert follow.entry is not None and follow.entry != first.entry


async def test_streams_sub_word_pieces_deterministically():
    q = ask("How does the WebSocket handshake work?")
    a = [p async for p in OfflineTutor(first_token_ms=0, tokens_per_s=0).stream(q)]
    b = [p async for p in OfflineTutor(first_token_ms=0, tokens_per_s=0).stream(q)]
    c = [p async for p in OfflineTutor(first_token_ms=0, tokens_per_s=0, seed=1).stream(q)]
    assert a == b and "".join(a) == "".join(c) and a != c
    assert len(a) > 50 and max(len(p.strip()) for p in a) <= 5


async def test_pace_with_a_fake_clock():
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)

    tutor = OfflineTutor(first_token_ms=300, tokens_per_s=30, sleep=fake_sleep)
    pieces = [p async for p in tutor.stream(ask("what is SSE?"))]
    assert waits[0] == pytest.approx(0.3)
    assert waits[1:] == [pytest.approx(1 / 30)] * (len(pieces) - 1)


async def test_cancel_mid_stream_releases_the_generator():
    tutor = OfflineTutor(first_token_ms=0, tokens_per_s=1000)
    stream = tutor.stream(ask("What is the WebSocket handshake?"))
    got = [await anext(stream) for _ in range(3)]
    await stream.aclose()
    assert len(got) == 3
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


async def test_tutor_answers_in_a_room_in_both_languages(servers):
    srv = await servers(llm="offline", first_token_ms=0, tokens_per_s=0)
    async with peer(srv.ws_url("tutor", user="지민")) as p:
        await p.until("connection")
        await p.send({"message": "how does the websocket handshake work?"})
        done = await p.until("ai_complete")
        assert "101 Switching Protocols" in done["message"]
        await p.send({"message": "웹소켓 핸드셰이크는 어떻게 동작하나요?"})
        done = await p.until("ai_complete")
        assert "핸드셰이크" in done["message"] and "101" in done["message"]


async def test_reply_completes_when_everyone_leaves(servers):
    srv = await servers(streamer=EchoStreamer(chunks=30, delay=0.01))
    async with peer(srv.ws_url("gone", user="ann")) as p:
        await p.until("connection")
        await p.send({"message": "bye"})
        first = await p.until("ai_chunk")
    for _ in range(100):
        row = srv.hub.rooms.get("gone")
        if row is None:
            break
        await asyncio.sleep(0.05)
    con = sqlite3.connect(srv.config.db)
    status, content = con.execute("SELECT status, content FROM messages WHERE id = ?", (first["id"],)).fetchone()
    assert status == "complete" and content.count("bye#") == 30


async def test_messages_during_a_reply_are_broadcast_at_once_and_replied_in_turn(servers):
    srv = await servers(streamer=EchoStreamer(chunks=20, delay=0.01))
    async with peer(srv.ws_url("queue", user="ann")) as p:
        await p.until("connection")
        await p.send({"message": "one"})
        await p.until("ai_chunk")
        await p.send({"message": "two"})
        second = await p.until("message", message="two")
        first_done = await p.until("ai_complete")
        assert "one#" in first_done["message"]
        # "two" was broadcast while "one"'s reply was still streaming
        kinds = [f["type"] for f in p.seen]
        assert kinds.index("message", kinds.index("ai_chunk")) < kinds.index("ai_complete")
        second_done = await p.until("ai_complete")
        assert "two#" in second_done["message"] and second_done["id"] > second["id"]
