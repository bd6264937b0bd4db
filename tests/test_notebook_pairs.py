"""Every course notebook is paired with a MyST Markdown file (jupytext.toml), and the pair agrees.

The ``.md`` is what instructors review and edit as text; the ``.ipynb`` carries the committed
outputs that nbval compares. If one is edited without the other (``jupytext --sync`` not run,
or JupyterLab used without jupytext), this test names the notebook and the first differing cell.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
IPYNBS = sorted(NOTEBOOKS.rglob("*.ipynb"))
MDS = sorted(p for p in NOTEBOOKS.rglob("*.md") if ".ipynb_checkpoints" not in p.parts)
IPYNBS = [p for p in IPYNBS if ".ipynb_checkpoints" not in p.parts]


def _cells(path: Path) -> list[tuple[str, str]]:
    nb = jupytext.read(path)
    return [(cell.cell_type, cell.source) for cell in nb.cells]


def test_jupytext_config_pairs_ipynb_with_myst():
    config = tomllib.loads((ROOT / "jupytext.toml").read_text())
    assert config["formats"] == "ipynb,md:myst"


def test_there_are_notebooks():
    assert len(IPYNBS) >= 14, [p.name for p in IPYNBS]


@pytest.mark.parametrize("ipynb", IPYNBS, ids=lambda p: str(p.relative_to(NOTEBOOKS)))
def test_pair_has_the_same_cells(ipynb: Path):
    md = ipynb.with_suffix(".md")
    assert md.exists(), f"{md.relative_to(ROOT)} is missing: run `jupytext --sync {ipynb.relative_to(ROOT)}`"
    a, b = _cells(ipynb), _cells(md)
    for i, (x, y) in enumerate(zip(a, b)):
        assert x == y, (
            f"{ipynb.relative_to(ROOT)} and its .md differ at cell {i} ({x[0]} vs {y[0]}):\n"
            f"--- ipynb ---\n{x[1][:400]}\n--- md ---\n{y[1][:400]}\n"
            "Edit one side, then `jupytext --sync` and re-execute (README, 'The course')."
        )
    assert len(a) == len(b), f"{ipynb.relative_to(ROOT)}: {len(a)} cells in .ipynb, {len(b)} in .md"


@pytest.mark.parametrize("md", MDS, ids=lambda p: str(p.relative_to(NOTEBOOKS)))
def test_every_markdown_notebook_has_its_ipynb(md: Path):
    head = md.read_text(encoding="utf-8").split("\n", 12)
    if "jupytext:" not in head[:3]:
        pytest.skip("not a jupytext notebook")
    assert md.with_suffix(".ipynb").exists(), (
        f"{md.relative_to(ROOT)} has no .ipynb: run `jupytext --sync` and execute it (nbval runs the .ipynb)"
    )


def test_a_drifted_pair_is_caught(tmp_path):
    src = IPYNBS[0]
    md = tmp_path / src.with_suffix(".md").name
    text = src.with_suffix(".md").read_text(encoding="utf-8")
    md.write_text(text.replace("```{code-cell} ipython3\n", "```{code-cell} ipython3\nx = 1  # edited\n", 1))
    assert _cells(md) != _cells(src)


def test_pytest_collects_no_markdown():
    """nbval runs the .ipynb (with committed outputs); the .md twins must not be collected as tests."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "notebooks"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    items = [line for line in out.stdout.splitlines() if "::" in line]
    assert items and all(".ipynb::" in line for line in items), out.stdout
