"""The Redis broker on a real ``redis-server``: events, presence with expiry, the lease, outages."""

from __future__ import annotations

import asyncio

from chatkit.broker import Broker, BrokerConfig

from .conftest import TIMEOUT

FAST = BrokerConfig(heartbeat=0.2, presence_ttl=0.6, lease_ttl=0.6, backoff_initial=0.02, backoff_cap=0.2)
WAIT = TIMEOUT


class Inbox:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []
        self.changed = asyncio.Event()
        self.reconnects = 0

    def __call__(self, room: str, event: dict) -> None:
        self.events.append((room, event))
        self.changed.set()

    async def on_reconnect(self) -> None:
        self.reconnects += 1
        self.changed.set()

    async def until(self, predicate) -> None:
        async with asyncio.timeout(WAIT):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


async def brokers(url: str, n: int) -> tuple[list[Broker], list[Inbox]]:
    inboxes = [Inbox() for _ in range(n)]
    out = []
    for i, inbox in enumerate(inboxes):
        out.append(await Broker(url, node=f"n{i}", config=FAST).start(inbox, inbox.on_reconnect))
    return out, inboxes


async def test_events_reach_other_processes_in_order_not_the_sender(redis_service):
    (a, b), (ia, ib) = await brokers(redis_service.url, 2)
    try:
        await a.subscribe("r")
        await b.subscribe("r")
        for i in range(50):
            a.publish("r", {"kind": "msg", "id": i})
        a.publish("elsewhere", {"kind": "msg", "id": -1})
        await ib.until(lambda: len(ib.events) == 50)
        assert [e["id"] for _, e in ib.events] == list(range(50))
        assert {room for room, _ in ib.events} == {"r"} and ib.events[0][1]["node"] == "n0"
        b.publish("r", {"kind": "typing"})
        await ia.until(lambda: ia.events)
        assert [e["kind"] for _, e in ia.events] == ["typing"]  # not its own 50
    finally:
        await a.close()
        await b.close()


async def test_presence_expires_for_a_process_that_stops_refreshing(redis_service):
    (a, b), _ = await brokers(redis_service.url, 2)
    try:
        assert await a.refresh_presence("r", ["ann", "bob"]) == {"n0": {"ann", "bob"}}
        assert await b.refresh_presence("r", ["cho"]) == {"n0": {"ann", "bob"}, "n1": {"cho"}}
        assert await a.refresh_presence("r", ["ann"]) == {"n0": {"ann"}, "n1": {"cho"}}  # bob left
        # n1 stops refreshing (a dead process): its members expire without it
        async with asyncio.timeout(WAIT):
            while (view := await a.refresh_presence("r", ["ann"])) != {"n0": {"ann"}}:
                await asyncio.sleep(FAST.heartbeat)  # the heartbeat period is what is tested
        assert view == {"n0": {"ann"}}
    finally:
        await a.close()
        await b.close()


async def test_lease_is_exclusive_fenced_renewed_and_expires(redis_service):
    (a, b), (ia, _) = await brokers(redis_service.url, 2)
    try:
        await a.subscribe("r")
        first = await a.acquire("r")
        assert first is not None and await b.acquire("r") is None
        assert await a.renew(first) is True
        assert await b.holder("r") == first.token
        assert await a.release(first) is True
        second = await b.acquire("r")
        assert second is not None and second.fence > first.fence
        assert await a.renew(first) is False and await a.release(first) is False  # fenced off
        # b dies holding it: the lease expires by itself
        async with asyncio.timeout(WAIT):
            while (third := await a.acquire("r")) is None:
                await asyncio.sleep(FAST.heartbeat)  # the lease's expiry in Redis is what is tested
        assert third.fence > second.fence and await b.renew(second) is False
    finally:
        await a.close()
        await b.close()


async def test_redis_restart_reconnects_resubscribes_and_reports_it(redis_service):
    (a, b), (ia, ib) = await brokers(redis_service.url, 2)
    try:
        await b.subscribe("r")
        lease = await a.acquire("r")
        redis_service.restart()  # every key and subscription is gone
        await ib.until(lambda: ib.reconnects == 1)
        assert b.outages == 1
        async with asyncio.timeout(WAIT):
            while not a.connected or not await a.reclaim(lease):  # the holder takes it back
                await asyncio.sleep(FAST.heartbeat)  # retried at the heartbeat, as the hub's renewal does
        assert await b.holder("r") == lease.token
        a.publish("r", {"kind": "msg", "id": 1})
        await ib.until(lambda: any(e.get("id") == 1 for _, e in ib.events))
    finally:
        await a.close()
        await b.close()


async def test_publish_while_redis_is_down_pokes_the_room_afterwards(redis_service):
    (a, b), (ia, ib) = await brokers(redis_service.url, 2)
    try:
        await b.subscribe("r")
        redis_service.kill()
        async with asyncio.timeout(WAIT):
            while a.connected:  # the broker has no event for a lost link (only for one restored)
                await asyncio.sleep(0.01)
        a.publish("r", {"kind": "msg", "id": 7})  # dropped: Redis is down
        redis_service.start()
        await ib.until(lambda: any(e["kind"] == "poke" for _, e in ib.events))
        assert ib.reconnects == 1
    finally:
        await a.close()
        await b.close()
