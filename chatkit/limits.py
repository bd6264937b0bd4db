"""Limits that keep one client from locking everybody else out — sans-I/O.

- :class:`ConnectionLimiter`: counts per client address (SSE streams per
  address) and in total.
- :class:`ConnectionSlots`: the open connections of one port, in total and per
  client address. When the total is full, the oldest connection that is still
  waiting for its request head is closed to make room (a flood of slow,
  head-less connections from many addresses cannot lock a normal client out);
  when no connection is waiting for a head, or the new one's address is at its
  own cap, the server answers ``503`` with ``Retry-After`` at once and closes
  the socket, so a flood cannot use up the process's file descriptors.
- :class:`KeyedRateLimiter`: token buckets keyed on who the request *is* (the
  token's name, or the client address without sign-in) — never on a name the
  client declares itself.
- :class:`RoomQuota`: rooms a client address may create.

The servers own the I/O; these classes only count. :func:`refusal_bytes` is
the complete ``503`` answer sent before any request was parsed (there is no
request yet for an HTTP library to answer, so it is a constant written here).
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

__all__ = [
    "Limits",
    "ConnectionLimiter",
    "ConnectionSlots",
    "Slot",
    "KeyedRateLimiter",
    "RoomQuota",
    "refusal_bytes",
    "default_backlog",
    "default_max_connections",
]


def fd_limit() -> int:
    """The process's soft limit on open file descriptors (1024 where it cannot be read)."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return 1024
    return soft if soft > 0 else 1024


