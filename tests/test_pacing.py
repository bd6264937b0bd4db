"""`chatkit.pacing`: paced streams share one timer per tick."""

from __future__ import annotations

import asyncio

import pytest

from chatkit.llm import EchoStreamer, OfflineTutor, make_streamer
from chatkit.pacing import Pacer


async def wait_for_waiters(pacer: Pacer, n: int) -> None:
    while pacer.waiting() < n:
        await asyncio.sleep(0)


async def test_streams_due_in_one_tick_share_one_timer_and_are_never_woken_early():
    pacer = Pacer(0.05)
    loop = asyncio.get_running_loop()
    slot = round(loop.time() / pacer.tick) + 2
    # Twenty streams due within ±10 ms of one tick: one timer for all of them.
    dues = [slot * pacer.tick + (i - 10) / 1000 for i in range(20)]
    woke: list[float] = []

    async def stream(when: float) -> None:
        await pacer.until(when)
        woke.append(loop.time())

    tasks = [asyncio.create_task(stream(when)) for when in dues]
    await wait_for_waiters(pacer, 20)
    assert (pacer.waiting(), pacer.ticks()) == (20, 1)
    await asyncio.gather(*tasks)
    assert len(woke) == 20
    # call_at never fires before its time (less the loop's clock resolution): at most half a tick early.
    assert min(woke) >= min(dues) - pacer.tick / 2 - loop._clock_resolution  # type: ignore[attr-defined]
    assert (pacer.waiting(), pacer.ticks()) == (0, 0)


async def test_a_cancelled_stream_does_not_cancel_the_others_on_its_tick():
    pacer = Pacer(0.02)
    first = asyncio.create_task(pacer.sleep(0.06))
    second = asyncio.create_task(pacer.sleep(0.06))
    await wait_for_waiters(pacer, 2)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert pacer.waiting() == 1
    await second  # still woken by the shared timer
    assert pacer.ticks() == 0


async def test_a_time_already_past_yields_to_the_loop_once_and_holds_no_timer():
    pacer = Pacer(0.01)
    loop = asyncio.get_running_loop()
    order: list[str] = []
    other = loop.call_soon(order.append, "other")
    await pacer.until(loop.time() - 1)
    order.append("late stream")
    assert order == ["other", "late stream"]
    assert pacer.ticks() == 0
    other.cancel()
    await pacer.sleep(0)  # zero: a yield, not a wait for the next tick
    assert pacer.ticks() == 0


async def test_tick_zero_is_a_timer_per_wait():
    pacer = Pacer(0)
    task = asyncio.create_task(pacer.sleep(0.01))
    await asyncio.sleep(0)
    assert (pacer.waiting(), pacer.ticks()) == (0, 0)  # asyncio.sleep's own timer
    await task
    with pytest.raises(ValueError):
        Pacer(-1)


def test_one_pacer_serves_successive_event_loops():
    """A notebook's kernel loop and a test's loop: each has its own ticks."""
    pacer = Pacer(0.005)

    async def twice() -> int:
        await pacer.sleep(0.01)
        await pacer.sleep(0.01)
        return pacer.ticks()

    assert asyncio.run(twice()) == 0
    assert asyncio.run(twice()) == 0


async def test_fifty_echo_streams_wait_on_a_few_ticks_not_fifty_timers():
    pacer = Pacer(0.01)
    streamer = EchoStreamer(chunks=3, delay=0.02, pacer=pacer)
    got: dict[int, list[str]] = {}

    async def read(n: int) -> None:
        got[n] = [piece async for piece in streamer.stream([{"role": "user", "content": f"s{n}"}])]

    tasks = [asyncio.create_task(read(n)) for n in range(50)]
    await wait_for_waiters(pacer, 50)
    assert pacer.ticks() <= 2  # the streams started together: their waits round to one or two ticks
    await asyncio.gather(*tasks)
    assert got == {n: [f"s{n}#{i} " for i in range(3)] for n in range(50)}


async def test_make_streamer_paces_the_tutor_and_the_echo_with_one_shared_tick():
    tutor = make_streamer("offline", pace_tick_ms=5, first_token_ms=0, tokens_per_s=1000)
    assert isinstance(tutor, OfflineTutor)
    assert isinstance(tutor.sleep.__self__, Pacer) and tutor.sleep.__self__.tick == 0.005  # type: ignore[attr-defined]
    pieces = [p async for p in tutor.stream([{"role": "user", "content": "What is a WebSocket?"}])]
    assert "".join(pieces).strip()
    echo = make_streamer("echo", echo_delay_ms=10, echo_chunks=2, pace_tick_ms=0)
    assert isinstance(echo, EchoStreamer) and echo.pacer.tick == 0
    assert [p async for p in echo.stream([{"role": "user", "content": "hi"}])] == ["hi#0 ", "hi#1 "]
