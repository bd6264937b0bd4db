"""Real JupyterLab, headless, driven by Chromium: ChatPanes in a notebook, and the
chatkit launcher behind jupyter-server-proxy (the Binder setup)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading

import nbformat
import pytest

from .browser import CHROMIUM_ARGS, chromium_path, screenshot_path

pytestmark = pytest.mark.timeout(180)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PANES_NOTEBOOK = [
    """from chatkit import ChatServer
from chatkit.widgets import ChatPane, side_by_side
server = await ChatServer(port=0, http_port=-1, db=":memory:", llm="echo").start()
ann = await ChatPane(server, "lab", user="ann").start()
bob = await ChatPane(server, "lab", user="bob").start()
side_by_side(ann, bob)""",
]


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory):
    chromium_path()  # skip (or fail in CI) before starting anything
    root = tmp_path_factory.mktemp("lab")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src) for src in PANES_NOTEBOOK])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "panes.ipynb")
    port, token = free_port(), secrets.token_hex(8)
    env = {**os.environ, "CHATKIT_DB": str(root / "proxied.db"), "JUPYTER_CONFIG_DIR": str(root / ".jupyter")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            f"--port={port}",
            "--ip=127.0.0.1",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            "--allow-root",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    # Jupyter Server logs "... is running at:" once it listens: read its log up to that line,
    # then copy the rest to lab.log in a thread (the pipe must keep draining).
    log = open(root / "lab.log", "w")
    assert proc.stderr is not None
    for line in proc.stderr:
        log.write(line)
        if "is running at:" in line:
            break
    else:
        proc.wait()
        log.close()
        pytest.fail("JupyterLab did not start: " + (root / "lab.log").read_text()[-2000:])
    copier = threading.Thread(target=shutil.copyfileobj, args=(proc.stderr, log), daemon=True)
    copier.start()
    yield base, token, root
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    copier.join(15)  # the pipe's end: everything is in lab.log (a stray kernel may hold it open)
    if not copier.is_alive():
        log.close()


@pytest.fixture
async def page():
    executable = chromium_path()
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        context = await browser.new_context(viewport={"width": 1400, "height": 900})
        yield await context.new_page()
        await browser.close()


async def test_two_panes_in_jupyterlab_chat(jupyterlab, page):
    base, token, _ = jupyterlab
    await page.goto(f"{base}/lab/tree/panes.ipynb?token={token}")
    await page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
    panes = page.locator(".chatkit-pane")
    for attempt in range(3):  # the first key press can land before the editor is ready
        # Under load JupyterLab may open a dialog first (e.g. kernel selection): accept it.
        dialog = page.locator(".jp-Dialog")
        if await dialog.count():
            print("JupyterLab dialog:", await dialog.first.text_content())
            await page.locator(".jp-Dialog .jp-mod-accept").first.click()
            await dialog.first.wait_for(state="detached")
        try:
            await page.click(".jp-Cell .jp-InputArea-editor", timeout=10_000)
            await page.keyboard.press("Shift+Enter")
            await panes.nth(1).wait_for(timeout=20_000)
            break
        except Exception:
            if attempt == 2:
                await page.screenshot(path=screenshot_path("jupyterlab_no_panes"))
                raise
    await page.wait_for_selector(".chatkit-pane .status >> text=Connected", timeout=30_000)
    ann_input = panes.nth(0).locator("input[type='text']")
    await ann_input.fill("hello from the browser")
    await ann_input.press("Enter")
    bob = panes.nth(1)
    await bob.locator(".message.user >> text=hello from the browser").wait_for(timeout=30_000)
    # the finished reply: the list and the streaming view are two widgets, synced one after the other, so
    # for a moment the reply is in both (strict mode would see two)
    await bob.locator(".message.ai:not(.streaming) >> text=hello from the browser").wait_for(timeout=30_000)
    await page.screenshot(path=screenshot_path("jupyterlab_two_panes"))


async def test_chatkit_launcher_behind_jupyter_server_proxy(jupyterlab, page):
    base, token, _ = jupyterlab
    # The named server starts `chatkit serve` on first request (the launcher tile's URL).
    await page.goto(f"{base}/chatkit/?token={token}", timeout=60_000)
    await page.wait_for_selector("#join", timeout=60_000)
    config = json.loads(await page.evaluate("fetch('config.json').then(r => r.text())"))
    assert isinstance(config["http_port"], int)
    for transport in ("ws", "sse"):
        await page.goto(f"{base}/chatkit/?room=binder-{transport}&user=student&transport={transport}")
        await page.wait_for_selector("#status[data-state='open']", timeout=30_000)
        await page.fill("#input", f"hello over {transport} through the proxy")
        await page.press("#input", "Enter")
        await page.wait_for_selector(
            f"#list .message.user .text >> text=hello over {transport} through the proxy", timeout=30_000
        )
        await page.screenshot(path=screenshot_path(f"binder_proxy_{transport}"))


KOREAN_PANES_NOTEBOOK = [
    """from chatkit import ChatServer
