"""deploy/nginx.conf in front of two ``chatkit serve --broker`` processes, the page in Chromium.

nginx (Debian's binary, our template) balances WebSocket upgrades, SSE, POSTs
and plain GETs over two processes with no sticky sessions. The page connects
through it — in WebSocket mode and in SSE mode, where every request (the
stream, the POSTs, the settings) must go to nginx's address, never to a
process's own port; the process behind its connection is SIGKILLed; the page
reconnects through nginx to the other process and misses nothing.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import pytest

from chatkit.client import ChatClient

from .browser import CHROMIUM_ARGS, chromium_path, screenshot_path
from .services import NginxService, cluster_options, free_port

pytestmark = pytest.mark.timeout(120)

TEMPLATE = Path(__file__).resolve().parent.parent / "deploy" / "nginx.conf"
MAX_UPLOAD = "6m"
"""nginx's request-body limit on /files: chatkit's upload limit (``--max-upload-bytes``, 5 MiB by
default) plus room for the multipart framing, so that chatkit itself answers 413 with its code."""


def render_nginx(listen: int, prefix: str, backends: list[tuple[int, int]]) -> str:
    """Fill the template's placeholders: one upstream line per process and port."""
    ws = "\n".join(f"        server 127.0.0.1:{w} max_fails=0;" for w, _ in backends)
    http = "\n".join(f"        server 127.0.0.1:{h} max_fails=0;" for _, h in backends)
    conf = TEMPLATE.read_text().format(
        listen=f"127.0.0.1:{listen}", prefix=prefix, ws_backends=ws, http_backends=http, max_upload=MAX_UPLOAD
    )
    # One process, no master: it dies with the test run even if no finalizer runs
    # (services.die_with_parent reaches the process it starts, not a master's workers).
    return "master_process off;\n" + conf


def get(url: str) -> tuple[int, dict]:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback)
        return response.status, json.loads(response.read())


@pytest.mark.parametrize("transport", ["ws", "sse"])
async def test_page_through_nginx_survives_its_process_being_killed(
    tmp_path, redis_service, chatkit_serve, transport
):
    executable = chromium_path()
    options = cluster_options(str(tmp_path / "lb.db"), redis_service.url)
    # Both processes' ports are known up front (nginx's upstreams); only the first runs yet.
    second_ports = (free_port(), free_port())
    first = await chatkit_serve(*options, http=True)
    nginx = NginxService(conf="", port=free_port())
    nginx.conf = render_nginx(nginx.port, nginx.dir, [(first.port, first.http_port), second_ports])
    await asyncio.to_thread(nginx.start)
    base = f"http://127.0.0.1:{nginx.port}/"
    try:
        # plain GETs through the balancer: the health check and the page's settings
        status, health = await asyncio.to_thread(get, base + "health")
        assert status == 200 and health["status"] == "ok"
        status, config = await asyncio.to_thread(get, base + "config.json")
        assert config["same_origin"] is True  # nginx said so: the page keeps to this origin
        status, direct = await asyncio.to_thread(get, f"http://127.0.0.1:{first.port}/config.json")
        assert direct["same_origin"] is False and direct["http_port"] == first.http_port
        from playwright.async_api import async_playwright

        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            requested: list[str] = []
            page.on("request", lambda request: requested.append(request.url))
            page.on("websocket", lambda ws: requested.append(ws.url))
            # Only the first process runs: the page's stream goes to it.
            await page.goto(base + f"?room=lb&user=ann&transport={transport}")
            await page.wait_for_selector("#status[data-state='open']")
            await page.fill("#input", "through nginx")
            await page.press("#input", "Enter")
            await page.wait_for_selector("#list .message.ai .text >> text=through nginx")
            # The second process starts; a client on it sees what the first stored.
            second = await chatkit_serve(*options, port=second_ports[0], http_port=second_ports[1])
            bob = ChatClient(second.url("lb"), user="bob", after=0)
            seen: list[dict] = []
            bob.on_event(seen.append)
            async with bob:
                # The process behind the page dies: the page reconnects through nginx to the other.
                first.kill()
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
                await page.screenshot(path=screenshot_path(f"nginx_failover_{transport}"))
            assert errors == [], errors
            await browser.close()
        origin = f"127.0.0.1:{nginx.port}/"
        strays = [url for url in requested if url.split("://", 1)[1][: len(origin)] != origin]
        assert strays == [], f"the page bypassed the load balancer: {strays}"
        if transport == "sse":
            assert any("/sse/chat/lb/" in url for url in requested)
    finally:
        nginx.stop()
