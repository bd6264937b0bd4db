"""The language of chatkit's user-facing text, and locale formatting with Babel.

chatkit speaks English and Korean (the seed document's language). The language
of the notebook pane (:class:`~chatkit.widgets.ChatPane`) and of the exercise
checkers' feedback is, in order of precedence:

1. what :func:`set_language` set in this process;
2. the ``CHATKIT_LANG`` environment variable (``ko``, ``ko_KR.UTF-8`` and ``ko-KR`` all mean Korean);
3. ``lang`` in a ``chatkit.toml`` file in the current directory — the Korean course keeps
   one in ``notebooks/ko/`` and one in ``notebooks/ko/solutions/`` (a notebook's kernel runs in the notebook's folder, under
   JupyterLab and nbval alike), so its code cells are exactly the English edition's;
4. English.

The system locale (``LANG``) is deliberately not consulted: the English notebooks'
committed outputs must not change on a machine set up in Korean.

Times and lists are formatted by Babel (CLDR data), not by hand.
"""

from __future__ import annotations

import os
import tomllib
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from babel.dates import format_time as _babel_format_time
from babel.lists import format_list as _babel_format_list

__all__ = [
    "SUPPORTED",
    "get_language",
    "set_language",
    "normalize_language",
    "format_time",
    "format_list",
    "error_text",
]

SUPPORTED = ("en", "ko")
SETTINGS_FILE = "chatkit.toml"

_chosen: str | None = None


def normalize_language(tag: str | None) -> str | None:
    """``"ko-KR"``, ``"ko_KR.UTF-8"``, ``"KO"`` → ``"ko"``; ``None`` for an unsupported language."""
    if not tag:
        return None
    base = tag.strip().lower().replace("_", "-").split(".")[0].split("-")[0]
    return base if base in SUPPORTED else None


def set_language(lang: str | None) -> None:
    """Choose the language for this process (``None`` goes back to the environment's choice)."""
    global _chosen
    if lang is not None and normalize_language(lang) is None:
        raise ValueError(f"unsupported language {lang!r}; chatkit speaks {', '.join(SUPPORTED)}")
    _chosen = normalize_language(lang)


def _from_settings_file(directory: Path) -> str | None:
    path = directory / SETTINGS_FILE
    try:
        with path.open("rb") as f:
            return normalize_language(str(tomllib.load(f).get("lang", "")))
    except (OSError, tomllib.TOMLDecodeError):
        return None


def get_language() -> str:
    """The language to use now (see the module docstring for the order)."""
    return (
        _chosen
        or normalize_language(os.environ.get("CHATKIT_LANG"))
        or _from_settings_file(Path.cwd())
        or "en"
    )


@lru_cache(maxsize=4096)
def format_time(iso: str, lang: str) -> str:
    """An ISO 8601 timestamp as a short local time: ``"오후 3:04"`` in Korean, ``"3:04 PM"`` in English."""
    if not iso:
        return ""
    try:
        when = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return ""
    if when.tzinfo is not None:
        when = when.astimezone()  # the viewer's clock
    return _babel_format_time(when, format="short", locale=lang)


def format_list(items: list[str], lang: str) -> str:
    """``["ann", "bob"]`` → ``"ann and bob"`` / ``"ann 및 bob"`` (CLDR list patterns)."""
    return _babel_format_list(list(items), locale=lang) if items else ""


