"""chatkit wire protocol v1 — sans-I/O.

This module holds the message types of the chat protocol, their encoding to
JSON text, the decoding and validation of what clients send, and the encoding
of Server-Sent Events. It does no I/O and imports nothing from asyncio or from
the rest of chatkit (except the exception tree), the way ``websockets``
separates its protocol from the network: the server, the client, the SSE
transport and the notebooks all use it.

The protocol is the seed document's, extended compatibly: a client that only
sends ``{"message": "text"}`` and reads ``connection``, ``message``,
``ai_chunk`` and ``ai_complete`` frames works unchanged. See ``docs/protocol.md``.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import emoji

from .errors import ProtocolError

__all__ = [
    "PROTOCOL_VERSION",
    "DEFAULT_MAX_TEXT",
    "MAX_ID",
    "RETRY_CODES",
    "Limits",
    "SESSION_ID_MAX_CHARS",
    "SESSION_ID_MAX_BYTES",
    "SendMessage",
    "Attachment",
    "AttachmentRef",
    "FILE_ID",
    "MAX_FILE_NAME",
    "Typing",
    "ReadReceipt",
    "Stop",
    "Ping",
    "Delete",
    "message_deleted_frame",
    "Reaction",
    "ReactionCount",
    "MAX_EMOJI_CHARS",
    "ClientFrame",
    "StoredMessage",
    "ChatPath",
    "decode",
    "decode_object",
    "parse_json",
    "parse_id",
    "parse_cursor",
    "check_text",
    "encode",
    "parse_chat_path",
    "validate_session_id",
    "session_id_from_path",
    "session_id_to_path",
    "validate_user",
    "RESERVED_NAMES",
    "connection_frame",
    "message_frame",
    "ai_chunk_frame",
    "encode_ai_chunk",
    "ai_complete_frame",
    "typing_frame",
    "user_join_frame",
    "user_leave_frame",
    "presence_frame",
    "apply_presence",
    "read_receipt_frame",
    "reaction_frame",
    "error_frame",
    "refusal_frame",
    "pong_frame",
    "sse_event",
    "sse_comment",
    "sse_retry",
    "utc_now",
]

PROTOCOL_VERSION = 1
DEFAULT_MAX_TEXT = 4000
"""Default longest chat message, in characters (``too_long`` beyond it)."""

MAX_ID = 2**63 - 1
"""Largest message id and cursor: SQLite's INTEGER is a signed 64-bit number."""

RETRY_CODES = frozenset({"rate_limited", "busy", "shutting_down", "store_full", "store_error"})
"""Error codes after which a refused message may be sent again (after ``retry_after_ms``).
Every other code refusing a message is permanent: sending it again cannot help."""

RETRY_AFTER_MS = {
    "rate_limited": 1000,
    "busy": 1000,
    "shutting_down": 1000,
    "store_full": 5000,
    "store_error": 2000,
}
"""The delay a refusal states when its cause gives no better one."""

_DIGITS = re.compile(r"[0-9]{1,19}")  # ASCII only: str.isdigit() also accepts "²" and "٣"

SESSION_ID_MAX_CHARS = 64
"""Longest room id, in characters (after NFC normalization)."""
SESSION_ID_MAX_BYTES = 192
"""Longest room id in UTF-8 bytes: 64 Hangul syllables (3 bytes each) fit, 64 emoji-sized ones do not."""
_ROOM_LETTER = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo", "Nd"})
_ROOM_MARK = frozenset({"Mn", "Mc"})
# Letters (category Lo) that render as nothing: the Hangul fillers, a classic way to make a
# room name look empty or look like another one.
_INVISIBLE_LETTERS = frozenset("\u115f\u1160\u3164\uffa0")
USER_RE = re.compile(r"[^\x00-\x1f\x7f]{1,32}")
CLIENT_ID_MAX = 64
_SSE_LINE_BREAK = re.compile(r"\r\n|\r|\n")

# ---------------------------------------------------------------------------
# Client → server frames
# ---------------------------------------------------------------------------


