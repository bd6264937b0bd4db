"""Several chatkit servers on one Redis and one database are one chat.

In-process servers (one event loop, separate hubs, stores and broker
connections) on a real ``redis-server``, with SQLite and with PostgreSQL.
"""

from __future__ import annotations

import asyncio

import pytest

from chatkit import ChatServer
from chatkit.client import ChatClient
from chatkit.llm import EchoStreamer

WAIT = 10.0
BEAT = 0.2  # broker heartbeat in these tests: presence/lease expiry after 3 beats


@pytest.fixture
async def cluster(redis_service, store_url):
    """Start ``n`` servers sharing the broker and the store; all stopped at the end."""
    started: list[ChatServer] = []

    async def start(n: int, **options) -> list[ChatServer]:
        for _ in range(n):
            options.setdefault("streamer", EchoStreamer(delay=0.01))
            server = await ChatServer(
                port=0,
                http_port=-1,
                db=store_url,
                broker=redis_service.url,
                broker_heartbeat=BEAT,
                rate_limit=100,
                **options,
            ).start()
            started.append(server)
        return started[-n:]

    yield start
    for server in started:
        await server.stop()


class Seen:
    """A client's events, with a wait for a condition on them."""

    def __init__(self, client: ChatClient) -> None:
        self.events: list[dict] = []
        self.changed = asyncio.Event()
        client.on_event(self._add)

    def _add(self, event: dict) -> None:
        self.events.append(event)
        self.changed.set()

    async def until(self, predicate, timeout: float = WAIT):
        async with asyncio.timeout(timeout):
            while not (result := predicate(self.events)):
                self.changed.clear()
                await self.changed.wait()
        return result

    def ids(self, kind: str) -> list[int]:
        return [e["id"] for e in self.events if e["type"] == kind]


def completes(events: list[dict]) -> list[dict]:
    return [e for e in events if e["type"] == "ai_complete"]


async def test_two_processes_are_one_room(cluster):
    one, two = await cluster(2)
    async with ChatClient(one.ws_url("r"), user="ann") as ann, ChatClient(two.ws_url("r"), user="bob") as bob:
        seen_ann, seen_bob = Seen(ann), Seen(bob)
        # presence is the union of both processes' members
        await seen_ann.until(lambda ev: any(e["type"] == "user_join" and e["username"] == "bob" for e in ev))
        assert sorted(ann.online) == ["ann", "bob"]
        sent = await ann.send("hello from one")
        await seen_bob.until(lambda ev: sent["id"] in [e["id"] for e in ev if e["type"] == "message"])
        await seen_bob.until(completes)
        await seen_ann.until(completes)
        assert completes(seen_ann.events)[0]["message"] == completes(seen_bob.events)[0]["message"]
        assert completes(seen_bob.events)[0]["status"] == "complete"
        # typing and receipts cross too
        await bob.typing(True)
        await seen_ann.until(lambda ev: any(e["type"] == "typing" and e["user"] == "bob" for e in ev))
        await bob.mark_read(sent["id"])
        await seen_ann.until(lambda ev: any(e["type"] == "read_receipt" and e["user"] == "bob" for e in ev))
        # and bob leaving process two is seen on process one
    await asyncio.sleep(0)


async def test_one_order_and_one_reply_at_a_time_across_processes(cluster):
    servers = await cluster(3, reply_queue=20)  # 9 prompts may wait at once
    clients = [ChatClient(s.ws_url("busy"), user=f"u{i}") for i, s in enumerate(servers)]
    seen = [Seen(c) for c in clients]
    for c in clients:
        await c.start()
    try:
        await asyncio.gather(*(c.send(f"m{i}-{k} a b c d") for i, c in enumerate(clients) for k in range(3)))
        # every prompt gets its reply: 9 completions everywhere
        for s in seen:
            await s.until(lambda ev: len(completes(ev)) == 9)
        orders = [
            [(e["type"], e["id"]) for e in s.events if e["type"] in ("message", "ai_complete")] for s in seen
        ]
        assert orders[0] == orders[1] == orders[2], "processes delivered different orders"
        ids = [i for _, i in orders[0]]
        assert len(ids) == len(set(ids)) == 18
        # one reply at a time per room: no chunk of a reply arrives before the previous reply completed
        current = None
        for e in seen[0].events:
            if e["type"] == "ai_chunk":
                assert current in (None, e["id"]), "two replies streamed at once"
                current = e["id"]
            elif e["type"] == "ai_complete":
                assert current in (None, e["id"])
                current = None
        assert all(e["status"] == "complete" for e in completes(seen[0].events))
    finally:
        for c in clients:
            await c.close()


