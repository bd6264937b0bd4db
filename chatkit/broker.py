"""The Redis broker: what several ``chatkit serve`` processes share besides the store.

The store is the truth; the broker is an accelerator. It carries, per room,

- **live events** over Redis pub/sub (``chatkit:room:<id>``): committed
  messages, reply starts, chunks and completions, presence, typing, receipts
  and stop requests. Pub/sub is at-most-once: a process that was disconnected
  fills what it missed from the store (``messages_after``), which is why the
  receiving side (:mod:`chatkit.cluster`) orders everything by store id;
- **presence** with expiry: a sorted set per room (``chatkit:presence:<id>``)
  whose members are ``node␟user`` scored by their expiry time; every process
  refreshes its own members each heartbeat, so a dead process's members expire
  after ``presence_ttl`` without anyone waiting for it to come back;
- **the reply lease**: ``SET chatkit:lease:<id> <node>:<fence> NX PX ttl``
  with a fence from ``INCR chatkit:fence:<id>``; renewed and released only by
  its holder (compare-and-set scripts). The store's ``finish_reply`` only
  updates a reply still ``streaming``, so a holder that lost its lease can
  never overwrite what a survivor wrote.

Outages: the subscriber reconnects with exponential backoff and jitter, and
calls ``on_reconnect`` so the rooms re-check the store; publishing never
blocks a caller (events go through an in-order queue drained by one task; while
Redis is down they are dropped and their rooms are *poked* after reconnecting).

redis-py's pub/sub does not reconnect by itself (redis-py#2089), so this
module owns that loop; its sockets have no read timeout (an idle subscriber is
not an error — the pitfall behind channels_redis#422 with redis-py 8).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

__all__ = ["Broker", "Lease", "BrokerConfig"]

logger = logging.getLogger("chatkit.broker")

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""
_FAILURES = (RedisError, OSError, asyncio.TimeoutError)


@dataclass(frozen=True)
class BrokerConfig:
    """Timings of the broker. Defaults suit a class; tests shorten them."""

    heartbeat: float = 2.0
    """Seconds between presence refreshes (and lease/reply checks)."""
    presence_ttl: float = 6.0
    """A member not refreshed for this long is gone: a dead process's members leave
    within ``presence_ttl + heartbeat`` seconds."""
    lease_ttl: float = 6.0
    """A reply lease not renewed for this long expires; its holder renews every third of it."""
    backoff_initial: float = 0.05
    backoff_cap: float = 2.0


@dataclass(frozen=True, slots=True)
class Lease:
    """A room's reply lease: held by ``token`` (``node:fence``) until it expires."""

    room: str
    token: str
    fence: int


def channel(room: str) -> str:
    return f"chatkit:room:{room}"