def default_max_connections() -> int:
    """Per port: what the descriptor limit leaves after 64 for the database, logs and clients, halved
    between the two ports, at most 1000 (96 under macOS's default limit of 256)."""
    return max(16, min(1000, (fd_limit() - 64) // 2))


@dataclass
class Limits:
    """Every limit of the hardened ports; each is a ``chatkit serve`` option."""

    max_connections: int = field(default_factory=default_max_connections)
    """Open connections per port, in total (``--max-connections``); derived from the fd limit."""
    max_connections_per_ip: int = 0
    """Open connections per port and client address (``--max-connections-per-ip``);
    0 = a quarter of ``max_connections``, so one address can never take them all."""
    max_streams_per_ip: int = 128
    """Open SSE streams per client address (``--max-streams-per-ip``)."""
    head_timeout: float = 10.0
    """Seconds to receive a whole request head, from the connection (or the previous answer) on."""
    body_timeout: float = 10.0
    """Seconds to receive a whole request body."""
    per_ip_factor: float = 10.0
    """Without sign-in, rate limits are per client address: a classroom behind one address gets
    this many times one user's rate (``--rate-limit`` is per token)."""
    v1_rate: float = 1.0
    """``/v1`` completions per second per token (or address) (``--v1-rate``)."""
    v1_burst: int = 5
    v1_max_tokens: int = 1024
    """Ceiling for a completion's ``max_tokens`` (pieces of text), whatever the client asks."""
    handshake_rate: float = 5.0
    """WebSocket handshakes and SSE streams per second per token (or address, times ``per_ip_factor``)."""
    handshake_burst: int = 20
    rooms_per_ip: int = 300
    """Rooms a client address may open per hour (``--rooms-per-ip``); empty rooms are freed."""
    retry_after_s: int = 5
    """``Retry-After`` of a ``503``."""
    backlog: int = 0
    """Each port's listen backlog (``--backlog``); 0 = derived from the descriptor limit.
    asyncio accepts up to this many connections in one go before any is counted, so the
    backlog of both ports must fit in what ``max_connections`` leaves of the descriptors
    (else a flood meets ``EMFILE``, and asyncio stops accepting for a second)."""
    max_upload_bytes: int = 5 * 1024 * 1024
    """Largest file upload (``POST /files``), in bytes (``--max-upload-bytes``); past it: ``413 too_large``."""
    max_image_pixels: int = 40_000_000
    """Largest uploaded image, width × height (``413 image_too_large``: refused before it is decoded)."""

    def __post_init__(self) -> None:
        if self.max_connections_per_ip <= 0:
            self.max_connections_per_ip = max(1, self.max_connections // 4)
        if self.backlog <= 0:
            self.backlog = default_backlog(self.max_connections)


def default_backlog(max_connections: int) -> int:
    """Per port: half of what both ports' connections and 32 more descriptors leave, 8 to 100
    (16 under a limit of 256 or 1024 with the default caps)."""
    return max(8, min(100, (fd_limit() - 2 * max_connections - 32) // 2))


class ConnectionLimiter:
    """Counts open connections, in total and per key (a client address)."""

    def __init__(self, total: int | None, per_key: int | None) -> None:
        self.total = total
        self.per_key = per_key
        self.open = 0
        self.by_key: collections.Counter[Hashable] = collections.Counter()
        self.refused = 0

    def acquire(self, key: Hashable) -> bool:
        """Take a slot for ``key``; ``False`` (and nothing taken) past a cap."""
        if (self.total is not None and self.open >= self.total) or (
            self.per_key is not None and self.by_key[key] >= self.per_key
        ):
            self.refused += 1
            return False
        self.open += 1
        self.by_key[key] += 1
        return True

    def release(self, key: Hashable) -> None:
        """Give a slot back (once per successful :meth:`acquire`)."""
        self.open -= 1
        self.by_key[key] -= 1
        if self.by_key[key] <= 0:
            del self.by_key[key]


@dataclass(eq=False, slots=True)
class Slot:
    """One open connection of a port (see :class:`ConnectionSlots`)."""

    key: Hashable
    """The client address."""
    evict: Callable[[], None]
    """Closes the connection when another needs its place (called at most once)."""
    released: bool = False


class ConnectionSlots:
    """Open connections of one port: capped in total and per client address.

    A connection waits for a request head from the moment it is accepted
    (:meth:`acquire`) until :meth:`head_received`, and again between requests
    on a kept-alive connection (:meth:`awaiting_head`). When the total cap is
    full, a new connection takes the place of the one that has been *waiting
    longest* for its head — that one is closed through its ``evict`` callback.
    A normal client sends its head within milliseconds, so it is never the
    oldest waiter; a slow client that holds a connection without finishing a
    head is the first to go. The per-address cap is never bypassed: a new
    connection from an address at its cap is refused, whatever waits.
    """

    def __init__(self, total: int | None, per_key: int | None) -> None:
        self.counts = ConnectionLimiter(total, per_key)
        self._waiting: dict[Slot, None] = {}  # insertion order: the longest waiting first
        self.evicted = 0

    @property
    def open(self) -> int:
        return self.counts.open

    @property
    def refused(self) -> int:
        return self.counts.refused

    def from_key(self, key: Hashable) -> int:
        """Connections open from ``key``."""
        return self.counts.by_key.get(key, 0)

    @property
    def waiting(self) -> int:
        """Connections waiting for a request head."""
        return len(self._waiting)

    def acquire(self, key: Hashable, evict: Callable[[], None]) -> Slot | None:
        """A slot for a new connection from ``key``, or ``None`` (refuse it).

        When the total is full, the connection waiting longest for its head is
        released and evicted first.
        """
        counts = self.counts
        full = counts.total is not None and counts.open >= counts.total
        at_own_cap = counts.per_key is not None and self.from_key(key) >= counts.per_key
        if full and not at_own_cap and self._waiting:
            victim = next(iter(self._waiting))
            self.release(victim)
            self.evicted += 1
            victim.evict()
        if not counts.acquire(key):
            return None
        slot = Slot(key, evict)
        self._waiting[slot] = None
        return slot

    def head_received(self, slot: Slot) -> None:
        """The connection's request head has arrived: it can no longer be evicted."""
        self._waiting.pop(slot, None)

    def awaiting_head(self, slot: Slot) -> None:
        """A kept-alive connection waits for its next request head (from now: the newest waiter)."""
        if not slot.released:
            self._waiting.pop(slot, None)
            self._waiting[slot] = None

    def release(self, slot: Slot) -> None:
        """The connection is closed (or evicted); a second call does nothing."""
        if slot.released:
            return
        slot.released = True
        self._waiting.pop(slot, None)
        self.counts.release(slot.key)


class _Bucket:
    __slots__ = ("tokens", "stamp")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens, self.stamp = tokens, stamp


class KeyedRateLimiter:
    """One token bucket per key, ``rate`` per second, ``burst`` saved up.

    At most ``max_keys`` buckets are kept; the least recently used goes first
    (a full bucket is what a forgotten key would get anyway).
    """

    def __init__(
        self, rate: float, burst: int, *, max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate, self.burst, self.max_keys, self.clock = rate, burst, max_keys, clock
        self._buckets: collections.OrderedDict[Hashable, _Bucket] = collections.OrderedDict()

    def take(self, key: Hashable) -> bool:
        """Spend one token of ``key``'s bucket; ``False`` when it is empty."""
        if self.rate <= 0:
            return True  # unlimited
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return True
        return False

    def retry_after(self, key: Hashable) -> float:
        """Seconds until ``key`` has a token again."""
        bucket = self._buckets.get(key)
        if bucket is None or bucket.tokens >= 1 or self.rate <= 0:
            return 0.0
        return (1 - bucket.tokens) / self.rate


class RoomQuota:
    """New rooms per client address in a sliding window (an hour by default)."""

    def __init__(
        self,
        per_key: int,
        window_s: float = 3600.0,
        *,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_key, self.window_s, self.max_keys, self.clock = per_key, window_s, max_keys, clock
        self._created: collections.OrderedDict[Hashable, collections.deque[float]] = collections.OrderedDict()

    def allow(self, key: Hashable) -> bool:
        """Record a room created by ``key``; ``False`` (nothing recorded) past the quota."""
        if self.per_key <= 0:
            return True
        now = self.clock()
        stamps = self._created.get(key)
        if stamps is None:
            stamps = self._created[key] = collections.deque()
            if len(self._created) > self.max_keys:
                self._created.popitem(last=False)
        self._created.move_to_end(key)
        while stamps and stamps[0] <= now - self.window_s:
            stamps.popleft()
        if len(stamps) >= self.per_key:
            return False
        stamps.append(now)
        return True


def refusal_bytes(status: int, code: str, message: str, retry_after: int | None = None) -> bytes:
    """A whole HTTP/1.1 answer, ``Connection: close``, for a connection refused before parsing."""
    body = json.dumps({"type": "error", "code": code, "message": message}).encode()
    reason = {503: "Service Unavailable", 429: "Too Many Requests", 408: "Request Timeout"}.get(
        status, "Error"
    )
    head = [
        f"HTTP/1.1 {status} {reason}",
        "Content-Type: application/json; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if retry_after is not None:
        head.append(f"Retry-After: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body
