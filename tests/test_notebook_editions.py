"""The Korean course (``notebooks/ko/``) and the English one run the same code.

Every Korean notebook's code cells must be exactly the English notebook's, in the same order:
the language comes from ``notebooks/ko/chatkit.toml`` (see ``chatkit/i18n.py``), not from code.
``tools/sync_ko.py`` copies code cells from English to Korean and reports prose to re-translate;
nbval runs both editions with their committed outputs.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parent.parent
EN = ROOT / "notebooks"
KO = EN / "ko"
CORE = {
    f"{n}{suffix}"
    for n in (
        "00_start_here",
        "01_handshake",
        "02_chat_server",
        "03_streaming",
        "04_chat_panes",
        "05_reconnection",
        "06_ws_vs_sse",
        "07_scaling_out",
        "08_security",
        "09_rich_messages",
    )
    for suffix in (".ipynb", "_solutions.ipynb")
}
"""Notebooks 00–09 and their solutions must have a Korean edition; notebooks added later are reported until translated."""

KO_NOTEBOOKS = sorted(p for p in KO.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
EN_NOTEBOOKS = sorted(
    p for p in EN.rglob("*.ipynb") if KO not in p.parents and ".ipynb_checkpoints" not in p.parts
)
FIX = "run `python tools/sync_ko.py` (copies the English code cells, re-executes the Korean notebook)"


def code_cells(path: Path) -> list[str]:
    return [cell.source for cell in jupytext.read(path).cells if cell.cell_type == "code"]


def _id(path: Path) -> str:
    return str(path.relative_to(KO if KO in path.parents else EN))


@pytest.mark.parametrize("ko", KO_NOTEBOOKS, ids=_id)
def test_korean_code_cells_equal_the_english(ko: Path):
    en = EN / ko.relative_to(KO)
    assert en.exists(), f"{ko.relative_to(ROOT)} has no English original {en.relative_to(ROOT)}"
    theirs, ours = code_cells(en), code_cells(ko)
    for i, (a, b) in enumerate(zip(theirs, ours)):
        assert a == b, f"{ko.relative_to(ROOT)}: code cell {i} differs from the English edition; {FIX}"
    assert len(theirs) == len(ours), (
        f"{ko.relative_to(ROOT)}: {len(ours)} code cells, the English edition has {len(theirs)}; {FIX}"
    )
    # Both files of the Korean pair (.md and .ipynb) hold that code: the pairs test checks the prose.
    assert code_cells(ko.with_suffix(".md")) == ours


@pytest.mark.parametrize("en", EN_NOTEBOOKS, ids=_id)
def test_english_notebook_has_a_korean_edition(en: Path):
    ko = KO / en.relative_to(EN)
    if not ko.exists() and en.name not in CORE:
        pytest.skip(f"not translated yet: `python tools/sync_ko.py --new {en.stem}` starts it")
    assert ko.exists(), f"{ko.relative_to(ROOT)} is missing"


def _sync_tool():
    spec = importlib.util.spec_from_file_location("sync_ko", ROOT / "tools" / "sync_ko.py")
    sync = importlib.util.module_from_spec(spec)
    sys.modules["sync_ko"] = sync  # dataclasses look their module up
    spec.loader.exec_module(sync)
    return sync


def test_korean_prose_is_translated():
    """Every Markdown cell of the Korean edition translates the English cell at its place (its metadata
    holds the hash of that English text), and none is left as English marked "todo" (the sync tool marks
    new or changed English prose that way). A translation of an English text that has since changed
    fails here too, even if nobody ran the sync tool."""
    sync = _sync_tool()
    todo = []
    for ko in KO_NOTEBOOKS:
        en = EN / ko.relative_to(KO)
        english = [
            sync.en_hash(c.source)
            for c in jupytext.read(en.with_suffix(".md")).cells
            if c.cell_type == "markdown"
        ]
        korean = [c for c in jupytext.read(ko.with_suffix(".md")).cells if c.cell_type == "markdown"]
        for i, cell in enumerate(korean):
            if cell.metadata.get("translate") == "todo" or cell.metadata.get("en") != (
                english[i] if i < len(english) else None
            ):
                todo.append(f"{ko.relative_to(ROOT)} Markdown cell {i}")
        if len(english) != len(korean):
            todo.append(f"{ko.relative_to(ROOT)} ({len(korean)} Markdown cells, English has {len(english)})")
    assert not todo, (
        "prose waiting for translation (run `python tools/sync_ko.py`, translate the cells it lists in the "
        '.md, drop their "translate": "todo", run it again): ' + ", ".join(todo)
    )


def test_korean_folder_selects_korean(monkeypatch):
    monkeypatch.delenv("CHATKIT_LANG", raising=False)
    monkeypatch.chdir(KO)  # where a Korean notebook's kernel runs
    from chatkit import i18n

    i18n.set_language(None)
    assert i18n.get_language() == "ko"
    monkeypatch.chdir(KO / "solutions")  # and a Korean solution's
    assert i18n.get_language() == "ko"
    monkeypatch.chdir(EN)
    assert i18n.get_language() == "en"


def test_sync_tool_copies_code_and_reports_changed_prose():
    sync = _sync_tool()
    import nbformat

    en = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell("# Title"),
            nbformat.v4.new_code_cell("x = 1  # changed in English"),
            nbformat.v4.new_markdown_cell("New English prose."),
            nbformat.v4.new_code_cell("print(x)"),
        ]
    )
    ko = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell("# 제목", metadata={"en": sync.en_hash("# Title")}),
            nbformat.v4.new_code_cell("x = 1"),
            nbformat.v4.new_markdown_cell("예전 문장.", metadata={"en": sync.en_hash("Old English prose.")}),
            nbformat.v4.new_code_cell("print(x)"),
        ]
    )
    merged, report = sync.merge(en, ko, "demo")
    assert [c.source for c in merged.cells] == [
        "# 제목",
        "x = 1  # changed in English",
        "New English prose.",
        "print(x)",
    ]
    assert merged.cells[2].metadata == {"en": sync.en_hash("New English prose."), "translate": "todo"}
    assert report.code_changed == 1
    assert report.todo == [(2, "New English prose.", "예전 문장.")]
    assert report.unused == ["예전 문장."]
