"""The sans-I/O client rules: ResumeState (against the shared JSON vectors, in Python
and in the page's JavaScript copy under Node) and the outbox with its pacing."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from chatkit import resume
from chatkit.errors import ClientError
from chatkit.protocol import Limits
from chatkit.resume import Acknowledged, Outbox, Pacer, Refused, ResumeState, Retrying

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors" / "resume.json"
OUTBOX_VECTORS = ROOT / "tests" / "vectors" / "outbox.json"
RESUME_JS = ROOT / "chatkit" / "web" / "resume.js"
CASES = json.loads(VECTORS.read_text(encoding="utf-8"))["cases"]
OUTBOX_CASES = json.loads(OUTBOX_VECTORS.read_text(encoding="utf-8"))["cases"]


def same(got, expected) -> bool:
    """Equal, with times (floats) compared to 1e-6."""
    if isinstance(expected, float) or isinstance(got, float):
        return (
            isinstance(got, (int, float))
            and isinstance(expected, (int, float))
            and abs(got - expected) < 1e-6
        )
    if isinstance(expected, dict):
        return (
            isinstance(got, dict)
            and got.keys() == expected.keys()
            and all(same(got[k], expected[k]) for k in expected)
        )
    if isinstance(expected, list):
        return isinstance(got, list) and len(got) == len(expected) and all(map(same, got, expected))
    return got == expected


def replay_outbox(case) -> list:
    """Run one outbox vector against the Python Outbox; one result per step."""
    box = Outbox(case.get("limit", 100))
    results: list = []
    for step in case["steps"]:
        if "add" in step:
            try:
                box.add(step["add"]["client_id"], step["add"]["text"])
                results.append(None)
            except ClientError as exc:
                results.append(exc.code)
        elif "connected" in step:
            box.connected(Limits.from_object(step["connected"]["limits"]), step["connected"]["now"])
            results.append(None)
        elif "disconnected" in step:
            box.disconnected()
            results.append(None)
        elif "remove" in step:
            removed = box.remove(step["remove"])
            results.append(removed and removed.client_id)
        elif "due" in step:
            send, wait = box.due(step["due"])
            results.append({"send": [p.client_id for p in send], "wait": wait})
        elif "receive" in step:
            outcome = box.receive(copy.deepcopy(step["receive"]), step["now"])
            if isinstance(outcome, Acknowledged):
                results.append(
                    {
                        "kind": "acknowledged",
                        "client_id": outcome.pending.client_id,
                        "id": outcome.frame.get("id"),
                    }
                )
            elif isinstance(outcome, Refused):
                results.append(
                    {
                        "kind": "refused",
                        "client_id": outcome.pending.client_id,
                        "code": outcome.code,
                        "message": outcome.message,
                    }
                )
            elif isinstance(outcome, Retrying):
                results.append(
                    {
                        "kind": "retrying",
                        "client_id": outcome.pending.client_id,
                        "code": outcome.code,
                        "at": outcome.at,
                    }
                )
            else:
                results.append(None)
        elif "texts" in step:
            results.append(box.texts)
        else:
            raise AssertionError(f"unknown step {step}")
    return results


def test_resume_module_does_no_io():
    source = Path(resume.__file__).read_text(encoding="utf-8")
    assert not re.search(r"^\s*(import|from)\s+(asyncio|socket|websockets|httpx|time)\b", source, re.M)


def test_vectors_cover_every_rule():
    kinds = {step["in"]["type"] for case in CASES for step in case["steps"]}
    assert {"connection", "message", "ai_chunk", "ai_complete", "typing", "error"} <= kinds
    outs = [step["out"] for case in CASES for step in case["steps"]]
    assert None in outs  # duplicates dropped
    assert any(o and o.get("replayed") for o in outs)  # synthesized completions
    assert any(step["in"].get("snapshot") for case in CASES for step in case["steps"])


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_python_resume_state_follows_the_vectors(case):
    state = ResumeState(case["after"])
    for number, step in enumerate(case["steps"]):
        frame = copy.deepcopy(step["in"])
        if frame["type"] == "connection":
            state.connected(frame)
        out = state.accept(frame)
        assert (out, state.cursor) == (step["out"], step["cursor"]), f"step {number}"


@pytest.mark.parametrize("case", OUTBOX_CASES, ids=[c["name"] for c in OUTBOX_CASES])
def test_python_outbox_follows_the_vectors(case):
    for number, (step, got) in enumerate(zip(case["steps"], replay_outbox(case), strict=True)):
        assert same(got, step["expect"]), f"step {number}: {step} gave {got}"


def test_javascript_copy_follows_the_vectors():
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI"):
            pytest.fail("node is required in CI (see .ci/run)")
        pytest.skip("node is not installed")
    run = subprocess.run(
        [
            node,
            str(ROOT / "tests" / "vectors" / "replay.js"),
            str(RESUME_JS),
            str(VECTORS),
            str(OUTBOX_VECTORS),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    results = json.loads(run.stdout)
    for case in CASES:
        got = results["resume"][case["name"]]
        assert len(got) == len(case["steps"])
        for number, (step, (out, cursor)) in enumerate(zip(case["steps"], got)):
            assert (out, cursor) == (step["out"], step["cursor"]), f"{case['name']}: step {number}"
    for case in OUTBOX_CASES:
        got = results["outbox"][case["name"]]
        assert len(got) == len(case["steps"])
        for number, (step, result) in enumerate(zip(case["steps"], got)):
            assert same(result, step["expect"]), f"{case['name']}: step {number}: {step} gave {result}"


# -- the outbox ----------------------------------------------------------------


def test_pacer_follows_the_server_rate_with_a_margin():
    pacer = Pacer(rate=5, burst=3, now=0.0)
    assert [pacer.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert pacer.wait(0.0) == pytest.approx(1 / 4.5)
    assert not pacer.take(0.2) and pacer.take(0.23)


def test_outbox_paces_a_burst_in_order():
    box = Outbox(limit=100, limits=Limits(messages_per_s=5, message_burst=10))
    for i in range(15):
        box.add(f"c{i}", f"m{i}")
    box.connected(Limits(messages_per_s=5, message_burst=10), now=0.0)
    sent, wait = box.due(0.0)
    assert [p.text for p in sent] == [f"m{i}" for i in range(10)]
    assert wait == pytest.approx(1 / 4.5)
    assert box.due(0.0) == ([], pytest.approx(1 / 4.5))
    now, order = 0.0, [p.text for p in sent]
    while len(order) < 15:
        now += wait
        more, wait = box.due(now)
        order += [p.text for p in more]
    assert order == [f"m{i}" for i in range(15)]
    assert wait is None and len(box) == 15  # all sent, none acknowledged yet


def test_outbox_matches_acknowledgements_and_refusals_by_client_id():
    box = Outbox()
    box.add("a", "hello")
    box.add("b", "x" * 5000)
    box.add("c", "later")
    box.connected(Limits(), 0.0)
    box.due(0.0)
    ack = box.receive(
        {"type": "message", "id": 1, "is_user": True, "client_id": "a", "message": "hello"}, 0.1
    )
    assert isinstance(ack, Acknowledged) and ack.pending.text == "hello" and ack.frame["id"] == 1
    refused = box.receive({"type": "error", "code": "too_long", "message": "no", "client_id": "b"}, 0.1)
    assert isinstance(refused, Refused) and refused.code == "too_long" and refused.message == "no"
    retry = box.receive(
        {"type": "error", "code": "rate_limited", "message": "slow", "client_id": "c", "retry_after_ms": 500},
        0.1,
    )
    assert isinstance(retry, Retrying) and retry.at == pytest.approx(0.6)
    assert box.texts == ["later"]
    assert box.due(0.3) == ([], pytest.approx(0.3))
    sent, wait = box.due(0.6)  # the pacer was drained at 0.1 and has refilled since
    assert [(p.text, p.attempts) for p in sent] == [("later", 2)] and wait is None
    # frames about no waiting message are not the outbox's business
    assert box.receive({"type": "message", "id": 9, "is_user": True, "client_id": "zzz"}, 1.0) is None
    assert box.receive({"type": "error", "code": "llm_error", "message": "x"}, 1.0) is None
    assert box.receive({"type": "ai_complete", "id": 3}, 1.0) is None


def test_retryable_error_without_client_id_resends_what_was_sent():
    """An older server's ``rate_limited`` names no message: every unacknowledged
    message is sent again (the server keeps one copy per client_id)."""
    box = Outbox()
    box.add("a", "one")
    box.add("b", "two")
    box.connected(Limits(), 0.0)
    assert len(box.due(0.0)[0]) == 2
    retry = box.receive({"type": "error", "code": "rate_limited", "message": "slow"}, 0.0)
    assert isinstance(retry, Retrying) and retry.at == pytest.approx(resume.DEFAULT_RETRY_MS / 1000)
    assert box.due(0.5)[0] == []
    assert [p.text for p in box.due(5.0)[0]] == ["one", "two"]


def test_reconnect_resends_everything_unacknowledged():
    box = Outbox()
    box.add("a", "one")
    box.connected(Limits(), 0.0)
    assert [p.text for p in box.due(0.0)[0]] == ["one"]
    box.disconnected()
    box.connected(Limits(messages_per_s=1, message_burst=1), 10.0)
    assert [p.text for p in box.due(10.0)[0]] == ["one"]
    assert box.due(10.0) == ([], None)


def test_outbox_limit_and_duplicates():
    box = Outbox(limit=1)
    box.add("a", "one")
    with pytest.raises(ClientError) as info:
        box.add("b", "two")
    assert info.value.code == "outbox_full"
    box.remove("a")
    box.add("a", "again")
    with pytest.raises(ClientError) as info:
        box.add("a", "twice")
    assert info.value.code == "duplicate_client_id"


def test_limits_from_a_connection_frame():
    assert Limits.from_object(None) == Limits()
    assert Limits.from_object(
        {"max_text": 100, "messages_per_s": 2, "message_burst": True, "frame_burst": -1}
    ) == Limits(max_text=100, messages_per_s=2)
    assert Limits.from_object(Limits(max_text=7).to_object()) == Limits(max_text=7)