async def test_stop_from_another_process_and_late_join_replay(cluster):
    one, two = await cluster(2, streamer=EchoStreamer(delay=0.05))
    async with ChatClient(one.ws_url("s"), user="ann") as ann, ChatClient(two.ws_url("s"), user="bob") as bob:
        seen_ann = Seen(ann)
        await ann.send(" ".join(f"w{i}" for i in range(100)))
        await seen_ann.until(lambda ev: any(e["type"] == "ai_chunk" for e in ev))
        await bob.stop_reply()  # bob's process does not run the reply: it asks the room
        done = (await seen_ann.until(completes))[0]
        assert done["status"] == "cancelled"
    cho = ChatClient(two.ws_url("s"), user="cho", after=0)
    seen_cho = Seen(cho)  # before start: the replay follows the connection frame at once
    async with cho:
        replayed = await seen_cho.until(
            lambda ev: [e for e in ev if e["type"] == "message" and e["id"] == done["id"]]
        )
        assert replayed[0]["status"] == "cancelled" and replayed[0]["message"] == done["message"]


async def test_redis_restart_loses_nothing(cluster, redis_service):
    one, two = await cluster(2)
    async with ChatClient(one.ws_url("o"), user="ann") as ann, ChatClient(two.ws_url("o"), user="bob") as bob:
        seen_bob = Seen(bob)
        first = await ann.send("before")
        await seen_bob.until(lambda ev: first["id"] in [e["id"] for e in ev if e["type"] == "message"])
        redis_service.kill()
        during = await ann.send("while redis is down")  # stored and shown on process one
        redis_service.start()
        after = await ann.send("after")
        await seen_bob.until(lambda ev: after["id"] in [e["id"] for e in ev if e["type"] == "message"])
        msgs = [e["id"] for e in seen_bob.events if e["type"] == "message" and e["is_user"]]
        assert msgs == [first["id"], during["id"], after["id"]]
        await seen_bob.until(
            lambda ev: (
                len(completes(ev)) + len([e for e in ev if e["type"] == "message" and not e["is_user"]]) >= 3
            )
        )


async def test_join_mid_reply_on_another_process_gets_the_snapshot(cluster):
    """A member joining process two while process one streams a reply gets the text so far at once."""
    from .conftest import peer

    one, two = await cluster(2, streamer=EchoStreamer(delay=0.05))
    async with (
        ChatClient(one.ws_url("snap"), user="ann") as ann,
        ChatClient(two.ws_url("snap"), user="bob") as bob,
    ):
        seen_bob = Seen(bob)
        sent = await ann.send(" ".join(f"w{i}" for i in range(60)))
        await seen_bob.until(lambda ev: sum(e["type"] == "ai_chunk" for e in ev) >= 3)  # two knows it streams
        async with peer(two.ws_url("snap", user="cho", after=sent["id"])) as cho:
            frame = await cho.until("ai_chunk", timeout=WAIT)
            assert frame.get("snapshot") is True and frame["chunk"].startswith("w0 w1 w2")
            done = await cho.until("ai_complete", timeout=WAIT)
        assert done["message"].startswith(frame["chunk"])


def reaction_state(events: list[dict], message_id: int) -> dict[str, list[str]] | None:
    """The last reaction state a client was sent for a message: emoji -> who."""
    state = None
    for e in events:
        if e["type"] == "reaction" and e["message_id"] == message_id:
            state = {r["emoji"]: sorted(r["users"]) for r in e["reactions"]}
    return state


