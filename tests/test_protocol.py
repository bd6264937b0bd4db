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
            "bad_json",
            "not_an_object",
            "unknown_type",
            "missing_field",
            "bad_field",
            "empty_message",
            "too_long",
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


@pytest.mark.parametrize(
    "chunk",
    [
        "",
        "plain ",
        'say "hi"\\n',
        "\x00\x01\x1f\x7f",
        "line\nbreak\ttab\r",
        "\u2028\u2029",
        "안녕하세요 ",
        "🙂 e\u0301",
        "\ud800 lone",
        "</script>",
    ],
)
@pytest.mark.parametrize("reply_id", [0, 1, protocol.MAX_ID])
def test_encode_ai_chunk_is_the_encoded_frame(chunk, reply_id):
    """The hot path's hand-built chunk text is byte for byte the generic encoding."""
    assert protocol.encode_ai_chunk(reply_id, chunk) == protocol.encode(
        protocol.ai_chunk_frame(reply_id, chunk)
    )


@given(st.text(), st.integers(min_value=0, max_value=protocol.MAX_ID))
@settings(max_examples=300, deadline=None)
def test_fuzz_encode_ai_chunk_is_the_encoded_frame(chunk, reply_id):
    assert protocol.encode_ai_chunk(reply_id, chunk) == protocol.encode(
        protocol.ai_chunk_frame(reply_id, chunk)
    )


def test_sse_event_encoding_multiline_and_ids():
    assert (
        protocol.sse_event("a\nb\r\nc", event="x", id=5) == b"event: x\nid: 5\ndata: a\ndata: b\ndata: c\n\n"
    )
    # U+2028 is not a line break in an event stream: it must stay inside one data line.
    assert protocol.sse_event("a\u2028b") == "data: a\u2028b\n\n".encode()
    assert protocol.sse_comment("hb") == b": hb\n\n"
    assert protocol.sse_retry(3000) == b"retry: 3000\n\n"


# -- ids, cursors, Unicode (issue 13, item 4) ------------------------------------

BAD_IDS = ["²", "٣", "1²", "-1", "+1", " 1", "1 ", "0x10", "1e3", "", str(2**63), "9" * 5000]


@pytest.mark.parametrize("value", [*BAD_IDS, 2**63, 0, -5, 1.5, None, "0"])
def test_read_receipt_ids_are_ascii_digits_within_sqlite_range(value):
    with pytest.raises(ProtocolError) as info:
        decode(json.dumps({"type": "read_receipt", "messageId": value}))
    assert info.value.code == "bad_field"


def test_largest_ids_are_accepted():
    assert decode(json.dumps({"type": "read_receipt", "messageId": protocol.MAX_ID})) == ReadReceipt(
        2**63 - 1
    )
    assert decode(json.dumps({"type": "read_receipt", "messageId": str(2**63 - 1)})) == ReadReceipt(2**63 - 1)
    assert protocol.parse_chat_path(f"/ws/chat/d/?after={2**63 - 1}").after == 2**63 - 1
    assert protocol.parse_chat_path("/ws/chat/d/?after=0").after == 0


@pytest.mark.parametrize("value", BAD_IDS[:-3] + [str(2**63), "9" * 5000, "%C2%B2"])
def test_after_cursor_is_ascii_digits_within_sqlite_range(value):
    if not value:
        assert protocol.parse_chat_path("/ws/chat/d/?after=").after is None  # blank = absent
        return
    with pytest.raises(ProtocolError) as info:
        protocol.parse_chat_path(f"/ws/chat/d/?after={value}")
    assert info.value.code == "bad_field"


@pytest.mark.parametrize(
    "obj",
    [
        {"message": "\ud800"},
        {"message": "ok \udfff ok"},
        {"message": "ok", "client_id": "\ud83d"},
    ],
)
def test_strings_that_are_not_unicode_text_are_bad_field(obj):
    raw = json.dumps(obj)  # JSON escapes carry lone surrogates: "\ud800"
    with pytest.raises(ProtocolError) as info:
        decode(raw)
    assert info.value.code == "bad_field"


def test_lone_surrogates_in_names_and_types_are_refused_without_echoing_them():
    # Percent-encoded surrogate bytes in a URL decode to U+FFFD: text, not a crash.
    assert protocol.parse_chat_path("/ws/chat/d/?user=%ED%A0%80").user.encode("utf-8")
    with pytest.raises(ProtocolError) as info:
        protocol.validate_user("a\ud800")
    assert info.value.code == "bad_field"
    with pytest.raises(ProtocolError) as info:
        decode(json.dumps({"type": "\ud800"}))
    assert info.value.code == "unknown_type"
    info.value.message.encode("utf-8")  # the error frame can be sent back


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=30), st.integers(), st.floats(), st.booleans(), st.none()))
def test_fuzz_ids_never_escape_as_other_exceptions(value):
    try:
        frame = decode(json.dumps({"type": "read_receipt", "messageId": value}))
    except ProtocolError as exc:
        assert exc.code == "bad_field"
    else:
        assert isinstance(frame, ReadReceipt) and 0 < frame.message_id <= protocol.MAX_ID


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_fuzz_handshake_query_gives_a_path_or_a_coded_error(query):
    from urllib.parse import quote

    for raw in (query, quote(query, safe="=&")):
        try:
            chat = protocol.parse_chat_path(f"/ws/chat/demo/?{raw}")
        except ProtocolError as exc:
            assert exc.code in ("bad_field", "bad_user")
        else:
            assert chat is not None
            assert chat.after is None or 0 <= chat.after <= protocol.MAX_ID
            if chat.user is not None:
                chat.user.encode("utf-8")