# Each frame is a frozen dataclass that both sides use, as h11's events are:
# the server gets one from :func:`decode`, a client builds one and sends
# ``frame.encode()``. ``to_object()`` is the frame as a JSON object, in the
# seed's field names; ``decode(frame.encode()) == frame`` for every valid frame.


FILE_ID = re.compile(r"[0-9a-f]{64}")
"""A file's id: the SHA-256 of its bytes, in lower-case hex (files are content-addressed)."""
MAX_FILE_NAME = 255
"""Longest file name a message may state, in characters (the server shortens stored names further)."""


@dataclass(frozen=True, slots=True)
class AttachmentRef:
    """A file a chat message refers to: ``{"id": "<sha256>"}``, optionally with the ``name`` to show
    (default: the name it was uploaded under). The file must have been uploaded (``POST /files``)."""

    id: str
    name: str | None = None

    def to_object(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"id": self.id}
        if self.name is not None:
            obj["name"] = self.name
        return obj


@dataclass(frozen=True, slots=True)
class SendMessage:
    """A chat message: ``{"message": "text"}`` (``type``, ``client_id`` and ``attachment`` optional).

    With an ``attachment`` the text (a caption) may be empty or absent."""

    text: str
    client_id: str | None = None
    attachment: AttachmentRef | None = None

    def to_object(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"type": "message", "message": self.text}
        if self.client_id is not None:
            obj["client_id"] = self.client_id
        if self.attachment is not None:
            obj["attachment"] = self.attachment.to_object()
        return obj

    def encode(self) -> str:
        return encode(self.to_object())


@dataclass(frozen=True, slots=True)
class Typing:
    """The sender started or stopped typing (``isTyping`` or ``is_typing``)."""

    is_typing: bool

    def to_object(self) -> dict[str, Any]:
        return {"type": "typing", "isTyping": self.is_typing}

    def encode(self) -> str:
        return encode(self.to_object())


@dataclass(frozen=True, slots=True)
class ReadReceipt:
    """The sender has read message ``message_id`` (``messageId`` or ``message_id``)."""

    message_id: int

    def to_object(self) -> dict[str, Any]:
        return {"type": "read_receipt", "messageId": self.message_id}

    def encode(self) -> str:
        return encode(self.to_object())


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop the AI reply streaming in the room."""

    def to_object(self) -> dict[str, Any]:
        return {"type": "stop"}

    def encode(self) -> str:
        return encode(self.to_object())


@dataclass(frozen=True, slots=True)
class Ping:
    """An application-level heartbeat (browsers cannot send WebSocket pings)."""

    def to_object(self) -> dict[str, Any]:
        return {"type": "ping"}

    def encode(self) -> str:
        return encode(self.to_object())


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete message ``message_id`` for everyone (teachers only): ``{"type": "delete", "message_id": 41}``."""

    message_id: int

    def to_object(self) -> dict[str, Any]:
        return {"type": "delete", "message_id": self.message_id}

    def encode(self) -> str:
        return encode(self.to_object())


MAX_EMOJI_CHARS = 16
"""Longest reaction, in code points (a family ZWJ sequence is 7, a flag 2, a keycap 3)."""


@dataclass(frozen=True, slots=True)
class Reaction:
    """Toggle the sender's ``emoji`` reaction on message ``message_id``: the same frame
    again removes it (``messageId`` or ``message_id``; ``emoji``: exactly one emoji)."""

    message_id: int
    emoji: str

    def to_object(self) -> dict[str, Any]:
        return {"type": "reaction", "messageId": self.message_id, "emoji": self.emoji}

    def encode(self) -> str:
        return encode(self.to_object())


def _require_emoji(obj: dict[str, Any]) -> str:
    if "emoji" not in obj:
        raise ProtocolError("missing field 'emoji'", code="missing_field")
    value = obj["emoji"]
    # emoji.is_emoji: exactly one emoji (with its skin tone, ZWJ sequence or flag), per Unicode's
    # emoji data as the `emoji` package keeps it — not "1 to 8 characters of anything".
    if not isinstance(value, str) or not 0 < len(value) <= MAX_EMOJI_CHARS or not emoji.is_emoji(value):
        raise ProtocolError("field 'emoji' must be exactly one emoji", code="bad_field")
    return value