# The server's error codes (docs/protocol.md) in Korean, the same sentences as the page's
# chatkit/web/i18n.js (tests/test_i18n.py checks); an unknown code keeps the server's text.
_ERRORS = {
    "ko": {
        "bad_json": "올바른 JSON이 아닙니다.",
        "not_an_object": "프레임은 JSON 객체여야 합니다.",
        "unknown_type": "알 수 없는 프레임 종류입니다.",
        "missing_field": "필요한 필드가 빠졌습니다.",
        "bad_field": "필드 값이 올바르지 않습니다.",
        "empty_message": "빈 메시지는 보낼 수 없습니다.",
        "too_long": "메시지가 너무 깁니다.",
        "rate_limited": "너무 빨리 보내고 있습니다. 잠시 후 다시 보내세요.",
        "busy": "AI가 다른 질문에 답하는 중이라 이 메시지에는 답하지 않습니다. 메시지는 저장되었습니다.",
        "unknown_message": "이 채팅방에 없는 메시지입니다.",
        "shutting_down": "서버가 종료되는 중입니다.",
        "bad_session_id": "채팅방 이름이 올바르지 않습니다.",
        "bad_user": "이름이 올바르지 않습니다.",
        "llm_auth": "AI 모델 인증에 실패했습니다 (API 키를 확인하세요).",
        "llm_rate_limited": "AI 모델의 요청 한도를 넘었습니다.",
        "llm_timeout": "AI 모델이 제때 응답하지 않았습니다.",
        "llm_unreachable": "AI 모델 서버에 연결할 수 없습니다.",
        "llm_stream_dropped": "AI 응답 스트림이 중간에 끊겼습니다.",
        "llm_error": "AI 모델에서 오류가 발생했습니다.",
        "binary_frame": "프레임은 바이너리가 아니라 텍스트(UTF-8 JSON)로 보내야 합니다.",
        "outbox_full": "보내지 못한 메시지가 너무 많습니다. 연결이 돌아오면 다시 보내세요.",
        "duplicate_client_id": "같은 메시지가 이미 전송을 기다리고 있습니다.",
        "too_many_reactions": "이 메시지에는 반응을 더 달 수 없습니다 (한 사람당 20개까지).",
        "reserved_name": "쓸 수 없는 이름입니다 (예약된 이름).",
        "name_mismatch": "로그인한 이름과 다릅니다. 이름은 토큰에 적힌 것을 씁니다.",
        "bad_request": "잘못된 요청입니다.",
        "not_found": "찾을 수 없습니다.",
        "method_not_allowed": "허용되지 않는 요청 방식입니다.",
        "too_large": "보낸 데이터가 너무 큽니다.",
        "unsupported_media_type": "요청 형식(Content-Type)이 올바르지 않습니다.",
        "store_full": "서버의 디스크가 가득 찼습니다. 잠시 후 다시 보내세요.",
        "store_error": "서버의 데이터베이스에 문제가 생겼습니다. 잠시 후 다시 보내세요.",
        "store_readonly": "서버의 데이터베이스가 읽기 전용이라 저장할 수 없습니다.",
        "store_closed": "서버의 데이터베이스가 닫혀 있습니다.",
        "store_unavailable": "서버의 데이터베이스에 연결할 수 없습니다.",
        "too_many_connections": "서버에 연결이 너무 많습니다. 잠시 후 다시 시도하세요.",
        "too_many_rooms": "이 주소에서 새 채팅방을 너무 많이 만들었습니다. 잠시 후 다시 시도하세요.",
        "too_many_streams": "이 주소에서 연 이벤트 스트림이 너무 많습니다.",
        "auth_required": "로그인이 필요합니다 (이 서버는 토큰을 요구합니다).",
        "bad_token": "토큰이 올바르지 않습니다. 다시 로그인하세요.",
        "expired_token": "토큰이 만료되었습니다. 다시 로그인하세요.",
        "bad_join_code": "입장 코드가 틀렸습니다.",
        "login_disabled": "이 서버는 입장 코드로 로그인하지 않습니다. 선생님께 토큰을 받으세요.",
        "forbidden": "이 작업을 할 권한이 없습니다.",
        "origin_not_allowed": "이 페이지의 출처(Origin)에서는 이 서버를 쓸 수 없습니다.",
        "unsupported_type": "지원하지 않는 파일 형식입니다 (이미지, 음성, PDF만 올릴 수 있습니다).",
        "bad_image": "이미지 파일을 읽을 수 없습니다.",
        "image_too_large": "이미지의 픽셀 수가 너무 많습니다.",
        "empty_file": "빈 파일입니다.",
        "bad_attachment": "첨부 파일을 찾을 수 없습니다. 다시 올려 주세요.",
        "unknown_file": "없는 파일입니다.",
    },
}


def error_text(code: str, message: str, lang: str) -> str:
    """A server error for people: ``"too_long: message is …"``, or in Korean ``"메시지가 너무 깁니다. (too_long)"``."""
    translated = _ERRORS.get(lang, {}).get(code)
    return f"{translated} ({code})" if translated else f"{code}: {message}"