valid_frames = st.one_of(
    st.builds(
        SendMessage,
        st.text(min_size=1, max_size=50)
        .filter(str.strip)
        .map(lambda t: t.encode("utf-8", "replace").decode()),
        st.one_of(st.none(), st.text(min_size=1, max_size=64, alphabet=st.characters(codec="utf-8"))),
    ),
    st.builds(Typing, st.booleans()),
    st.builds(ReadReceipt, st.integers(1, protocol.MAX_ID)),
    st.just(Stop()),
    st.just(protocol.Ping()),
)


@settings(max_examples=300, deadline=None)
@given(valid_frames)
def test_client_frames_round_trip(frame):
    """What a client builds with the constructors is what the server decodes."""
    assert decode(frame.encode()) == frame
    assert protocol.decode_object(frame.to_object()) == frame


def test_error_frame_names_the_refused_message():
    assert protocol.error_frame("too_long", "no", client_id="c1") == {
        "type": "error",
        "code": "too_long",
        "message": "no",
        "client_id": "c1",
    }
    assert (
        protocol.error_frame("rate_limited", "slow", client_id="c", retry_after_ms=200)["retry_after_ms"]
        == 200
    )
    assert "client_id" not in protocol.error_frame("llm_error", "x")


@pytest.mark.parametrize(
    "raw, room",
    [
        ("demo", "demo"),
        ("a_b-9", "a_b-9"),
        ("한국어-방", "한국어-방"),
        (
            "\u1112\u1161\u11ab\u1100\u116e\u11a8\u110b\u1165-\u1107\u1161\u11bc",
            "한국어-방",
        ),  # conjoining jamo → NFC
        ("Café", "Café"),
        ("Cafe\u0301", "Café"),  # combining acute → precomposed
        ("教室٣", "教室٣"),  # CJK letters and an Arabic-Indic digit
        ("방" * 64, "방" * 64),  # 64 characters, 192 bytes: the longest Hangul id
    ],
)
def test_room_ids_accept_unicode_letters_nfc(raw, room):
    assert protocol.validate_session_id(raw) == room


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "x" * 65,
        "방" * 65,
        "😀" * 10,  # a symbol, not a letter
        "a" * 15 + "\U00020000" * 49,  # 64 letters, but 15 + 49 × 4 = 211 bytes of UTF-8
        "a.b",
        "a/b",
        "a b",
        "a\u3000b",  # punctuation and (ideographic) spaces
        "a\x00b",
        "a\x7fb",
        "a\u0085b",  # controls
        "room\u200b",
        "ro\u200dom",
        "\ufeffroom",  # zero-width
        "abc\u202edcba",
        "a\u2066b\u2069",
        "a\u200fb",  # bidi overrides, isolates, marks
        "\u3164",
        "방\u3164",
        "\uffa0",
        "\u115f\u1160",  # invisible Hangul fillers
        "\u0301a",  # a combining mark with nothing to combine with
    ],
)
def test_room_ids_refuse_invisible_controls_and_overlong(raw):
    with pytest.raises(ProtocolError) as info:
        protocol.validate_session_id(raw)
    assert info.value.code == "bad_session_id"


def test_room_ids_are_percent_encoded_in_paths():
    assert protocol.session_id_to_path("한국어-방") == "%ED%95%9C%EA%B5%AD%EC%96%B4-%EB%B0%A9"
    assert protocol.session_id_to_path("demo") == "demo"
    assert protocol.session_id_from_path("%ED%95%9C%EA%B5%AD%EC%96%B4-%EB%B0%A9") == "한국어-방"
    assert protocol.parse_chat_path(
        "/ws/chat/%ED%95%9C%EA%B5%AD%EC%96%B4-%EB%B0%A9/?user=ann"
    ) == protocol.ChatPath("한국어-방", "ann")
    # NFD in the URL is the same room as NFC.
    nfd = protocol.session_id_to_path("한국어-방").replace("%ED%95%9C", "%E1%84%92%E1%85%A1%E1%86%AB")
    assert protocol.parse_chat_path(f"/ws/chat/{nfd}/").session_id == "한국어-방"
    for bad in ["/ws/chat/%ED%95/", "/ws/chat/%E2%80%8B/", "/ws/chat/a%2Fb/", "/ws/chat/한국어/"]:
        with pytest.raises(ProtocolError) as info:
            protocol.parse_chat_path(bad)
        assert info.value.code == "bad_session_id"