ClientFrame = SendMessage | Typing | ReadReceipt | Stop | Ping | Delete | Reaction


def _require_bool(obj: dict[str, Any], *names: str) -> bool:
    for name in names:
        if name in obj:
            value = obj[name]
            if not isinstance(value, bool):
                raise ProtocolError(f"field {name!r} must be true or false", code="bad_field")
            return value
    raise ProtocolError(f"missing field {names[0]!r}", code="missing_field")


def _require_id(obj: dict[str, Any], *names: str) -> int:
    for name in names:
        if name in obj:
            value = obj[name]
            if isinstance(value, str):
                return parse_id(value, name)  # the seed's markAsRead passes a string id
            # bool is an int subclass: reject it explicitly.
            if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_ID:
                raise ProtocolError(f"field {name!r} must be a positive integer", code="bad_field")
            return value
    raise ProtocolError(f"missing field {names[0]!r}", code="missing_field")


def parse_cursor(text: str, name: str = "after") -> int:
    """A cursor from a query string or header: ASCII digits, ``0`` to :data:`MAX_ID`.

    Anything else (``"²"``, ``"-1"``, ``" 7"``, 2**63, 5,000 digits) raises
    ``ProtocolError("bad_field")``: it must never reach ``int()`` or SQLite.
    """
    if not _DIGITS.fullmatch(text) or int(text) > MAX_ID:
        raise ProtocolError(f"{name!r} must be an integer from 0 to {MAX_ID}", code="bad_field")
    return int(text)


def parse_id(text: str, name: str = "id") -> int:
    """A message id given as text: like :func:`parse_cursor`, but at least 1."""
    if not _DIGITS.fullmatch(text) or not 0 < int(text) <= MAX_ID:
        raise ProtocolError(f"{name!r} must be an integer from 1 to {MAX_ID}", code="bad_field")
    return int(text)


def check_text(value: str, name: str) -> str:
    """Refuse (``bad_field``) a string that cannot be encoded as UTF-8 (a lone surrogate,
    which JSON's ``\\ud800`` escape can carry): the store and the wire would fail on it."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ProtocolError(f"field {name!r} is not valid Unicode text", code="bad_field") from None
    return value


def parse_json(data: str | bytes) -> Any:
    """Parse a frame's JSON text; ``ProtocolError("bad_json")`` when it is not UTF-8 JSON."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("frame is not valid UTF-8", code="bad_json") from None
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        raise ProtocolError("frame is not valid JSON", code="bad_json") from None


def decode(data: str | bytes, *, max_text: int = DEFAULT_MAX_TEXT) -> ClientFrame:
    """Decode and validate one frame sent by a client.

    Raises :class:`~chatkit.errors.ProtocolError` with a stable ``code``:
    ``bad_json``, ``not_an_object``, ``unknown_type``, ``missing_field``,
    ``bad_field``, ``bad_attachment``, ``empty_message`` or ``too_long``.
    """
    return decode_object(parse_json(data), max_text=max_text)


def decode_object(obj: Any, *, max_text: int = DEFAULT_MAX_TEXT) -> ClientFrame:
    """Validate an already parsed frame (the SSE transport's POST body, for one)."""
    if not isinstance(obj, dict):
        raise ProtocolError("frame must be a JSON object", code="not_an_object")

    kind = obj.get("type", "message")
    if not isinstance(kind, str):
        raise ProtocolError("field 'type' must be a string", code="bad_field")

    if kind == "message":
        try:
            return _decode_message(obj, max_text)
        except ProtocolError as exc:
            # Name the refused message, so its sender knows which one (if its id is usable).
            client_id = obj.get("client_id")
            if isinstance(client_id, str) and 0 < len(client_id) <= CLIENT_ID_MAX and client_id.isprintable():
                try:
                    exc.client_id = check_text(client_id, "client_id")
                except ProtocolError:
                    pass
            raise
    if kind == "typing":
        return Typing(_require_bool(obj, "isTyping", "is_typing"))
    if kind == "read_receipt":
        return ReadReceipt(_require_id(obj, "messageId", "message_id"))
    if kind == "reaction":
        return Reaction(_require_id(obj, "messageId", "message_id"), _require_emoji(obj))
    if kind == "stop":
        return Stop()
    if kind == "ping":
        return Ping()
    if kind == "delete":
        return Delete(_require_id(obj, "message_id", "messageId"))
    shown = kind if len(kind) <= 32 else kind[:32] + "..."
    # ascii(): the error frame echoes the type, and a lone surrogate could not be sent back
    raise ProtocolError(f"unknown frame type {ascii(shown)}", code="unknown_type")


