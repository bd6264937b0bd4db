"""`chatkit serve` as users run it: a real process, its printed URLs, SIGTERM shutdown."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from .services import free_port


def test_help_lists_every_option():
    out = subprocess.run(
        [sys.executable, "-m", "chatkit", "serve", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for option in (
        "--host",
        "--port",
        "--http-port",
        "--db",
        "--llm",
        "--allowed-origins",
        "--max-message-bytes",
        "--first-token-ms",
        "--tokens-per-s",
        "--ai-replies",
        "--gc",
        "--pace-tick-ms",
    ):
        assert option in out


def test_tune_gc_freezes_what_start_up_left_and_collects_young_objects_less_often():
    """What `chatkit serve` does once its ports are open (a fresh interpreter: the test's own
    collector is left alone)."""
    code = (
        "import gc, json; from chatkit.cli import tune_gc, GC_THRESHOLD; "
        "before = (gc.get_freeze_count(), gc.get_threshold()); tune_gc(); "
        "print(json.dumps([before, [gc.get_freeze_count(), gc.get_threshold()], GC_THRESHOLD]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    (frozen_before, threshold_before), (frozen, threshold), wanted = json.loads(out)
    assert frozen_before == 0 and threshold_before == [700, 10, 10]
    assert frozen > 10_000  # chatkit's imports: the objects a full collection no longer walks
    assert threshold == wanted and wanted[0] > threshold_before[0]


async def test_sigterm_stores_the_partial_reply_and_closes_1001(tmp_path):
    port, db = free_port(), str(tmp_path / "cli.db")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chatkit",
        "serve",
        "--port",
        str(port),
        "--http-port",
        "0",
        "--db",
        db,
        "--llm",
        "echo",
        "--echo-chunks",
        "500",
        "--echo-delay-ms",
        "10",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        banner = ""
        async with asyncio.timeout(20):
            while "Press Ctrl+C" not in banner:
                banner += (await proc.stdout.readline()).decode()
        assert f"http://127.0.0.1:{port}/" in banner and "replies by echo" in banner
        assert f"ws://127.0.0.1:{port}/ws/chat/demo/" in banner and "/sse/chat/demo/" in banner
        async with connect(f"ws://127.0.0.1:{port}/ws/chat/term/?user=ann", proxy=None) as ws:
            await ws.recv()
            await ws.send(json.dumps({"message": "long"}))
            reply_id = None
            while reply_id is None:
                frame = json.loads(await ws.recv())
                if frame["type"] == "ai_chunk":
                    reply_id = frame["id"]
            proc.send_signal(signal.SIGTERM)
            done = None
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    frame = json.loads(await ws.recv())
                    if frame["type"] == "ai_complete":
                        done = frame
        assert info.value.rcvd.code == 1001
        assert done is not None and done["status"] == "interrupted"
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    con = sqlite3.connect(db)
    status, content = con.execute("SELECT status, content FROM messages WHERE id = ?", (reply_id,)).fetchone()
    assert status == "interrupted" and content == done["message"] and content.startswith("long#0")
