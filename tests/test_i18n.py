"""chatkit.i18n: choosing the language (call, environment, the course folder's chatkit.toml) and
locale formatting with Babel; the ChatPane in Korean."""

from __future__ import annotations

import asyncio
import re

import pytest

from chatkit import i18n
from chatkit.client import FixedDelay
from chatkit.widgets import ChatModel, ChatPane


@pytest.fixture(autouse=True)
def clean_language(monkeypatch, tmp_path):
    monkeypatch.delenv("CHATKIT_LANG", raising=False)
    monkeypatch.chdir(tmp_path)
    i18n.set_language(None)
    yield
    i18n.set_language(None)


def test_language_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("LANG", "ko_KR.UTF-8")  # the system locale is not consulted
    assert i18n.get_language() == "en"
    (tmp_path / "chatkit.toml").write_text('# the Korean course\nlang = "ko"\n', encoding="utf-8")
    assert i18n.get_language() == "ko"
    monkeypatch.setenv("CHATKIT_LANG", "en_US.UTF-8")
    assert i18n.get_language() == "en"
    i18n.set_language("ko-KR")
    assert i18n.get_language() == "ko"
    with pytest.raises(ValueError):
        i18n.set_language("fr")
    (tmp_path / "chatkit.toml").write_text("lang = [", encoding="utf-8")  # broken: ignored
    i18n.set_language(None)
    monkeypatch.delenv("CHATKIT_LANG")
    assert i18n.get_language() == "en"


