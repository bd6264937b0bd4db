"""The course notebooks survive a person: pauses between cells, and extra messages typed into panes.

nbval runs each notebook at machine speed. A student reads between cells (the server's keepalive pings
arrive meanwhile) and types into the chat panes the notebook shows (more messages than the cells expect).
Here every course notebook runs cell by cell in a real kernel:

* with the server keepalive shortened (``CHATKIT_PING_INTERVAL``) and a pause between cells longer than it,
  so every raw-socket reader meets ping frames and every wait outlives a keepalive;
* separately, with an extra message typed into every pane right after the cell that shows it.

A cell that fails raises ``CellExecutionError`` with the notebook's own traceback.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from chatkit.server import ServerConfig, ping_interval_from_env

ROOT = Path(__file__).resolve().parent.parent
COURSE = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PANE_NOTEBOOKS = [p for p in COURSE if "ChatPane(" in p.read_text(encoding="utf-8")]

KEEPALIVE = 0.5  # seconds between the server's pings during these runs
PAUSE = 0.6  # a reader's pause between cells: longer than the keepalive (a person's is ~25 s)
CELL_TIMEOUT = 90

EXTRA_MESSAGE = """\
from chatkit.widgets import ChatPane as _ChatPane
for _pane in [v for v in list(globals().values()) if isinstance(v, _ChatPane)]:
    _task = _pane.submit("an extra message, typed by a person reading along")
    assert _task is not None, "the pane did not accept input"
    await _task
"""


def _run(path: Path, *, pause: float = 0.0, extra_after_panes: bool = False) -> int:
    """Execute ``path`` cell by cell; returns how many extra cells were injected."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    injected = 0
    exercises = False
    with client.setup_kernel():
        index = 0
        while index < len(nb.cells):
            cell = nb.cells[index]
            if cell.cell_type == "markdown" and re.search(r"^## Try it", cell.source, re.M):
                exercises = True  # from here on: checkers only, no connections to keep alive
            if cell.cell_type == "code":
                client.execute_cell(cell, index)
                if pause and not exercises:
                    time.sleep(pause)  # the point of the test: a reader's pause, not a wait for an event
                if extra_after_panes and "ChatPane(" in cell.source:
                    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(EXTRA_MESSAGE))
                    index += 1
                    client.execute_cell(nb.cells[index], index)
                    injected += 1
            index += 1
    return injected


def test_keepalive_interval_from_the_environment(monkeypatch):
    assert ping_interval_from_env({}) == 20.0
    assert ping_interval_from_env({"CHATKIT_PING_INTERVAL": "0.5"}) == 0.5
    assert ping_interval_from_env({"CHATKIT_PING_INTERVAL": "off"}) is None
    with pytest.raises(ValueError, match="CHATKIT_PING_INTERVAL"):
        ping_interval_from_env({"CHATKIT_PING_INTERVAL": "soon"})
    monkeypatch.setenv("CHATKIT_PING_INTERVAL", "1.5")
    assert ServerConfig().ping_interval == 1.5


@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", COURSE, ids=lambda p: p.stem)
def test_notebook_survives_pauses_longer_than_the_keepalive(path, monkeypatch):
    monkeypatch.setenv("CHATKIT_PING_INTERVAL", str(KEEPALIVE))  # the kernel inherits it
    _run(path, pause=PAUSE)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", PANE_NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_survives_an_extra_message_in_every_pane(path):
    assert _run(path, extra_after_panes=True) >= 1
