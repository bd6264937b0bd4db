"""chatkit.limits: connection caps, keyed rate limits, room quotas (no I/O)."""

from __future__ import annotations

from chatkit.limits import ConnectionLimiter, ConnectionSlots, KeyedRateLimiter, RoomQuota, refusal_bytes


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_connection_caps_total_and_per_address():
    lim = ConnectionLimiter(total=3, per_key=2)
    assert lim.acquire("a") and lim.acquire("a")
    assert not lim.acquire("a")  # per address
    assert lim.acquire("b")
    assert not lim.acquire("c")  # total
    assert lim.refused == 2
    lim.release("a")
    assert lim.acquire("c")
    assert lim.open == 3 and lim.by_key == {"a": 1, "b": 1, "c": 1}


def test_a_full_port_evicts_the_connection_waiting_longest_for_its_head():
    slots = ConnectionSlots(total=3, per_key=2)
    evicted: list[str] = []

    def take(key: str, name: str):
        return slots.acquire(key, lambda: evicted.append(name))

    a1, a2, b1 = take("a", "a1"), take("a", "a2"), take("b", "b1")
    assert a1 and a2 and b1 and slots.waiting == 3
    slots.head_received(a1)  # a1 is being served: never evicted while it is
    c1 = take("c", "c1")  # full: a2 has waited longest for a head
    assert c1 and evicted == ["a2"] and slots.evicted == 1 and slots.open == 3
    assert a2.released and slots.from_key("a") == 1
    slots.release(a2)  # its connection_lost comes later: nothing is counted twice
    assert slots.open == 3
    slots.awaiting_head(a1)  # kept alive after its answer: now the newest waiter
    slots.head_received(b1)
    c2 = take("c", "c2")
    assert c2 and evicted == ["a2", "c1"]  # c1 had waited longer than a1
    b2 = take("b", "b2")
    assert b2 and evicted == ["a2", "c1", "a1"]
    assert take("b", "b3") is None  # at its own cap: refused, nobody evicted for it
    assert evicted == ["a2", "c1", "a1"] and slots.refused == 1
    slots.head_received(c2)
    slots.head_received(b2)
    assert take("f", "f1") is None  # full, and nobody is waiting for a head: refused (503)
    assert len(evicted) == 3 and slots.refused == 2 and slots.open == 3
    for slot in (b1, c2, b2):
        slots.release(slot)
    assert slots.open == 0 and slots.waiting == 0 and slots.counts.by_key == {}


def test_rate_limit_is_per_key_and_refills():
    clock = Clock()
    lim = KeyedRateLimiter(rate=2, burst=3, clock=clock)
    assert [lim.take("ann") for _ in range(4)] == [True, True, True, False]
    assert lim.take("bob")  # another key has its own bucket
    assert lim.retry_after("ann") == 0.5
    clock.now += 0.5
    assert lim.take("ann") and not lim.take("ann")


def test_rate_limiter_forgets_least_recently_used_keys():
    lim = KeyedRateLimiter(rate=1, burst=1, max_keys=2, clock=Clock())
    for key in ("a", "b", "c"):
        assert lim.take(key)
    assert len(lim._buckets) == 2 and "a" not in lim._buckets


def test_room_quota_slides():
    clock = Clock()
    quota = RoomQuota(2, window_s=60, clock=clock)
    assert quota.allow("10.0.0.1") and quota.allow("10.0.0.1")
    assert not quota.allow("10.0.0.1")
    assert quota.allow("10.0.0.2")
    clock.now += 60
    assert quota.allow("10.0.0.1")


def test_refusal_is_a_complete_http_answer():
    import h11

    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    conn.receive_data(refusal_bytes(503, "too_many_connections", "busy", retry_after=5))
    response = conn.next_event()
    assert response.status_code == 503
    assert dict(response.headers)[b"retry-after"] == b"5"
    body = conn.next_event()
    assert b'"code": "too_many_connections"' in body.data