def _decode_message(obj: dict[str, Any], max_text: int) -> SendMessage:
    attachment = _decode_attachment(obj["attachment"]) if obj.get("attachment") is not None else None
    if "message" not in obj and attachment is None:
        raise ProtocolError("missing field 'message'", code="missing_field")
    text = obj.get("message", "")
    if not isinstance(text, str):
        raise ProtocolError("field 'message' must be a string", code="bad_field")
    check_text(text, "message")
    if not text.strip() and attachment is None:
        raise ProtocolError("message is empty", code="empty_message")
    if len(text) > max_text:
        raise ProtocolError(f"message is {len(text)} characters; the limit is {max_text}", code="too_long")
    client_id = obj.get("client_id")
    if client_id is not None:
        if not isinstance(client_id, str) or not 0 < len(client_id) <= CLIENT_ID_MAX:
            raise ProtocolError(
                f"field 'client_id' must be a string of 1 to {CLIENT_ID_MAX} characters",
                code="bad_field",
            )
        check_text(client_id, "client_id")
    return SendMessage(text, client_id, attachment)


def _decode_attachment(value: Any) -> AttachmentRef:
    """``{"id": "<sha256 hex>", "name"?: str}``; anything else is ``bad_attachment``."""
    if not isinstance(value, dict):
        raise ProtocolError('field \'attachment\' must be {"id": "<sha256>"}', code="bad_attachment")
    file_id = value.get("id")
    if not isinstance(file_id, str) or FILE_ID.fullmatch(file_id) is None:
        raise ProtocolError(
            "attachment 'id' must be a file's SHA-256 in lower-case hex", code="bad_attachment"
        )
    name = value.get("name")
    if name is not None:
        if not isinstance(name, str) or not 0 < len(name) <= MAX_FILE_NAME:
            raise ProtocolError(
                f"attachment 'name' must be a string of 1 to {MAX_FILE_NAME} characters",
                code="bad_attachment",
            )
        check_text(name, "name")
    return AttachmentRef(file_id, name)


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def encode(frame: dict[str, Any]) -> str:
    """Encode a frame as compact JSON text (UTF-8 kept as is, as the seed does).

    One encoder is reused: ``json.dumps`` with non-default options builds a new
    ``JSONEncoder`` on every call, and this runs once per streamed chunk.
    """
    return _ENCODER.encode(frame)


def encode_ai_chunk(reply_id: int, chunk: str) -> str:
    """``encode(ai_chunk_frame(reply_id, chunk))``, the same text, built without the dict.

    This runs once per streamed chunk (the hottest frame of all): only the chunk's
    string goes through the JSON encoder (its C string escaper), the rest is fixed.
    ``tests/test_protocol.py`` checks the text is identical for awkward strings.
    """
    return '{"type":"ai_chunk","chunk":' + _ENCODER.encode(chunk) + ',"id":' + str(reply_id) + "}"


# ---------------------------------------------------------------------------
# Paths and names
# ---------------------------------------------------------------------------


