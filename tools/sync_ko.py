"""Keep the Korean course (``notebooks/ko/``) in step with the English one.

    python tools/sync_ko.py            # sync every notebook that has a Korean edition, execute what changed
    python tools/sync_ko.py --check    # only report (exit 1 if a code cell or a translation is behind)
    python tools/sync_ko.py --new 07_scaling_out   # start a Korean edition (English prose, marked to translate)

The English ``.md`` (MyST, paired by jupytext) is the source of the structure. For each of its cells:

* a **code cell** is copied into the Korean edition as is — the two editions' code cells are
  identical by construction (``tests/test_notebook_editions.py`` fails if they are not);
* a **Markdown cell** is looked up among the Korean edition's translations by the hash of the
  English text it translates (kept in the Korean cell's metadata as ``{"en": "<hash>"}``). When
  the English text has changed, or the cell is new, the English text is put in its place, marked
  ``{"translate": "todo"}``, and reported with the old translation (if there was one) to update.

Then the Korean ``.ipynb`` is rebuilt from the ``.md`` with the outputs it had (jupytext pairing)
and, if any code cell changed, executed in place (its kernel runs in ``notebooks/ko/``, whose
``chatkit.toml`` selects Korean), so nbval can compare its outputs.

To mark a cell translated: write the Korean text in the ``.md``, keep its ``+++ {"en": "…"}``
line, remove ``"translate": "todo"``, run this tool again.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parent.parent
EN = ROOT / "notebooks"
KO = EN / "ko"


def en_hash(text: str) -> str:
    """A short, stable fingerprint of an English Markdown cell (whitespace at the ends ignored)."""
    return hashlib.sha1(text.strip().encode("utf-8")).hexdigest()[:12]


@dataclass
class Report:
    name: str
    code_changed: int = 0
    todo: list[tuple[int, str, str | None]] = field(default_factory=list)
    """(cell index, English text, the old Korean text if any) for prose to (re)translate."""
    unused: list[str] = field(default_factory=list)
    """Korean translations whose English text is gone."""


def english_editions() -> list[Path]:
    """Every English notebook (``.md``), notebooks and solutions, ``ko/`` excluded."""
    found = [p for p in EN.rglob("*.md") if KO not in p.parents and ".ipynb_checkpoints" not in p.parts]
    return sorted(p for p in found if p.with_suffix(".ipynb").exists())


def korean_twin(en_md: Path) -> Path:
    return KO / en_md.relative_to(EN)


def merge(en_nb: nbformat.NotebookNode, ko_nb: nbformat.NotebookNode | None, name: str):
    """The Korean notebook for ``en_nb``: its code cells, and ko_nb's translations of its prose."""
    report = Report(name)
    translations: dict[str, nbformat.NotebookNode] = {}
    old_prose: list[nbformat.NotebookNode] = []
    old_code: list[str] = []
    if ko_nb is not None:
        for cell in ko_nb.cells:
            if cell.cell_type == "markdown":
                old_prose.append(cell)
                key = cell.metadata.get("en")
                if key and cell.metadata.get("translate") != "todo":
                    translations[key] = cell
            else:
                old_code.append(cell.source)
    used: set[str] = set()
    cells = []
    prose_index = 0
    code_index = 0
    for i, cell in enumerate(en_nb.cells):
        if cell.cell_type != "markdown":
            new = nbformat.from_dict(dict(cell))
            new.metadata = dict(cell.metadata)
            if code_index >= len(old_code) or old_code[code_index] != cell.source:
                report.code_changed += 1
            code_index += 1
            cells.append(new)
            continue
        key = en_hash(cell.source)
        if key in translations:
            used.add(key)
            ko_cell = translations[key]
            cells.append(nbformat.v4.new_markdown_cell(ko_cell.source, metadata={"en": key}))
        else:
            stale = old_prose[prose_index].source if prose_index < len(old_prose) else None
            report.todo.append((i, cell.source, stale))
            cells.append(
                nbformat.v4.new_markdown_cell(cell.source, metadata={"en": key, "translate": "todo"})
            )
        prose_index += 1
    if code_index != len(old_code):
        report.code_changed += 1
    report.unused = [c.source for k, c in translations.items() if k not in used]
    merged = nbformat.v4.new_notebook(cells=cells, metadata=dict(en_nb.metadata))
    return merged, report