class Broker:
    """One process's connection to Redis: room events, presence and reply leases."""

    def __init__(
        self,
        url: str,
        *,
        node: str | None = None,
        config: BrokerConfig | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.url = url
        self.node = node or uuid.uuid4().hex[:12]
        self.config = config or BrokerConfig()
        self._rng = rng or random.Random()
        self._sleep = sleep
        # Commands fail fast (no hidden retries): the caller decides what an outage means.
        self.redis = aioredis.Redis.from_url(
            url,
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )
        self._renew = self.redis.register_script(_RENEW)
        self._release = self.redis.register_script(_RELEASE)
        self._rooms: set[str] = set()
        self._subscribed: dict[str, asyncio.Event] = {}
        self._pubsub: Any = None
        self._outbox: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue()
        """Events to publish in order; ``None`` only wakes the publisher (to poke dirty rooms)."""
        self._dirty: set[str] = set()
        self._tasks: list[asyncio.Task] = []
        self._on_event: Callable[[str, dict[str, Any]], None] = lambda room, event: None
        self._on_reconnect: Callable[[], Awaitable[None]] | None = None
        self._link_up = asyncio.Event()
        self.outages = 0
        """How many times the subscription was lost (each is followed by a store re-check)."""

    # -- life cycle ----------------------------------------------------------

    async def start(
        self,
        on_event: Callable[[str, dict[str, Any]], None],
        on_reconnect: Callable[[], Awaitable[None]] | None = None,
        *,
        wait: float | None = 10.0,
    ) -> Broker:
        """Start the subscriber and the publisher; with ``wait``, until connected (or raise)."""
        self._on_event = on_event
        self._on_reconnect = on_reconnect
        self._tasks = [
            asyncio.create_task(self._subscriber(), name=f"chatkit-broker-sub-{self.node}"),
            asyncio.create_task(self._publisher(), name=f"chatkit-broker-pub-{self.node}"),
        ]
        if wait is not None:
            try:
                async with asyncio.timeout(wait):
                    await self._link_up.wait()
            except TimeoutError:
                await self.close()
                raise ConnectionError(f"cannot reach the broker at {self.url}") from None
        return self

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self._close_pubsub()
        await self.redis.aclose()

    @property
    def connected(self) -> bool:
        return self._link_up.is_set()

    # -- subscribing ---------------------------------------------------------

    async def subscribe(self, room: str, timeout: float = 5.0) -> None:
        """Receive ``room``'s events from now on (returns once Redis confirmed, or
        at once while Redis is down: the reconnect re-subscribes and re-checks)."""
        if room in self._rooms:
            return
        self._rooms.add(room)
        confirmed = self._subscribed.setdefault(room, asyncio.Event())
        pubsub = self._pubsub
        if pubsub is None or not self.connected:
            return
        try:
            await pubsub.subscribe(channel(room))
            async with asyncio.timeout(timeout):
                await confirmed.wait()
        except (*_FAILURES, TimeoutError) as exc:
            logger.warning("subscribe %s failed (%s); the reconnect will re-check it", room, exc)

    async def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                await pubsub.aclose()
            except _FAILURES:
                pass

    async def _subscriber(self) -> None:
        attempt = 0
        first = True
        while True:
            client = aioredis.Redis.from_url(
                self.url,
                socket_timeout=None,
                socket_connect_timeout=2.0,
                retry=Retry(NoBackoff(), 0),
                decode_responses=True,
            )
            try:
                pubsub = client.pubsub()
                await pubsub.ping()  # connects
                self._pubsub = pubsub
                for event in self._subscribed.values():
                    event.clear()
                if self._rooms:
                    await pubsub.subscribe(*(channel(r) for r in self._rooms))
                self._link_up.set()
                attempt = 0
                if self._dirty:
                    self._outbox.put_nowait(None)
                if not first:
                    logger.warning("broker: reconnected to %s; re-checking rooms from the store", self.url)
                    if self._on_reconnect is not None:
                        await self._on_reconnect()
                first = False
                while True:
                    message = await pubsub.get_message(timeout=self.config.heartbeat)
                    if message is None:
                        await pubsub.ping()  # a dead connection shows up within a heartbeat
                        continue
                    self._dispatch(message)
            except asyncio.CancelledError:
                raise
            except _FAILURES as exc:
                if self._link_up.is_set():
                    self.outages += 1
                    logger.warning("broker: lost %s (%s); reconnecting", self.url, exc)
                self._link_up.clear()
            finally:
                await self._close_pubsub()
                try:
                    await client.aclose()
                except _FAILURES:
                    pass
            attempt += 1
            cfg = self.config
            delay = min(cfg.backoff_cap, cfg.backoff_initial * 2 ** (attempt - 1))
            await self._sleep(delay * self._rng.uniform(0.5, 1.0))

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        name = message.get("channel") or ""
        room = name.removeprefix("chatkit:room:")
        if kind == "subscribe":
            event = self._subscribed.get(room)
            if event is not None:
                event.set()
            return
        if kind != "message":
            return
        try:
            event = json.loads(message["data"])
        except (TypeError, ValueError):
            logger.warning("broker: ignored a malformed event on %s", name)
            return
        if event.get("node") == self.node:
            return  # our own event, delivered locally already
        try:
            self._on_event(room, event)
        except Exception:
            logger.exception("broker: handling an event of room %s failed", room)

    # -- publishing ----------------------------------------------------------

    def publish(self, room: str, event: dict[str, Any]) -> None:
        """Send ``event`` to every other process serving ``room``; never blocks.

        Events of one process leave in the order they were published. While
        Redis is unreachable they are dropped and the room is *poked* after the
        reconnect (other processes then re-read it from the store).
        """
        event["node"] = self.node
        self._outbox.put_nowait((room, json.dumps(event, ensure_ascii=False)))

    async def _publisher(self) -> None:
        while True:
            items = [await self._outbox.get()]
            while not self._outbox.empty():
                items.append(self._outbox.get_nowait())
            batch = [item for item in items if item is not None]
            try:
                await self._send(batch)
            finally:
                for _ in items:
                    self._outbox.task_done()

    async def flush(self, timeout: float = 2.0) -> None:
        """Wait until every event published so far has been handed to Redis (or dropped)."""
        try:
            async with asyncio.timeout(timeout):
                await self._outbox.join()
        except TimeoutError:
            logger.warning("broker: %d events not published before closing", self._outbox.qsize())

    async def _send(self, batch: list[tuple[str, str]]) -> None:
        if not self.connected:
            self._dirty.update(room for room, _ in batch)
            return
        try:
            if self._dirty:
                dirty, self._dirty = self._dirty, set()
                batch = [(r, json.dumps({"kind": "poke", "node": self.node})) for r in dirty] + batch
            async with self.redis.pipeline(transaction=False) as pipe:
                for room, data in batch:
                    pipe.publish(channel(room), data)
                await pipe.execute()
        except _FAILURES as exc:
            logger.warning("broker: publish failed (%s); rooms will be re-checked", exc)
            self._dirty.update(room for room, _ in batch)

    # -- presence ------------------------------------------------------------

    async def refresh_presence(self, room: str, users: Iterable[str]) -> dict[str, set[str]] | None:
        """Renew this process's members of ``room`` and return every live member by node.

        Expired entries (a dead process's members) are removed. ``None`` while
        Redis is unreachable (the caller keeps its last view).
        """
        key = f"chatkit:presence:{room}"
        now = time.time()
        expiry = now + self.config.presence_ttl
        mine = {f"{self.node}\x1f{u}": expiry for u in users}
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.zremrangebyscore(key, "-inf", now)
                # our members that left since the last refresh
                if mine:
                    pipe.zadd(key, mine)
                pipe.zrange(key, 0, -1)
                pipe.pexpire(key, int(self.config.presence_ttl * 2000))
                results = await pipe.execute()
        except _FAILURES:
            return None
        nodes: dict[str, set[str]] = {}
        stale = []
        for entry in results[-2]:
            node, _, user = entry.partition("\x1f")
            if node == self.node and entry not in mine:
                stale.append(entry)
                continue
            nodes.setdefault(node, set()).add(user)
        if stale:
            await self.drop_presence(room, [e.partition("\x1f")[2] for e in stale])
        return nodes

    async def drop_presence(self, room: str, users: Iterable[str]) -> None:
        entries = [f"{self.node}\x1f{u}" for u in users]
        if not entries:
            return
        try:
            await self.redis.zrem(f"chatkit:presence:{room}", *entries)
        except _FAILURES:
            pass  # they expire

    # -- the reply lease -----------------------------------------------------

    async def acquire(self, room: str) -> Lease | None:
        """Take ``room``'s reply lease if nobody holds it; ``None`` otherwise (or while down)."""
        try:
            fence = int(await self.redis.incr(f"chatkit:fence:{room}"))
            token = f"{self.node}:{fence}"
            ok = await self.redis.set(
                f"chatkit:lease:{room}", token, nx=True, px=int(self.config.lease_ttl * 1000)
            )
        except _FAILURES:
            return None
        return Lease(room, token, fence) if ok else None

    async def reclaim(self, lease: Lease) -> bool:
        """Set a lease again after Redis lost it (a restart); ``False`` if someone else holds it."""
        try:
            ok = await self.redis.set(
                f"chatkit:lease:{lease.room}", lease.token, nx=True, px=int(self.config.lease_ttl * 1000)
            )
            if ok:
                return True
            return await self.redis.get(f"chatkit:lease:{lease.room}") == lease.token
        except _FAILURES:
            return False

    async def renew(self, lease: Lease) -> bool | None:
        """Extend the lease; ``False`` when it is no longer ours, ``None`` while Redis is down."""
        try:
            return bool(
                await self._renew(
                    keys=[f"chatkit:lease:{lease.room}"],
                    args=[lease.token, int(self.config.lease_ttl * 1000)],
                )
            )
        except _FAILURES:
            return None

    async def release(self, lease: Lease) -> bool:
        """Give the lease back (only if still ours) and tell the room it is free."""
        try:
            done = bool(await self._release(keys=[f"chatkit:lease:{lease.room}"], args=[lease.token]))
        except _FAILURES:
            return False
        self.publish(lease.room, {"kind": "released"})
        return done

    async def holder(self, room: str) -> str | None:
        """The token holding ``room``'s lease (``None``: free, or Redis down)."""
        try:
            return await self.redis.get(f"chatkit:lease:{room}")  # type: ignore[return-value]
        except _FAILURES:
            return None