def validate_session_id(session_id: str) -> str:
    """Return the room id ``session_id`` in NFC form, or raise ``ProtocolError("bad_session_id")``.

    A room id is 1 to :data:`SESSION_ID_MAX_CHARS` Unicode letters, decimal digits,
    ``_`` or ``-`` (combining marks allowed after a letter, for scripts that need
    them) and at most :data:`SESSION_ID_MAX_BYTES` bytes of UTF-8. It is normalized
    to NFC first, so ``한국어-방`` typed on any keyboard (precomposed or as
    conjoining jamo) is one room. Control, format (bidi, zero-width), space,
    punctuation and symbol characters are refused, and so are the invisible Hangul
    fillers. The ASCII ids of the seed (``[A-Za-z0-9_-]``) are all valid.
    """
    if not isinstance(session_id, str):
        raise ProtocolError("session id must be a string", code="bad_session_id")
    room = unicodedata.normalize("NFC", session_id)
    if not 0 < len(room) <= SESSION_ID_MAX_CHARS:
        raise ProtocolError(
            f"session id must be 1 to {SESSION_ID_MAX_CHARS} characters", code="bad_session_id"
        )
    if len(room.encode("utf-8", "surrogatepass")) > SESSION_ID_MAX_BYTES:
        raise ProtocolError(
            f"session id must be at most {SESSION_ID_MAX_BYTES} bytes of UTF-8", code="bad_session_id"
        )
    previous = ""
    for char in room:
        category = unicodedata.category(char)
        if char in "_-" or (category in _ROOM_LETTER and char not in _INVISIBLE_LETTERS):
            previous = category
            continue
        if category in _ROOM_MARK and previous.startswith("L"):
            continue
        raise ProtocolError(
            f"session id must be letters, digits, '_' or '-' (not U+{ord(char):04X})",
            code="bad_session_id",
        )
    return room


def session_id_from_path(segment: str) -> str:
    """The room id in one percent-encoded URL path segment (``%ED%95%9C`` → ``한``), validated.

    The segment must be ASCII (as HTTP request targets are) and decode as strict UTF-8.
    """
    if not segment.isascii():
        raise ProtocolError("session id in a URL must be percent-encoded", code="bad_session_id")
    try:
        room = unquote(segment, errors="strict")
    except UnicodeDecodeError:
        raise ProtocolError("session id is not valid percent-encoded UTF-8", code="bad_session_id") from None
    return validate_session_id(room)


def session_id_to_path(session_id: str) -> str:
    """The room id validated, NFC-normalized and percent-encoded for a URL path segment."""
    return quote(validate_session_id(session_id), safe="")


RESERVED_NAMES = frozenset({"ai", "system", "server", "chatkit", "admin"})
"""Names nobody can take (compared after NFKC case folding, so ``ＡＩ`` and ``ai`` count)."""
# Unicode categories refused in names: Cc control, Cf format (U+202E RIGHT-TO-LEFT OVERRIDE,
# U+200B ZERO WIDTH SPACE, U+2066 isolates...), Cs surrogates, Co private use, Cn unassigned,
# Zl/Zp line/paragraph separators.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def validate_user(user: object) -> str:
    """Return the NFC form of a user name, or raise ``ProtocolError`` (``bad_user``, ``reserved_name``).

    Refused: not a string, blank, longer than 32 characters, leading or trailing
    spaces, control/format/separator characters (bidi overrides, zero-width
    characters), and :data:`RESERVED_NAMES` in any case or width.
    """
    if not isinstance(user, str):
        raise ProtocolError("user name must be a string", code="bad_user")
    check_text(user, "user")
    user = unicodedata.normalize("NFC", user)
    if not user.strip():
        raise ProtocolError("user name is empty", code="bad_user")
    if len(user) > 32:
        raise ProtocolError("user name is longer than 32 characters", code="bad_user")
    if user != user.strip():
        raise ProtocolError("user name must not start or end with spaces", code="bad_user")
    for ch in user:
        if unicodedata.category(ch) in _REFUSED_CATEGORIES:
            raise ProtocolError(
                f"user name contains the invisible or control character U+{ord(ch):04X}", code="bad_user"
            )
    if unicodedata.normalize("NFKC", user).casefold() in RESERVED_NAMES:
        raise ProtocolError(f"the name {user!r} is reserved", code="reserved_name")
    return user


@dataclass(frozen=True, slots=True)
class ChatPath:
    """What a client asked for in its handshake URL."""

    session_id: str
    user: str | None = None
    after: int | None = None
    presence_batch: bool = False
    """``?presence=batch``: joins and leaves come as one ``presence`` frame per tick."""