async def test_reactions_reach_every_process_and_resume_exactly(cluster):
    from .conftest import peer

    one, two = await cluster(2)
    async with (
        ChatClient(one.ws_url("re"), user="ann") as ann,
        ChatClient(two.ws_url("re"), user="bob") as bob,
    ):
        seen_ann, seen_bob = Seen(ann), Seen(bob)
        msg = await ann.send("react to me")
        mid = msg["id"]
        await seen_bob.until(lambda ev: mid in [e["id"] for e in ev if e["type"] == "message"])
        # made on process two, seen on process one (and the other way round)
        await bob.react(mid, "👍")
        await seen_ann.until(lambda ev: reaction_state(ev, mid) == {"👍": ["bob"]})
        await ann.react(mid, "👍")
        await seen_bob.until(lambda ev: reaction_state(ev, mid) == {"👍": ["ann", "bob"]})
        # concurrent toggles on both processes: every member ends with the stored state
        names = [f"u{i}" for i in range(6)]
        others = [ChatClient((one if i % 2 else two).ws_url("re"), user=n) for i, n in enumerate(names)]
        for client in others:
            await client.start()
        try:
            await asyncio.gather(*(client.react(mid, "🎉") for client in others))
            expected = {"👍": ["ann", "bob"], "🎉": sorted(names)}
            await seen_ann.until(lambda ev: reaction_state(ev, mid) == expected)
            await seen_bob.until(lambda ev: reaction_state(ev, mid) == expected)
        finally:
            for client in others:
                await client.close()
        # a member resuming on process two gets a reaction made on process one meanwhile
        await ann.react(mid, "❤️")
        await seen_bob.until(lambda ev: "❤️" in (reaction_state(ev, mid) or {}))
        async with peer(two.ws_url("re", user="cho", after=mid)) as cho:
            frame = await cho.until("reaction", timeout=WAIT)
            assert frame["message_id"] == mid and {r["emoji"] for r in frame["reactions"]} == {
                "👍",
                "🎉",
                "❤️",
            }


async def test_a_reaction_during_a_redis_outage_reaches_live_and_resuming_members(cluster, redis_service):
    """Made on process one while Redis is down (its relay is lost), while process two delivers
    newer rows: after the reconnect two's members get it, and a member of two that resumes
    after those newer rows gets it too (the change is noted as late as two delivered)."""
    from .conftest import peer

    one, two = await cluster(2)
    async with (
        ChatClient(one.ws_url("out"), user="ann") as ann,
        ChatClient(two.ws_url("out"), user="bob") as bob,
    ):
        seen_ann, seen_bob = Seen(ann), Seen(bob)
        msg = await ann.send("before the outage")
        mid = msg["id"]
        await seen_bob.until(lambda ev: len(completes(ev)) == 1)  # the message and its reply reached two
        redis_service.kill()
        await ann.react(mid, "🔥")
        await seen_ann.until(lambda ev: reaction_state(ev, mid) == {"🔥": ["ann"]})
        newer = await bob.send("newer, on two, while Redis is down")  # two's members go past the reaction
        assert reaction_state(seen_bob.events, mid) is None
        redis_service.start()
        await seen_bob.until(lambda ev: reaction_state(ev, mid) == {"🔥": ["ann"]})
        async with peer(two.ws_url("out", user="cho", after=newer["id"])) as cho:
            frame = await cho.until("reaction", timeout=WAIT)
            assert frame["message_id"] == mid and frame["reactions"][0]["users"] == ["ann"]