from chatkit.widgets import ChatPane, side_by_side
server = await ChatServer(port=0, http_port=-1, db=":memory:", llm="echo").start()
jimin = await ChatPane(server, "한국어-방", user="지민", lang="ko").start()
minjun = await ChatPane(server, "한국어-방", user="민준", lang="ko").start()
side_by_side(jimin, minjun)""",
]


async def test_korean_panes_take_ime_input_whole(jupyterlab, page):
    """The pane's text box with a real IME composition (CDP): Enter while composing sends nothing,
    the committed 안녕하세요 is sent once, and composing shows the typing line in the other pane."""
    base, token, root = jupyterlab
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src) for src in KOREAN_PANES_NOTEBOOK])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "panes_ko.ipynb")
    # A workspace of its own: only this notebook open, whatever the other tests left open.
    await page.goto(f"{base}/lab/workspaces/ko/tree/panes_ko.ipynb?token={token}")
    await page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
    panes = page.locator(".chatkit-pane")
    for attempt in range(3):  # the first key press can land before the editor is ready
        await page.click(".jp-Cell .jp-InputArea-editor")
        await page.keyboard.press("Shift+Enter")
        try:
            await panes.nth(1).wait_for(timeout=20_000)
            break
        except Exception:
            if attempt == 2:
                raise
    await page.wait_for_selector(".chatkit-pane .status >> text=연결됨", timeout=30_000)
    box = panes.nth(0).locator("input[type='text']")
    assert await box.get_attribute("placeholder") == "메시지를 입력하세요..."
    await box.focus()
    cdp = await page.context.new_cdp_session(page)

    async def compose(*stages: str) -> None:
        for stage in stages:
            await cdp.send(
                "Input.imeSetComposition",
                {"text": stage, "selectionStart": len(stage), "selectionEnd": len(stage)},
            )

    await compose("ㅇ", "아", "안")
    await panes.nth(1).locator(".typing >> text=지민님이 입력 중…").wait_for(timeout=30_000)
    await cdp.send("Input.insertText", {"text": "안"})
    for stages, syllable in [(("ㄴ", "녀", "녕"), "녕"), (("ㅎ", "하"), "하"), (("ㅅ", "세"), "세")]:
        await compose(*stages)
        await cdp.send("Input.insertText", {"text": syllable})
    await compose("ㅇ", "요")
    await page.keyboard.press("Enter")  # while 요 is still being composed: must send nothing
    await cdp.send("Input.insertText", {"text": "요"})
    assert await box.input_value() == "안녕하세요"
    await page.keyboard.press("Enter")
    minjun = panes.nth(1)
    # the finished reply (not the streaming one still shown until its widget syncs): a prompt sent
    # twice would give two of them
    await minjun.locator(".message.ai:not(.streaming) >> text=안녕하세요").wait_for(timeout=30_000)
    assert await minjun.locator(".message.user").count() == 1
    meta = await minjun.locator(".message.user .meta").text_content()
    assert meta.startswith("지민 · ") and ("오전" in meta or "오후" in meta)  # Babel, Korean CLDR
    assert await minjun.locator(".message.user .content").text_content() == meta + "안녕하세요"
    await page.screenshot(path=screenshot_path("jupyterlab_korean_panes_ime"))