def parse_chat_path(path: str, prefix: str = "ws") -> ChatPath | None:
    """Parse ``/<prefix>/chat/<session_id>/?user=&after=`` (the room id percent-encoded).

    Returns ``None`` when the path is not a chat path at all (the server answers
    404) and raises :class:`ProtocolError` when it is one with a bad value (400).
    """
    parts = urlsplit(path)
    match = re.fullmatch(rf"/{prefix}/chat/(?P<sid>[^/]+)/", parts.path)
    if match is None:
        return None
    session_id = session_id_from_path(match["sid"])
    query = parse_qs(parts.query, keep_blank_values=True)
    user = query.get("user", [None])[-1]
    if user is not None:
        user = validate_user(user)
    after_raw = query.get("after", [None])[-1]
    after = None if after_raw in (None, "") else parse_cursor(after_raw, "after")
    return ChatPath(session_id, user, after, parse_presence(query.get("presence", [None])[-1]))


def parse_presence(value: str | None) -> bool:
    """``?presence=``: ``batch`` (one ``presence`` frame per tick) or ``each`` (the seed's
    ``user_join``/``user_leave``, the default); ``True`` for batch."""
    if value in (None, "", "each"):
        return False
    if value == "batch":
        return True
    raise ProtocolError("presence must be 'each' or 'batch'", code="bad_field")


