"""chatkit.limits: connection caps, keyed rate limits, room quotas (no I/O)."""

from __future__ import annotations

from chatkit.limits import ConnectionLimiter, KeyedRateLimiter, RoomQuota, refusal_bytes


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
