"""The exercise checkers: right answers pass, wrong ones fail with a hint, stubs say ⏳."""

from __future__ import annotations

import base64
import hashlib

import pytest

from chatkit import exercises


def test_stub_reports_not_done(capsys):
    def stub(*_):
        raise NotImplementedError

    assert exercises.check_accept_key(stub) is None
    assert "not done yet" in capsys.readouterr().out


def test_right_answer_passes(capsys):
    guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
    assert exercises.check_accept_key(
        lambda key: base64.b64encode(hashlib.sha1((key + guid).encode()).digest()).decode()) is True
    assert "✅" in capsys.readouterr().out


@pytest.mark.parametrize(
    "checker, wrong",
    [
        (exercises.check_accept_key, lambda key: base64.b64encode(hashlib.sha1(key.encode()).digest()).decode()),
        (exercises.check_room_url, lambda h, p, r: f"ws://{h}:{p}/ws/chat/{r}"),
        (exercises.check_backend_choice, lambda env: "openai" if "OPENAI_API_KEY" in env else "offline"),
        (exercises.check_mask, lambda data, key: data),
        (exercises.check_room_names, lambda name: bool(name)),
        (exercises.check_ttft, lambda sent, times: times[-1] - sent),
        (exercises.check_dedup, lambda frames: frames),
        (exercises.check_cursor, lambda last, streaming: last),
        (exercises.check_typing_line, lambda users: ", ".join(users)),
        (exercises.check_escape, lambda user, text: f"<b>{user}</b>: {text}"),
        (exercises.check_sse_encoder, lambda data, event=None, id=None: f"data: {data}\n\n"),
        (exercises.check_choose, lambda needs: "websocket"),
    ],
)
def test_wrong_answers_fail(checker, wrong):
    with pytest.raises(AssertionError):
        checker(wrong)


def test_backoff_checker_wants_jitter_and_cap():
    with pytest.raises(AssertionError, match="jitter"):
        exercises.check_backoff(lambda attempt, rng: min(30.0, 2.0 ** (attempt - 1)) * 0.75)
    with pytest.raises(AssertionError):
        exercises.check_backoff(lambda attempt, rng: 2.0 ** (attempt - 1) * rng.uniform(0.5, 1.0))


async def test_take_checker_requires_closing_the_stream():
    async def take_without_closing(stream, n):
        out = []
        async for piece in stream:
            out.append(piece)
            if len(out) == n:
                return out

    with pytest.raises(AssertionError, match="close the stream"):
        await exercises.check_take(take_without_closing)