def utc_now() -> str:
    """The current time as ISO 8601 UTC with milliseconds, e.g. ``2026-01-02T03:04:05.678Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---------------------------------------------------------------------------
# Server → client frames
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attachment:
    """A stored file as messages show it (the ``attachment`` of a ``message`` frame, and the
    answer to an upload). ``type`` is what the server sniffed from the bytes; ``thumb``: whether
    a thumbnail exists (images); ``width``/``height``: an image's size in pixels."""

    id: str
    name: str
    type: str
    size: int
    width: int | None = None
    height: int | None = None
    thumb: bool = False

    @property
    def url(self) -> str:
        """Where the file is downloaded, on the HTTP (SSE) port."""
        return f"/files/{self.id}"

    @property
    def thumb_url(self) -> str | None:
        return f"/files/{self.id}/thumb" if self.thumb else None

    @property
    def is_image(self) -> bool:
        return self.type.startswith("image/")

    @property
    def is_audio(self) -> bool:
        return self.type.startswith("audio/")

    def to_object(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "type": self.type,
            "size": self.size,
            "url": self.url,
            "thumb": self.thumb_url,
            "width": self.width,
            "height": self.height,
        }

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> Attachment:
        """The inverse of :meth:`to_object` (for what the store and the broker kept: trusted data)."""
        return cls(
            id=obj["id"],
            name=obj["name"],
            type=obj["type"],
            size=int(obj["size"]),
            width=obj.get("width"),
            height=obj.get("height"),
            thumb=bool(obj.get("thumb")),
        )

    def to_json(self) -> str:
        return encode(self.to_object())

    @classmethod
    def from_json(cls, text: str | None) -> Attachment | None:
        return None if not text else cls.from_object(json.loads(text))


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One row of the message store, as every transport shows it."""

    id: int
    session_id: str
    user: str
    is_user: bool
    content: str
    status: str
    client_id: str | None
    created_at: str
    attachment: Attachment | None = None
    """The file this message carries (a picture, a voice message…), if any."""

    def to_frame(self) -> dict[str, Any]:
        """The ``message`` frame for this row (also used for AI replies on replay)."""
        return message_frame(self)


@dataclass(frozen=True, slots=True)
class Limits:
    """What a server accepts from one connection, stated in its ``connection`` frame
    (``"limits"``) so that a client can pace itself instead of being refused.

    The defaults are the server's; a client talking to a server that states
    nothing assumes them.
    """

    max_text: int = DEFAULT_MAX_TEXT
    messages_per_s: float = 5.0
    message_burst: int = 10
    frames_per_s: float = 50.0
    frame_burst: int = 100

    def to_object(self) -> dict[str, Any]:
        return {
            "max_text": self.max_text,
            "messages_per_s": self.messages_per_s,
            "message_burst": self.message_burst,
            "frames_per_s": self.frames_per_s,
            "frame_burst": self.frame_burst,
        }

    @classmethod
    def from_object(cls, obj: Any) -> Limits:
        """Read ``limits`` from a frame; missing or malformed fields keep their defaults."""
        if not isinstance(obj, dict):
            return cls()
        values: dict[str, Any] = {}
        for name in ("max_text", "messages_per_s", "message_burst", "frames_per_s", "frame_burst"):
            value = obj.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
                values[name] = value
        return cls(**values)


def connection_frame(
    session_id: str,
    user: str,
    online: list[str],
    message: str,
    last_id: int = 0,
    limits: Limits | None = None,
    *,
    online_count: int | None = None,
) -> dict[str, Any]:
    """The first frame on every connection: the seed's welcome, who is online,
    ``last_id``, the room's newest message id (a client's resume cursor even
    before it has seen any message), and the connection's ``limits``. With
    ``online_count`` (``?presence=batch``), ``online`` may hold only the first names."""
    frame: dict[str, Any] = {
        "type": "connection",
        "message": message,
        "session_id": session_id,
        "user": user,
        "online": online,
        "last_id": last_id,
        "protocol": PROTOCOL_VERSION,
    }
    if online_count is not None:
        frame["online_count"] = online_count
    if limits is not None:
        frame["limits"] = limits.to_object()
    return frame


def message_frame(msg: StoredMessage) -> dict[str, Any]:
    """A stored message (user or completed AI reply)."""
    frame: dict[str, Any] = {
        "type": "message",
        "message": msg.content,
        "is_user": msg.is_user,
        "id": msg.id,
        "user": msg.user,
        "timestamp": msg.created_at,
        "client_id": msg.client_id,
    }
    if not msg.is_user:
        frame["status"] = msg.status
    if msg.status == "deleted":
        frame["deleted"] = True  # a tombstone: the text is gone, the id stays (resume cursors)
    elif msg.attachment is not None:
        frame["attachment"] = msg.attachment.to_object()
    return frame


def message_deleted_frame(message_id: int, by: str) -> dict[str, Any]:
    """Message ``message_id`` was deleted by ``by`` (a teacher): every client removes it."""
    return {"type": "message_deleted", "message_id": message_id, "by": by}


def ai_chunk_frame(reply_id: int, chunk: str, *, snapshot: bool = False) -> dict[str, Any]:
    """One streamed piece of the AI reply ``reply_id``.

    With ``snapshot`` (only on resume), ``chunk`` is all the text generated so far,
    not a delta: a resuming client replaces what it had with it.
    """
    frame: dict[str, Any] = {"type": "ai_chunk", "chunk": chunk, "id": reply_id}
    if snapshot:
        frame["snapshot"] = True
    return frame


def ai_complete_frame(
    reply_id: int, message: str, *, status: str = "complete", timestamp: str | None = None
) -> dict[str, Any]:
    """The end of AI reply ``reply_id`` with its full text and final status."""
    frame: dict[str, Any] = {
        "type": "ai_complete",
        "message": message,
        "id": reply_id,
        "status": status,
        "cancelled": status == "cancelled",
    }
    if timestamp is not None:
        frame["timestamp"] = timestamp
    return frame


def typing_frame(user: str, is_typing: bool) -> dict[str, Any]:
    return {"type": "typing", "user": user, "is_typing": is_typing}


def user_join_frame(user: str) -> dict[str, Any]:
    """A user's first connection joined (the full list is only in ``connection``:
    repeating it in every join would make a room's joins cost O(n²) bytes)."""
    return {"type": "user_join", "username": user}


def user_leave_frame(user: str) -> dict[str, Any]:
    """A user's last connection left."""
    return {"type": "user_leave", "username": user}


def presence_frame(joined: list[str], left: list[str], count: int) -> dict[str, Any]:
    """The joins and leaves of one presence tick, for members that asked for them
    batched (``?presence=batch``): the users now online (``joined``) and now
    offline (``left``), each user's last change only, and how many are online.
    Applied in order to the ``connection`` frame's list, they give the room's list."""
    return {"type": "presence", "joined": joined, "left": left, "count": count}


