"""The sans-I/O protocol: decoding, validation, encoding, SSE encoding."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatkit import protocol
from chatkit.errors import ProtocolError
from chatkit.protocol import ReadReceipt, SendMessage, Stop, Typing, decode


def test_protocol_module_does_no_io():
    source = open(protocol.__file__, encoding="utf-8").read()
    assert not re.search(r"^\s*(import|from)\s+(asyncio|socket|websockets)", source, re.M)


def test_seed_message_frame():
    assert decode('{"message": "hi"}') == SendMessage("hi", None)
    assert decode(b'{"type": "message", "message": "hi", "client_id": "c1"}') == SendMessage("hi", "c1")


@pytest.mark.parametrize(
    "raw, expected",
    [
        ('{"type": "typing", "isTyping": true}', Typing(True)),
        ('{"type": "typing", "is_typing": false}', Typing(False)),
        ('{"type": "read_receipt", "messageId": 7}', ReadReceipt(7)),
        ('{"type": "read_receipt", "message_id": "8"}', ReadReceipt(8)),
        ('{"type": "stop"}', Stop()),
    ],
)
def test_extension_frames(raw, expected):
    assert decode(raw) == expected


@pytest.mark.parametrize(
    "raw, code",
    [
        ("{not json", "bad_json"),
        (b"\xff\xfe", "bad_json"),
        ("[1, 2]", "not_an_object"),
        ('"text"', "not_an_object"),
        ('{"type": "dance"}', "unknown_type"),
        ('{"type": 3}', "bad_field"),
        ('{"type": "message"}', "missing_field"),
        ('{"message": 5}', "bad_field"),
        ('{"message": "   "}', "empty_message"),
        ('{"message": "hi", "client_id": 5}', "bad_field"),
        ('{"message": "hi", "client_id": ""}', "bad_field"),
        ('{"type": "typing"}', "missing_field"),
        ('{"type": "typing", "isTyping": "yes"}', "bad_field"),
        ('{"type": "read_receipt", "messageId": -1}', "bad_field"),
        ('{"type": "read_receipt", "messageId": true}', "bad_field"),
        ('{"type": "read_receipt"}', "missing_field"),
    ],
)
def test_bad_frames_have_stable_codes(raw, code):
    with pytest.raises(ProtocolError) as info:
        decode(raw)
    assert info.value.code == code
    assert info.value.message  # a readable explanation


def test_too_long():
    decode(json.dumps({"message": "x" * 10}), max_text=10)
    with pytest.raises(ProtocolError) as info:
        decode(json.dumps({"message": "x" * 11}), max_text=10)
    assert info.value.code == "too_long"


def test_deeply_nested_json_is_bad_json_not_a_crash():
    with pytest.raises(ProtocolError) as info:
        decode("[" * 100_000)
    assert info.value.code in ("bad_json", "not_an_object")


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_fuzz_decode_raises_only_protocol_errors(data):
    try:
        frame = decode(data)
    except ProtocolError as exc:
        assert exc.code in {
            "bad_json", "not_an_object", "unknown_type", "missing_field", "bad_field",
            "empty_message", "too_long",
        }
    else:
        assert isinstance(frame, (SendMessage, Typing, ReadReceipt, Stop, protocol.Ping))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["type", "message", "client_id", "isTyping", "is_typing", "messageId", "x"]),
        json_values | st.sampled_from(["message", "typing", "read_receipt", "stop", "ping"]),
    )
)
def test_fuzz_decode_objects(obj):
    try:
        frame = decode(json.dumps(obj))
    except ProtocolError:
        return
    if isinstance(frame, SendMessage):
        assert frame.text == obj["message"] and frame.text.strip()


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/ws/chat/demo/", protocol.ChatPath("demo")),
        ("/ws/chat/a_b-9/?user=ann&after=12", protocol.ChatPath("a_b-9", "ann", 12)),
        ("/ws/chat/demo/?user=%EC%A7%80%EB%AF%BC", protocol.ChatPath("demo", "지민")),
        ("/ws/chat/demo", None),
        ("/other/", None),
    ],
)
def test_parse_chat_path(path, expected):
    assert protocol.parse_chat_path(path) == expected


@pytest.mark.parametrize(
    "path, code",
    [
        ("/ws/chat/" + "x" * 65 + "/", "bad_session_id"),
        ("/ws/chat/a.b/", "bad_session_id"),
        ("/ws/chat/demo/?after=-1", "bad_field"),
        ("/ws/chat/demo/?user=" + "u" * 33, "bad_user"),
    ],
)
def test_parse_chat_path_errors(path, code):
    with pytest.raises(ProtocolError) as info:
        protocol.parse_chat_path(path)
    assert info.value.code == code


def test_encode_is_compact_utf8():
    assert protocol.encode({"type": "message", "message": "안녕"}) == '{"type":"message","message":"안녕"}'


def test_sse_event_encoding_multiline_and_ids():
    assert protocol.sse_event("a\nb\r\nc", event="x", id=5) == b"event: x\nid: 5\ndata: a\ndata: b\ndata: c\n\n"
    # U+2028 is not a line break in an event stream: it must stay inside one data line.
    assert protocol.sse_event("a\u2028b") == "data: a\u2028b\n\n".encode()
    assert protocol.sse_comment("hb") == b": hb\n\n"
    assert protocol.sse_retry(3000) == b"retry: 3000\n\n"