def test_times_and_lists_follow_the_locale(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    import time

    time.tzset()
    try:
        assert i18n.format_time("2026-01-01T15:04:05.000Z", "ko") == "오후 3:04"
        assert i18n.format_time("2026-01-01T03:04:05.000Z", "ko") == "오전 3:04"
        assert (
            i18n.format_time("2026-01-01T15:04:05.000Z", "en") == "3:04\u202fPM"
            or i18n.format_time("2026-01-01T15:04:05.000Z", "en") == "3:04 PM"
        )
        assert i18n.format_time("", "ko") == "" and i18n.format_time("yesterday", "ko") == ""
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert i18n.format_list(["지민", "민준"], "ko") == "지민 및 민준"
    assert i18n.format_list(["ann", "bob", "cy"], "en") == "ann, bob, and cy"
    assert (
        i18n.error_text("too_long", "message is 5000 characters", "ko") == "메시지가 너무 깁니다. (too_long)"
    )
    assert i18n.error_text("new_code", "something", "ko") == "new_code: something"
    assert (
        i18n.error_text("too_long", "message is 5000 characters", "en")
        == "too_long: message is 5000 characters"
    )


def test_pane_language_comes_from_the_course_folder(tmp_path):
    (tmp_path / "chatkit.toml").write_text('lang = "ko"\n', encoding="utf-8")
    pane = ChatPane("ws://127.0.0.1:1", "방", user="지민")
    english = ChatPane("ws://127.0.0.1:1", "room", user="ann", lang="en")
    try:
        assert pane.lang == "ko" and pane.send_button.description == "전송"
        assert (
            pane.input.placeholder == "메시지를 입력하세요..."
            and pane.older.description == "이전 메시지 불러오기"
        )
        assert english.send_button.description == "Send"
    finally:
        pane.close()
        english.close()


def test_pane_renders_korean_status_times_receipts_and_errors():
    pane = ChatPane("ws://127.0.0.1:1", "방", user="지민", lang="ko")
    m = ChatModel(user="지민")
    pane.model = m
    try:
        m.apply(
            {
                "type": "message",
                "id": 1,
                "user": "지민",
                "is_user": True,
                "message": "안녕",
                "timestamp": "2026-01-01T15:04:05.000Z",
            }
        )
        m.apply(
            {
                "type": "message",
                "id": 2,
                "user": "AI",
                "is_user": False,
                "message": "반가워요",
                "timestamp": "2026-01-01T15:04:06.000Z",
                "status": "cancelled",
            }
        )
        m.apply({"type": "read_receipt", "message_id": 1, "user": "민준"})
        html = pane.render_messages()
        assert "✓✓ 민준 읽음" in html and "[취소됨]" in html
        assert i18n.format_time("2026-01-01T15:04:05.000Z", "ko") in html
        m.apply({"type": "state", "state": "reconnecting", "attempt": 2, "delay": 4.0})
        m.apply({"type": "typing", "user": "민준", "is_typing": True})
        m.apply({"type": "error", "code": "empty_message", "message": "message is empty"})
        pane._render_now({"status"})
        assert "4초 후 재연결 (시도 2회)" in pane.status.value
        assert "민준님이 입력 중…" in pane.typing_line.value
        assert "빈 메시지는 보낼 수 없습니다. (empty_message)" in pane.error_line.value
        m.apply({"type": "state", "state": "open", "attempt": 0, "delay": None})
        pane._render_now({"status"})
        assert "연결됨" in pane.status.value
        m.apply({"type": "error", "code": "expired_token", "message": "the token has expired; sign in again"})
        pane._render_now({"status"})
        assert "토큰이 만료되었습니다. 다시 로그인하세요. (expired_token)" in pane.error_line.value
        assert pane.reaction_buttons[0].tooltip == "가장 최근 메시지에 👍 반응 달기"
    finally:
        pane.close()


def _page_strings() -> dict[str, dict[str, str]]:
    """The string tables of chatkit/web/i18n.js (one ``"key": "text",`` per line)."""
    import re
    from pathlib import Path

    source = (Path(i18n.__file__).parent / "web" / "i18n.js").read_text(encoding="utf-8")
    tables = {}
    for lang, body in re.findall(r"^    (\w+): \{\n(.*?)^    \},", source, re.M | re.S):
        tables[lang] = dict(re.findall(r'^\s*"([\w.]+)": "((?:[^"\\]|\\.)*)",', body, re.M))
    return tables


def test_every_page_string_is_in_english_and_korean():
    tables = _page_strings()
    assert set(tables) == set(i18n.SUPPORTED) and len(tables["en"]) >= 30
    labels = {
        lang: {k for k in table if not k.startswith("error.") or k == "error.line"}
        for lang, table in tables.items()
    }
    assert labels["en"] - labels["ko"] == set(), "no Korean in chatkit/web/i18n.js for these keys"
    assert labels["ko"] - labels["en"] == set(), (
        "Korean keys that English lacks (the page falls back to English)"
    )
    # Server error codes: English shows the server's own text; Korean translates every code it knows,
    # and the pane (chatkit.i18n) says the same as the page.
    ko_errors = {k.removeprefix("error."): v for k, v in tables["ko"].items() if k.startswith("error.")}
    del ko_errors["line"]
    assert ko_errors == i18n._ERRORS["ko"]
    for code in (
        "auth_required",
        "bad_token",
        "expired_token",
        "bad_join_code",
        "login_disabled",
        "forbidden",
    ):
        assert code in ko_errors
    for table in tables.values():  # placeholders are the same in both languages
        assert {k: sorted(re.findall(r"\{(\w+)\}", v)) for k, v in table.items() if k in labels["en"]} == {
            k: sorted(re.findall(r"\{(\w+)\}", v)) for k, v in tables["en"].items() if k in labels["en"]
        }


def test_every_pane_label_is_in_english_and_korean():
    import string

    from chatkit.widgets import LABELS

    assert set(LABELS) == set(i18n.SUPPORTED)

    def fields(text):
        return {f[1] for f in string.Formatter().parse(text) if f[1]}

    assert {k: fields(v) for k, v in LABELS["ko"].items()} == {k: fields(v) for k, v in LABELS["en"].items()}


async def test_korean_pane_against_a_server(servers):
    srv = await servers()
    pane = await ChatPane(srv, "한국어-방", user="지민", lang="ko", policy=FixedDelay(0.05)).start()
    try:
        assert "연결됨" in pane.status.value
        done = asyncio.get_running_loop().create_future()
        pane.client.on_event(
            lambda e: e.get("type") == "ai_complete" and not done.done() and done.set_result(e)
        )
        # The front end's submit carries the text: a value update still held back by ipywidgets
        # ("안녕하세" without the last syllable) must not be what is sent.
        pane.input.value = "안녕하세"
        pane._on_input_msg(pane.input, {"event": "submit", "value": "안녕하세요"}, [])
        assert pane.input.value == ""
        assert (await asyncio.wait_for(done, 10))["message"] == "안녕하세요"
        pane.flush()
        assert "안녕하세요" in pane.message_list.value and "지민 · " in pane.message_list.value
        assert [m["text"] for m in pane.model.messages] == ["안녕하세요", "안녕하세요"]
    finally:
        await pane.aclose()


def _checker_keys(module, name: str) -> set[str]:
    """The catalog keys a checker can print: the string constants of its source and of the module's
    private helpers it calls (recursively)."""
    import ast
    import inspect

    from chatkit.exercise_messages import CATALOGS

    seen: set[str] = set()
    keys: set[str] = set()
    todo = [name]
    while todo:
        fn = getattr(module, todo.pop(), None)
        if fn is None or fn.__name__ in seen or not callable(fn):
            continue
        seen.add(fn.__name__)
        tree = ast.parse(inspect.getsource(fn).lstrip())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and node.value in CATALOGS["en"]
            ):
                keys.add(node.value)
            elif isinstance(node, ast.Name) and node.id.startswith("_"):
                todo.append(node.id)
    return keys