def apply_presence(online: list[str], frame: dict[str, Any]) -> list[str]:
    """A client's sorted online list after one ``presence`` frame: ``left`` removed,
    ``joined`` added (a change the list already has changes nothing). Names that are
    not strings are ignored."""
    left = {u for u in frame.get("left") or () if isinstance(u, str)}
    joined = {u for u in frame.get("joined") or () if isinstance(u, str)}
    return sorted({u for u in online if u not in left} | joined)


def read_receipt_frame(message_id: int, user: str) -> dict[str, Any]:
    return {"type": "read_receipt", "message_id": message_id, "user": user}


@dataclass(frozen=True, slots=True)
class ReactionCount:
    """One emoji's reactions on a message: how many, and who (in the order they reacted)."""

    emoji: str
    count: int
    users: tuple[str, ...]

    def to_object(self) -> dict[str, Any]:
        return {"emoji": self.emoji, "count": self.count, "users": list(self.users)}


def reaction_frame(
    message_id: int,
    reactions: list[ReactionCount] | tuple[ReactionCount, ...],
    *,
    user: str | None = None,
    emoji: str | None = None,
    added: bool | None = None,
) -> dict[str, Any]:
    """A message's reactions changed: the full state (``reactions``, ordered by first
    reaction), and — live, not on replay — who toggled which emoji (``added``).

    The state is complete, so applying a replayed frame twice changes nothing.
    The frame has ``message_id``, never ``id``: it is no message and moves no resume cursor.
    """
    frame: dict[str, Any] = {
        "type": "reaction",
        "message_id": message_id,
        "reactions": [r.to_object() for r in reactions],
    }
    if user is not None:
        frame.update(user=user, emoji=emoji, added=added)
    return frame


def error_frame(
    code: str, message: str, *, client_id: str | None = None, retry_after_ms: int | None = None
) -> dict[str, Any]:
    """A refusal or a failure. When it refuses a chat message that carried a
    ``client_id``, the frame carries it too, so the sender knows which message;
    ``retry_after_ms`` says when sending it again may succeed (see :data:`RETRY_CODES`)."""
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if client_id is not None:
        frame["client_id"] = client_id
    if retry_after_ms is not None:
        frame["retry_after_ms"] = retry_after_ms
    return frame


def refusal_frame(exc: Exception, client_id: str | None = None) -> dict[str, Any]:
    """The ``error`` frame answering a refused client frame: the exception's code and
    message, the refused message's ``client_id`` (the argument's, else the exception's),
    and for a refusal that may pass later (:data:`RETRY_CODES`) its ``retry_after_ms``."""
    code: str = getattr(exc, "code", "internal_error")
    message: str = getattr(exc, "message", str(exc))
    retry: int | None = None
    if code in RETRY_CODES:
        retry = getattr(exc, "retry_after_ms", None) or RETRY_AFTER_MS.get(code, 1000)
    return error_frame(
        code, message, client_id=client_id or getattr(exc, "client_id", None), retry_after_ms=retry
    )


def pong_frame() -> dict[str, Any]:
    return {"type": "pong"}


# ---------------------------------------------------------------------------
# Server-Sent Events (https://html.spec.whatwg.org/multipage/server-sent-events.html)
# ---------------------------------------------------------------------------


def sse_event(data: str, *, event: str | None = None, id: int | str | None = None) -> bytes:
    """Encode one SSE event. Multi-line ``data`` becomes several ``data:`` lines."""
    lines = []
    if event is not None:
        lines.append(f"event: {event}")
    if id is not None:
        lines.append(f"id: {id}")
    # Only CR, LF and CRLF end a line in an event stream (not U+2028, which
    # str.splitlines() would also split on and which JSON leaves unescaped).
    lines.extend(f"data: {line}" for line in _SSE_LINE_BREAK.split(data))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def sse_comment(text: str = "") -> bytes:
    """An SSE comment line (ignored by clients; used as a heartbeat)."""
    return f": {text}\n\n".encode()


def sse_retry(milliseconds: int) -> bytes:
    """The reconnection-delay hint a browser ``EventSource`` honours."""
    return f"retry: {int(milliseconds)}\n\n".encode()
