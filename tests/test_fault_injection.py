"""Fault injection (issue 13): the promise kept while everything goes wrong at once.

A real ``chatkit serve`` process with its default rate limit; four ChatClients and
one chat page in Chromium send at random, in bursts; the clients' connections
are cut at random; the server is SIGKILLed and restarted twice, once while
messages are in flight and once while a reply streams. Afterwards:

- every ``send()`` resolved: acknowledged, or raised a typed error;
- every acknowledged message is stored exactly once, and every client (the page
  included) saw every stored user message exactly once, in the same (id) order;
- every reply ended ``complete``, ``error``, ``cancelled`` or ``interrupted``
  (none is left ``streaming``), and every client saw each one end exactly once.

Bounded: about 15 s. ``CHATKIT_FAULT_SEED`` replays a run (the seed is printed).
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import sqlite3

import pytest

from chatkit.client import ChatClient, ExponentialBackoff
from chatkit.errors import ClientError

from .browser import CHROMIUM_ARGS, chromium_path
from .conftest import TIMEOUT

OPTIONS = ["--llm", "echo", "--echo-delay-ms", "20", "--log-level", "INFO"]
"""``chatkit serve`` with its default limits (no --rate-limit), echo replies."""


pytestmark = pytest.mark.timeout(120)

CLIENTS = ["ann", "bob", "cho", "dan"]
PER_CLIENT = 8
PAGE_SENDS = 4
FINAL = {"complete", "error", "cancelled", "interrupted"}
WAIT = 3 * TIMEOUT  # the one time bound of the run


def user_ids(events: list[dict]) -> list[int]:
    return [e["id"] for e in events if e["type"] == "message" and e.get("is_user")]


def reply_ends(events: list[dict]) -> list[int]:
    """Ids of replies whose end a client saw: live ``ai_complete`` or a replayed AI message."""
    return [
        e["id"]
        for e in events
        if e["type"] == "ai_complete" or (e["type"] == "message" and e.get("is_user") is False)
    ]


def database(db: str) -> tuple[list[tuple[int, str, str | None]], list[tuple[int, str]]]:
    con = sqlite3.connect(db)
    try:
        users = con.execute(
            "SELECT id, content, client_id FROM messages WHERE is_user = 1 ORDER BY id"
        ).fetchall()
        replies = con.execute("SELECT id, status FROM messages WHERE is_user = 0 ORDER BY id").fetchall()
    finally:
        con.close()
    return users, replies


PAGE_HOOK = """() => {
  window.__events = [];
  window.__sent = [];
  window.__submits = [];
  document.getElementById("send-form").addEventListener(
    "submit", () => window.__submits.push(document.getElementById("input").value), true);
  const service = window.chatkit.service, show = service.onEvent, send = service.send.bind(service);
  service.onEvent = (event) => { window.__events.push(event); show(event); window.chatkitSaw(); };
  service.send = (text) => { const id = send(text); window.__sent.push([id, text]); return id; };
}"""


async def test_every_send_resolves_and_nothing_is_lost_or_doubled(tmp_path, chatkit_serve):
    seed = int(os.environ.get("CHATKIT_FAULT_SEED") or random.randrange(2**32))
    print(f"CHATKIT_FAULT_SEED={seed}")
    rng = random.Random(seed)
    db = str(tmp_path / "faults.db")
    room = "faults"
    proc = await chatkit_serve("--db", db, *OPTIONS, log=db + ".log")  # stopped whatever happens
    port = proc.port
    url = proc.url(room)
    events: dict[str, list[dict]] = {u: [] for u in CLIENTS}
    outcomes: dict[str, list[object]] = {u: [] for u in CLIENTS}
    kills: list[str] = []

    from playwright.async_api import async_playwright

    executable = chromium_path()
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
            page = await browser.new_page()
            page_errors: list[str] = []
            page.on("pageerror", lambda exc: page_errors.append(str(exc)))
            await page.goto(f"http://127.0.0.1:{port}/?room={room}&user=web")
            await page.wait_for_selector("#status[data-state='open']")
            changed = asyncio.Event()  # set at every event a client or the page sees
            await page.expose_function("chatkitSaw", changed.set)
            await page.evaluate(PAGE_HOOK)

            def record(user: str, event: dict) -> None:
                events[user].append(event)
                changed.set()

            async def until(predicate) -> None:
                """Check ``predicate`` (sync or async) again at each event seen anywhere."""
                while True:
                    held = predicate()
                    if await held if asyncio.iscoroutine(held) else held:
                        return
                    changed.clear()
                    await changed.wait()

            clients = [
                ChatClient(url, user=u, policy=ExponentialBackoff(initial=0.05, cap=0.4), send_timeout=WAIT)
                for u in CLIENTS
            ]
            for client, user in zip(clients, CLIENTS):
                client.on_event(functools.partial(record, user))
                await client.start()

            async def talk(client: ChatClient, user: str) -> None:
                sent = 0
                while sent < PER_CLIENT:
                    burst = min(PER_CLIENT - sent, rng.choice([1, 1, 2, 3]))
                    results = await asyncio.gather(
                        *(client.send(f"{user}-{sent + i} w1 w2 w3") for i in range(burst)),
                        return_exceptions=True,
                    )
                    outcomes[user].extend(results)
                    sent += burst
                    if rng.random() < 0.25:
                        client.drop_connection()  # a network cut on the client's side
                    await asyncio.sleep(rng.uniform(0, 0.3))  # random pacing is the point: bursts and pauses

            typed: list = []

            async def type_in_page() -> None:
                for i in range(PAGE_SENDS):
                    # The page disables its input while offline: an Enter pressed just as the
                    # connection dropped sends nothing (the text stays): press it again.
                    while True:
                        await page.wait_for_selector("#status[data-state='open']", timeout=WAIT * 1000)
                        await page.fill("#input", f"web-{i} w1 w2 w3")
                        await page.press("#input", "Enter")
                        typed.append((i, await page.input_value("#input")))
                        if typed[-1][1] == "":
                            break
                    await asyncio.sleep(rng.uniform(0.1, 0.5))  # a person typing at random times

            async def chaos() -> None:
                nonlocal proc
                # 1. mid-message: a few messages stored (ann saw them), some sends still unacknowledged
                await until(lambda: len(user_ids(events["ann"])) >= 6 and any(c.outbox for c in clients))
                proc.kill()
                kills.append("mid-message")
                proc = await chatkit_serve("--db", db, *OPTIONS, port=port, log=db + ".log")
                # 2. mid-reply: right when the newest thing ann saw is an ai_chunk
                await until(lambda: bool(events["ann"]) and events["ann"][-1]["type"] == "ai_chunk")
                proc.kill()
                kills.append("mid-reply")
                proc = await chatkit_serve("--db", db, *OPTIONS, port=port, log=db + ".log")

            phase = "running"

            async def report() -> str:
                users, replies = database(db)
                lines = [
                    f"phase={phase} kills={kills} seed={seed}",
                    f"db: {len(users)} user messages, replies {replies}",
                ]
                for client, user in zip(clients, CLIENTS):
                    lines.append(
                        f"{user}: state={client.state.state} connections={client.connections} "
                        f"outbox={client.outbox} sent={len(outcomes[user])} "
                        f"users_seen={len(user_ids(events[user]))} ends={sorted(reply_ends(events[user]))}"
                    )
                lines.append("page sent: " + str(await page.evaluate("() => window.__sent")))
                lines.append("page submits: " + str(await page.evaluate("() => window.__submits")))
                lines.append("typed: " + str(typed))
                lines.append(
                    "page errors: "
                    + str([e for e in await page_events() if e["type"] in ("error", "refused")])
                )
                log = open(db + ".log").read().splitlines()
                lines += [line for line in log if "web" in line and ("refused" in line or "join" in line)][
                    -30:
                ]
                lines.append(
                    "page: outbox="
                    + str(await page.evaluate("() => window.chatkit.service.outbox.texts"))
                    + f" users_seen={len(user_ids(await page_events()))}"
                )
                return "\n".join(lines)

            async def page_events() -> list[dict]:
                return await page.evaluate("() => window.__events")

            async def settled() -> bool:
                """Nothing streaming, and every client (the page too) has caught up with the db."""
                users, replies = database(db)
                want_users = [u[0] for u in users]
                want_replies = sorted(r[0] for r in replies)
                seen = [*events.values(), await page_events()]
                return all(status in FINAL for _, status in replies) and all(
                    user_ids(e) == want_users and sorted(reply_ends(e)) == want_replies for e in seen
                )

            try:
                async with asyncio.timeout(WAIT):
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(chaos())
                        tg.create_task(type_in_page())
                        for client, user in zip(clients, CLIENTS):
                            tg.create_task(talk(client, user))
                    phase = "settling"
                    # The database changes before the frames that tell of it are sent: checking
                    # at each event a client or the page sees is enough.
                    await until(settled)
            except TimeoutError:
                pytest.fail("no progress within the time bound:\n" + await report())
            page_seen = await page_events()
            page_report = await report()
            for client in clients:
                await client.close()
            await browser.close()
    finally:
        proc.kill()

    assert kills == ["mid-message", "mid-reply"]
    assert page_errors == []
    users, replies = database(db)
    # Every send resolved, acknowledged or with a typed error.
    for user in CLIENTS:
        assert len(outcomes[user]) == PER_CLIENT
        assert all(isinstance(o, (dict, ClientError)) for o in outcomes[user]), outcomes[user]
    acknowledged = [o for u in CLIENTS for o in outcomes[u] if isinstance(o, dict)]
    # Every acknowledged message is stored exactly once, under the id it was acknowledged with.
    by_client_id = {cid: (mid, text) for mid, text, cid in users}
    assert len(by_client_id) == len(users)
    for ack in acknowledged:
        assert by_client_id[ack["client_id"]] == (ack["id"], ack["message"])
    texts = [text for _, text, _ in users]
    assert len(texts) == len(set(texts))
    # The page's sends each ended: stored, or refused in the open.
    for i in range(PAGE_SENDS):
        text = f"web-{i} w1 w2 w3"
        assert text in texts or any(e["type"] == "refused" and e["text"] == text for e in page_seen), (
            page_report
        )
    # Delivered once to every client, in the same order; every reply ended, seen once.
    want_users = [u[0] for u in users]
    for name, seen in [*events.items(), ("page", page_seen)]:
        assert user_ids(seen) == want_users, name
        assert sorted(reply_ends(seen)) == sorted(r[0] for r in replies), name
    assert {status for _, status in replies} <= FINAL
    assert all(c.connections >= 2 for c in clients)  # everyone came back after the kills
