"""deploy/nginx.conf in front of two ``chatkit serve --broker`` processes, the page in Chromium.

nginx (Debian's binary, our template) balances WebSocket upgrades, SSE and
plain GETs over two processes with no sticky sessions. The page connects
through it; the process behind its connection is SIGKILLed; the page
reconnects through nginx to the other process and misses nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from chatkit.client import ChatClient

from .browser import CHROMIUM_ARGS, chromium_path, screenshot_path
from .services import NginxService, free_port, wait_for_port

pytestmark = pytest.mark.timeout(120)

TEMPLATE = Path(__file__).resolve().parent.parent / "deploy" / "nginx.conf"


def render_nginx(listen: int, prefix: str, backends: list[tuple[int, int]]) -> str:
    """Fill the template's placeholders: one upstream line per process and port."""
    ws = "\n".join(f"        server 127.0.0.1:{w} max_fails=1 fail_timeout=2s;" for w, _ in backends)
    http = "\n".join(f"        server 127.0.0.1:{h} max_fails=1 fail_timeout=2s;" for _, h in backends)
    return TEMPLATE.read_text().format(
        listen=f"127.0.0.1:{listen}", prefix=prefix, ws_backends=ws, http_backends=http
    )


def start_server(port: int, http_port: int, db: str, broker: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chatkit",
            "serve",
            "--port",
            str(port),
            "--http-port",
            str(http_port),
            "--db",
            db,
            "--broker",
            broker,
            "--broker-heartbeat",
            "0.3",
            "--llm",
            "echo",
            "--echo-delay-ms",
            "20",
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.DEVNULL,
    )
    wait_for_port(port, proc)
    wait_for_port(http_port, proc)
    return proc


def get(url: str) -> tuple[int, dict]:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback)
        return response.status, json.loads(response.read())


async def test_page_through_nginx_survives_its_process_being_killed(tmp_path, redis_service):
    executable = chromium_path()
    db = str(tmp_path / "lb.db")
    backends = [(free_port(), free_port()) for _ in range(2)]
    first = await asyncio.to_thread(start_server, *backends[0], db, redis_service.url)
    procs = [first]
    nginx = NginxService(conf="", port=free_port())
    nginx.conf = render_nginx(nginx.port, nginx.dir, backends)
    await asyncio.to_thread(nginx.start)
    base = f"http://127.0.0.1:{nginx.port}/"
    try:
        # plain GETs through the balancer: the health check and the page
        status, health = await asyncio.to_thread(get, base + "health")
        assert status == 200 and health["status"] == "ok"
        from playwright.async_api import async_playwright

        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            # Only the first process runs: the page's WebSocket goes to it.
            await page.goto(base + "?room=lb&user=ann&transport=ws")
            await page.wait_for_selector("#status[data-state='open']")
            await page.fill("#input", "through nginx")
            await page.press("#input", "Enter")
            await page.wait_for_selector("#list .message.ai .text >> text=through nginx")
            # The second process starts; a client on it sees what the first stored.
            procs.append(await asyncio.to_thread(start_server, *backends[1], db, redis_service.url))
            bob = ChatClient(f"ws://127.0.0.1:{backends[1][0]}/ws/chat/lb/", user="bob", after=0)
            seen: list[dict] = []
            bob.on_event(seen.append)
            async with bob:
                # The process behind the page dies: the page reconnects through nginx to the other.
                os.kill(first.pid, signal.SIGKILL)
                first.wait()
                await page.wait_for_selector("#status[data-state='reconnecting']")
                await page.wait_for_selector("#status[data-state='open']", timeout=30_000)
                await bob.send("said by bob on the survivor")
                await page.wait_for_selector("#list .message.ai .text >> text=said by bob on the survivor")
                await page.fill("#input", "after the failover")
                await page.press("#input", "Enter")
                await page.wait_for_selector("#list .message.ai .text >> text=after the failover")
                texts = await page.locator("#list .message .text").all_text_contents()
                for text in ("through nginx", "said by bob on the survivor", "after the failover"):
                    assert texts.count(text) == 2, (text, texts)  # the message and its echo, once each
                ids = await page.eval_on_selector_all(
                    "#list .message", "ns => ns.map(n => Number(n.dataset.id))"
                )
                assert ids == sorted(ids) and len(ids) == len(set(ids)) == 6
                await page.screenshot(path=screenshot_path("nginx_failover"))
            assert errors == [], errors
            await browser.close()
    finally:
        nginx.stop()
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
