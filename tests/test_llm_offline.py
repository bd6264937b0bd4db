"""The offline tutor: relevance, language, honesty, determinism, pace, cancellation."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from chatkit.llm import EchoStreamer, OfflineTutor
from chatkit.llm.offline import KnowledgeBase, detect_language

from .conftest import TIMEOUT, peer


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
    follow = tutor.answer(
        ask(
            "tell me more",
            [
                {"role": "user", "content": "How does the WebSocket handshake work?"},
                {"role": "assistant", "content": first.text},
            ],
        )
    )
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
        worker = srv.hub.rooms["gone"].worker  # the task that streams and finishes the reply
        assert worker is not None
    async with asyncio.timeout(TIMEOUT):
        await asyncio.shield(worker)  # it finishes the reply with nobody left to see it
    con = sqlite3.connect(srv.config.db)
    status, content = con.execute(
        "SELECT status, content FROM messages WHERE id = ?", (first["id"],)
    ).fetchone()
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


# Every topic of the course, asked in Korean the way a learner would: answered in Korean, on topic.
KO_QUESTIONS = [
    ("안녕하세요, 뭘 도와줄 수 있어요?", "greeting"),
    ("웹소켓 연결은 어떻게 시작되나요? 핸드셰이크 과정이 궁금해요", "handshake"),
    ("Sec-WebSocket-Accept 값은 어떻게 계산하나요?", "accept_key"),
    ("클라이언트는 왜 프레임을 마스킹해야 하나요?", "frames"),
    ("연결 종료 코드 1006은 무슨 뜻이에요?", "close_codes"),
    ("AI 응답을 스트리밍으로 보여 주면 왜 더 빠르게 느껴지나요?", "streaming"),
    ("SSE에서 Last-Event-ID는 어떻게 쓰이나요?", "sse"),
    ("WebSocket과 SSE 중에 무엇을 선택해야 하나요?", "ws_vs_sse"),
    ("HTTP 폴링과 웹소켓은 뭐가 달라요?", "http_vs_ws"),
    ("연결이 끊기면 어떻게 재연결해야 하나요? 지수 백오프가 뭐예요?", "reconnect"),
    ("재연결한 뒤에 놓친 메시지를 중복 없이 받으려면?", "resume"),
    ("하트비트는 왜 필요해요? 죽은 연결은 어떻게 감지해요?", "heartbeat"),
    ("누가 접속 중인지 온라인 사용자 목록은 어떻게 보여 주나요?", "presence"),
    ("타이핑 표시는 어떻게 만들어요?", "typing"),
    ("메시지 읽음 확인은 어떻게 구현해요?", "read_receipts"),
    ("대규모 채팅 서비스는 어떻게 확장할까? Redis는 왜 쓰나요?", "scaling"),
    ("실시간 통신의 보안 이슈는? Origin 검사는 왜 하나요?", "security"),
    ("도배를 막으려면 속도 제한은 어떻게 하나요?", "limits"),
    ("채팅 메시지로 XSS 공격이 들어오면 어떻게 막아요?", "xss"),
    ("이전 메시지는 페이지네이션으로 어떻게 불러오나요?", "pagination"),
    ("chatkit 프로토콜의 프레임 종류는 뭐가 있나요?", "chatkit_protocol"),
    ("스트리밍 중인 AI 응답을 중간에 취소하려면?", "cancel"),
    ("오프라인 튜터 말고 진짜 OpenAI 모델로 바꾸려면 어떻게 해요?", "real_model"),
    ("메시지는 SQLite 데이터베이스에 어떻게 저장되나요?", "store"),
    ("노트북의 ChatPane 위젯은 화면을 얼마나 자주 다시 그리나요?", "panes"),
    ("느리게 읽는 클라이언트 때문에 메모리가 늘면 어떻게 해요? 1013은 뭐예요?", "slow_consumer"),
    ("로그인한 사용자를 확인하는 토큰은 어떻게 서명하나요?", "auth_tokens"),
    ("wss와 TLS 인증서는 왜 필요해요?", "tls"),
    ("nginx 리버스 프록시 뒤에서 WebSocket을 쓰려면 무엇을 설정해야 하나요?", "reverse_proxy"),
    ("여러 서버가 PostgreSQL로 기록을 공유하려면?", "postgres"),
    ("AI 응답의 마크다운은 어떻게 안전하게 렌더링하나요?", "markdown"),
    ("메시지에 이모지 반응(좋아요)을 다는 기능은 어떻게 만들어요?", "reactions"),
    ("이미지나 파일 첨부는 어떻게 보내요?", "uploads"),
    ("한글 입력 중에 엔터를 누르면 마지막 글자가 잘려요. IME 조합은 어떻게 처리해요?", "ime"),
    ("채팅방 이름을 한글로 지어도 되나요? URL에서는 어떻게 인코딩해요?", "unicode_rooms"),
    ("asyncio 이벤트 루프와 await는 노트북에서 어떻게 동작해요?", "asyncio"),
    ("서버 프로세스가 죽으면 스트리밍 중이던 응답은 어떻게 되나요?", "failover"),
    ("사용자 이름에 보이지 않는 문자를 넣으면 어떻게 되나요?", "user_names"),
    ("선생님이 메시지를 삭제하려면 어떻게 해요?", "moderation"),
]

# The closing notebooks' topics (07 scaling out, 08 security, 09 rich messages) asked again, the way the
# Korean notebooks' sections put them: the tutor must pick the entry that answers that section.
KO_COURSE_QUESTIONS = [
    ("브로커 없이 두 프로세스를 띄우면 왜 방이 갈라지나요?", "scaling"),
    ("channels_redis와 chatkit의 브로커는 어떻게 대응되나요?", "scaling"),
    ("브로커를 거치면 지연 시간이 얼마나 늘어나요?", "scaling"),
    ("다른 프로세스에서 온 메시지의 id에 빈틈이 있으면 어떻게 해요?", "failover"),
    ("여러 프로세스에 걸쳐 접속자 목록은 어떻게 합치나요?", "presence"),
    ("다른 사이트에서 웹소켓을 가로채는 공격(CSWSH)은 어떻게 막아요?", "security"),
    ("입장 코드로 로그인하면 토큰은 어디에 저장되나요?", "auth_tokens"),
    ("속도 제한은 이름이 아니라 토큰 기준이어야 하는 이유는?", "limits"),
    ("코드 블록 구문 강조는 어떻게 해요?", "markdown"),
    ("웹소켓은 어떻게 동작하나요?", "handshake"),
]


def test_every_entry_has_a_korean_question_below():
    assert {entry for _, entry in KO_QUESTIONS} == {e["id"] for e in KnowledgeBase.load().entries}


@pytest.mark.parametrize("question, entry", KO_QUESTIONS + KO_COURSE_QUESTIONS)
def test_korean_question_per_topic_is_answered_in_korean(question, entry):
    answer = OfflineTutor().answer(ask(question))
    assert (answer.entry, answer.language) == (entry, "ko")
    hangul = sum("\uac00" <= c <= "\ud7a3" for c in answer.text)
    # Korean prose around the protocol's own names (headers, directives) — not the English entry.
    assert hangul > 0.35 * sum(c.isalpha() for c in answer.text)