async def test_the_reply_row_is_reserved_with_the_prompt(cluster, store_url):
    """As with one process: a prompt and its reply's row are one transaction, so the reply is
    the room's next row whichever process answers it, and the message frame names it."""
    from chatkit.storage import open_store

    one, two = await cluster(2, streamer=EchoStreamer(delay=0.02))
    async with (
        ChatClient(one.ws_url("rv"), user="ann") as ann,
        ChatClient(two.ws_url("rv"), user="bob") as bob,
    ):
        seen_ann, seen_bob = Seen(ann), Seen(bob)
        # sent while the first reply still streams: the next prompts queue behind it
        sent = [await ann.send("a1 x y z"), await bob.send("b1 x y z"), await ann.send("a2 x y z")]
        for seen in (seen_ann, seen_bob):
            await seen.until(
                lambda ev: (
                    len(completes(ev)) + sum(e["type"] == "message" and not e["is_user"] for e in ev) >= 3
                )
            )
    async with await open_store(store_url, recover=False) as store:
        rows = await store.messages_after("rv", 0)
    assert [r.is_user for r in rows] == [True, False] * 3, [(r.id, r.user) for r in rows]
    assert [r.id for r in rows if r.is_user] == [s["id"] for s in sent]
    replies = {rows[i].id: rows[i + 1] for i in range(0, 6, 2)}
    for prompt in sent:
        assert (
            replies[prompt["id"]].status == "complete" and replies[prompt["id"]].content == prompt["message"]
        )
    # each process's members learn which row is the reply, so their resume cursor stays below it
    # until it ends: the message frame names it (``reply_id``) — relayed, or delivered from the
    # store by a process filling a gap (a local post overtook the relay) while the reply has not
    # ended — or, if it had ended by then, the reply's finished row follows the prompt. Never a
    # wrong row. (An empty snapshot is not shown to the application, so it cannot stand in here.)
    for seen in (seen_ann, seen_bob):
        named = {e["id"]: e.get("reply_id") for e in seen.events if e["type"] == "message" and e["is_user"]}
        assert set(named) == set(replies), named
        for prompt_id, reply in replies.items():
            assert named[prompt_id] in (reply.id, None), (prompt_id, named)
            if named[prompt_id] is None:
                ids = [
                    e.get("id") for e in seen.events if e["type"] in ("message", "ai_chunk", "ai_complete")
                ]
                after = ids[ids.index(prompt_id) + 1 :]
                assert after and after[0] == reply.id, (prompt_id, reply.id, ids)


async def test_a_takeover_never_interrupts_a_prompt_posted_while_it_looks(cluster, store_url):
    """A takeover (this process holds the lease, a reply elsewhere looks dead) ends the
    replies it tracks whose prompt is no longer waiting. A prompt another process posts
    while the takeover reads the waiting ones from the store is waiting all the same: its
    reserved reply must not be stored ``interrupted`` (its claim would then reserve a
    second row: two replies to one prompt, seen in the chaos test on a loaded machine)."""
    from chatkit.storage import open_store

    one, two = await cluster(2)
    async with (
        ChatClient(one.ws_url("tk"), user="ann") as ann,
        ChatClient(two.ws_url("tk"), user="bob") as bob,
    ):
        seen_ann = Seen(ann)
        room, view = one.hub.rooms["tk"], one.cluster._view("tk")
        queued_replies = one.hub.store.queued_replies
        posted: list[dict] = []

        async def queued_then_a_post(session_id: str) -> set[int]:
            queued = await queued_replies(session_id)  # read before bob's prompt is stored
            if not posted:
                posted.append(await bob.send("posted during the takeover"))
                # delivered here, its reserved reply tracked, before the takeover goes on
                await seen_ann.until(lambda ev: posted[0]["id"] in seen_ann.ids("message"))
                assert any(r.id > posted[0]["id"] and not r.started for r in view.replies.values())
            return queued

        one.hub.store.queued_replies = queued_then_a_post
        try:
            async with one.cluster.lease(room):  # the takeover runs with the lease in hand
                pass
        finally:
            one.hub.store.queued_replies = queued_replies
        await seen_ann.until(lambda ev: [e for e in completes(ev) if e["status"] == "complete"])
    async with await open_store(store_url, recover=False) as store:
        rows = await store.messages_after("tk", 0)
    assert [(r.is_user, r.status) for r in rows] == [(True, "complete"), (False, "complete")], rows
    assert rows[0].id == posted[0]["id"]