def test_every_checker_of_the_korean_course_speaks_korean():
    """Every key a checker called in a Korean notebook can print has a Korean sentence (the report's
    own words included). Checkers of notebooks not yet translated may add English keys first."""
    import importlib
    import inspect
    import re
    from pathlib import Path

    from chatkit import exercises
    from chatkit.exercise_messages import CATALOGS

    ko_course = Path(__file__).resolve().parent.parent / "notebooks" / "ko"
    called: set[tuple[str, str]] = set()
    for md in ko_course.rglob("*.md"):
        text = md.read_text(encoding="utf-8")
        aliases = dict(re.findall(r"from chatkit import (exercises\w*)(?: as (\w+))?", text))
        aliases = {(alias or module): module for module, alias in aliases.items()}
        for alias, checker in re.findall(r"\b(\w+)\.(check_\w+)\(", text):
            if alias in aliases:
                called.add((aliases[alias], checker))
    assert len(called) >= 30, called  # every exercise of 00-09
    report_source = inspect.getsource(exercises._Session) + inspect.getsource(exercises._run_cases)
    report = {key for key in re.findall(r'"([a-z_]+)"', report_source) if key in CATALOGS["en"]}
    report |= {"pending", "passed", "failed", "case", "input", "expected", "got", "hint"}
    needed: dict[str, str] = {key: "report" for key in report}
    for module_name, checker in sorted(called):
        module = importlib.import_module(f"chatkit.{module_name}")
        assert hasattr(module, checker), f"{module_name}.{checker}"
        keys = _checker_keys(module, checker)
        assert keys, f"{module_name}.{checker} prints no catalog key"
        needed.update({key: checker for key in keys})
    missing = sorted(f"{key} ({where})" for key, where in needed.items() if key not in CATALOGS["ko"])
    assert not missing, "no Korean yet in chatkit/exercise_messages.py KO for: " + ", ".join(missing)


def test_checker_messages_in_korean_cover_every_english_key():
    import string

    import chatkit.exercises_scale  # noqa: F401  (they add their English keys to the catalog)
    import chatkit.exercises_security  # noqa: F401
    from chatkit.exercise_messages import CATALOGS

    en, ko = CATALOGS["en"], CATALOGS["ko"]
    # Other helpers add English keys as they add checkers; a key missing in Korean falls back to English
    # (the test above requires Korean for the keys of the checkers the Korean course calls).
    assert set(ko) <= set(en) and len(ko) >= 250

    def fields(text):
        return {f[1] for f in string.Formatter().parse(text) if f[1]}

    assert {k for k in ko if fields(en[k]) != fields(ko[k])} == set()
    hangul = [k for k in ko if any("\uac00" <= c <= "\ud7a3" for c in ko[k])]
    assert len(hangul) > 0.9 * len(ko)  # all but code-like entries ("{needs}", the backoff formula)


def test_checkers_speak_korean_in_the_korean_course_folder(tmp_path, capsys):
    from chatkit import exercises

    exercises.set_language(None)  # follow chatkit.i18n
    (tmp_path / "chatkit.toml").write_text('lang = "ko"\n', encoding="utf-8")
    assert exercises.check_room_url(lambda h, p, r: f"ws://{h}:{p}/ws/chat/{r}/") is True
    assert capsys.readouterr().out.strip() == "✅ 채팅방 URL: 2개 사례를 모두 통과했습니다."
    exercises.check_room_url(lambda h, p, r: f"ws://{h}:{p}/ws/chat/{r}")
    assert "끝의 슬래시까지" in capsys.readouterr().out
    exercises.check_room_url(lambda h, p, r: f"ws://{h}:{p}/ws/chat/{r}/", lang="en")
    assert "all 2 cases passed" in capsys.readouterr().out
    (tmp_path / "chatkit.toml").unlink()
    exercises.check_room_url(lambda h, p, r: f"ws://{h}:{p}/ws/chat/{r}/")
    assert "all 2 cases passed" in capsys.readouterr().out
