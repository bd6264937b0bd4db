"""`chatkit.pacing`: paced streams share one timer per tick."""

from __future__ import annotations

import asyncio
import gc
import random
import statistics
import weakref

import pytest

from chatkit.llm import EchoStreamer, OfflineTutor, make_streamer
from chatkit.pacing import SharedTicks


async def wait_for_waiters(ticks: SharedTicks, n: int) -> None:
    async with asyncio.timeout(10):
        while ticks.waiting() < n:
            await asyncio.sleep(0)


async def test_streams_due_in_one_tick_share_one_timer_and_wake_together():
    ticks = SharedTicks(0.05)
    loop = asyncio.get_running_loop()
    number = round(loop.time() / ticks.tick) + 2
    # Twenty streams due within ±10 ms of one tick: one timer for all of them.
    dues = [number * ticks.tick + (i - 10) / 1000 for i in range(20)]
    still_waiting_at_wake: list[int] = []

    async def stream(when: float) -> None:
        await ticks.until(when)
        still_waiting_at_wake.append(ticks.waiting())

    tasks = [asyncio.create_task(stream(when)) for when in dues]
    await wait_for_waiters(ticks, 20)
    assert (ticks.waiting(), ticks.timers()) == (20, 1)
    await asyncio.gather(*tasks)
    # One timer released all twenty at once: none was still waiting when the first ran
    # (with a timer each, spread over 20 ms, the first would see the others waiting).
    assert still_waiting_at_wake == [0] * 20
    assert (ticks.waiting(), ticks.timers()) == (0, 0)


async def test_a_cancelled_stream_leaves_the_others_on_its_tick_and_the_last_takes_the_timer():
    ticks = SharedTicks(0.02)
    first = asyncio.create_task(ticks.until(asyncio.get_running_loop().time() + 0.2))
    second = asyncio.create_task(ticks.until(asyncio.get_running_loop().time() + 0.2))
    await wait_for_waiters(ticks, 2)
    assert ticks.timers() == 1
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert (ticks.waiting(), ticks.timers()) == (1, 1)
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    assert (ticks.waiting(), ticks.timers()) == (0, 0)  # no timer left for nobody


async def test_a_time_already_past_and_sleep_zero_yield_to_the_loop_once():
    ticks = SharedTicks(0.01)
    loop = asyncio.get_running_loop()
    order: list[str] = []
    loop.call_soon(order.append, "other")
    await ticks.until(loop.time() - 1)
    order.append("late stream")
    assert order == ["other", "late stream"]
    assert ticks.timers() == 0
    task = asyncio.create_task(ticks.sleep(0))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert task.done()  # not held until the next tick


def test_sleep_rounds_at_random_in_proportion_so_a_chain_keeps_its_pace():
    """A tutor at 30 tokens/s on a 2 ms tick: each wait is 32 or 34 ms, 33.3 ms on average
    (rounding to the nearest tick would make every one 34 ms: 2 % slow, every reply)."""
    ticks = SharedTicks(0.002, rng=random.Random(7))
    now, delay = 1000.0, 1 / 30
    waits = [ticks.wake_tick(now, delay) * ticks.tick - now for _ in range(4000)]
    assert set(round(w * 1000) for w in waits) == {32, 34}
    assert statistics.fmean(waits) == pytest.approx(delay, abs=0.0001)


async def test_waits_shorter_than_a_tick_are_plain_sleeps():
    ticks = SharedTicks(0.05)
    task = asyncio.create_task(ticks.sleep(0.001))
    await asyncio.sleep(0)
    assert ticks.timers() == 0  # asyncio.sleep's own timer, not a 50 ms tick
    await task


def test_bad_ticks_are_refused():
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            SharedTicks(bad)


def test_a_loop_that_ends_with_a_stream_waiting_is_not_kept_alive():
    """``asyncio.run`` cancels a stream still waiting; its loop must not stay referenced."""
    ticks = SharedTicks(0.01)
    loops: list[weakref.ref] = []

    async def leave_one_waiting() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        asyncio.create_task(ticks.until(asyncio.get_running_loop().time() + 60))
        await wait_for_waiters(ticks, 1)

    asyncio.run(leave_one_waiting())
    asyncio.run(leave_one_waiting())  # a second loop: its own ticks
    gc.collect()
    assert [ref() for ref in loops] == [None, None]
    assert len(ticks._ticks) == 0


async def test_fifty_echo_streams_wait_on_a_few_timers_not_fifty():
    ticks = SharedTicks(0.01)
    streamer = EchoStreamer(chunks=3, delay=0.02, ticks=ticks)
    got: dict[int, list[str]] = {}

    async def read(n: int) -> None:
        got[n] = [piece async for piece in streamer.stream([{"role": "user", "content": f"s{n}"}])]

    tasks = [asyncio.create_task(read(n)) for n in range(50)]
    await wait_for_waiters(ticks, 50)
    assert ticks.timers() <= 3  # started together: their 20 ms waits land on two or three ticks
    await asyncio.gather(*tasks)
    assert got == {n: [f"s{n}#{i} " for i in range(3)] for n in range(50)}


async def test_make_streamer_gives_the_tutor_and_the_echo_shared_ticks():
    tutor = make_streamer("offline", pace_tick_ms=5, first_token_ms=0, tokens_per_s=0)
    assert isinstance(tutor, OfflineTutor)
    shared = tutor.sleep.__self__  # type: ignore[attr-defined]
    assert isinstance(shared, SharedTicks) and shared.tick == 0.005
    pieces = [p async for p in tutor.stream([{"role": "user", "content": "What is a WebSocket?"}])]
    assert "".join(pieces).strip()
    echo = make_streamer("echo", echo_delay_ms=10, echo_chunks=2, pace_tick_ms=0)
    assert isinstance(echo, EchoStreamer) and echo.ticks.tick == 0
    assert [p async for p in echo.stream([{"role": "user", "content": "hi"}])] == ["hi#0 ", "hi#1 "]
    with pytest.raises(ValueError):
        make_streamer("echo", pace_tick_ms=-1)