def write_pair(nb: nbformat.NotebookNode, md: Path) -> Path:
    """Write the ``.md`` and rebuild the ``.ipynb`` from it, keeping the outputs of unchanged code."""
    md.parent.mkdir(parents=True, exist_ok=True)
    jupytext.write(nb, md, fmt="md:myst")
    ipynb = md.with_suffix(".ipynb")
    text_nb = jupytext.read(md)
    if ipynb.exists():
        from jupytext.combine import combine_inputs_with_outputs

        combined = combine_inputs_with_outputs(text_nb, jupytext.read(ipynb), fmt="md:myst")
    else:
        combined = text_nb
    jupytext.write(combined, ipynb, fmt="ipynb")
    return ipynb


def execute(ipynb: Path) -> None:
    """Run the notebook in place, in its own folder (so ``notebooks/ko/chatkit.toml`` applies)."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "jupyter",
            "nbconvert",
            "--to",
            "notebook",
            "--execute",
            "--inplace",
            "--ExecutePreprocessor.timeout=300",
            str(ipynb),
        ],
        check=True,
        cwd=ipynb.parent,
    )
    # Executing rewrites the .ipynb only; the .md has no outputs and stays as written.


def sync(en_md: Path, *, check: bool, run: bool) -> Report:
    ko_md = korean_twin(en_md)
    name = str(en_md.relative_to(EN).with_suffix(""))
    en_nb = jupytext.read(en_md)
    ko_nb = jupytext.read(ko_md) if ko_md.exists() else None
    merged, report = merge(en_nb, ko_nb, name)
    if not check:
        ipynb = write_pair(merged, ko_md)
        if run and (report.code_changed or not _executed(ipynb)):
            execute(ipynb)
    return report


def _executed(ipynb: Path) -> bool:
    nb = nbformat.read(ipynb, as_version=4)
    return all(c.get("execution_count") for c in nb.cells if c.cell_type == "code" and c.source.strip())


def print_report(report: Report) -> None:
    status = "ok" if not (report.code_changed or report.todo) else ""
    print(
        f"== {report.name}: {report.code_changed} code cell(s) updated, "
        f"{len(report.todo)} prose cell(s) to translate {status}"
    )
    for index, english, stale in report.todo:
        print(f"   cell {index}: {english.splitlines()[0][:90] if english else ''}")
        if stale:
            print(f"      old translation: {stale.splitlines()[0][:90]}")
    for text in report.unused:
        print(f"   unused translation: {text.splitlines()[0][:90] if text else ''}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "names", nargs="*", help="notebook names (e.g. 03_streaming); default: every Korean edition"
    )
    parser.add_argument("--check", action="store_true", help="report only; exit 1 if anything is behind")
    parser.add_argument(
        "--new", action="store_true", help="create the Korean editions of the named notebooks"
    )
    parser.add_argument("--no-execute", action="store_true", help="do not execute changed notebooks")
    args = parser.parse_args(argv)
    editions = english_editions()
    if args.names:
        editions = [
            p
            for p in editions
            if p.stem in args.names or str(p.relative_to(EN).with_suffix("")) in args.names
        ]
    if not args.new:
        editions = [p for p in editions if korean_twin(p).exists()]
    behind = False
    for en_md in editions:
        report = sync(en_md, check=args.check, run=not args.no_execute)
        print_report(report)
        behind |= bool(report.code_changed or report.todo)
    missing = [p.relative_to(EN) for p in english_editions() if not korean_twin(p).exists()]
    if missing:
        print("no Korean edition yet:", ", ".join(str(p.with_suffix("")) for p in missing))
    return 1 if args.check and behind else 0


if __name__ == "__main__":
    raise SystemExit(main())
