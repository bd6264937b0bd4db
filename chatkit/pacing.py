"""Paced streams that wake together: one timer per tick for every stream due in it.

A model-like stream waits between tokens. With ``asyncio.sleep`` every wait is
a timer of its own — a timer handle, a heap push and pop, usually a loop
iteration — so a thousand streams at 50 tokens/s cost the event loop 50,000
timers a second on top of the tokens themselves. A :class:`SharedTicks` moves each
wake-up onto a multiple of its ``tick`` and keeps one timer per tick, shared by
every stream due in it: the streams due together wake in one loop iteration.
Each stream's task still wakes for each of its tokens; what is shared is the
timer.

Where a wake-up lands:

- :meth:`SharedTicks.until` (a timetable: "piece *i* is due at *t₀ + i × delay*")
  takes the nearest tick — at most half a tick early or late, and because the
  times are absolute the errors do not add up;
- :meth:`SharedTicks.sleep` (a chain: "wait *delay* after the last piece") rounds
  down or up at random in proportion, so each wait lasts *delay* on average and
  a chain keeps its pace whatever the tick (plain rounding would make every wait
  of 33.3 ms on a 2 ms tick last 34 ms). Waits shorter than a tick are plain
  ``asyncio.sleep`` calls.

The offline tutor and the echo streamer pace their pieces with one. A ``SharedTicks``
may serve several event loops (a notebook's kernel and a test's loop): each
loop has its own ticks, and a loop that ends with streams still waiting keeps
nothing alive. ``benchmarks/README.md`` (*Capacity*) measures what it saves.
"""

from __future__ import annotations

import asyncio
import math
import random
import weakref
from dataclasses import dataclass, field

__all__ = ["SharedTicks"]


@dataclass
class _Tick:
    """One shared timer and the streams waiting for it."""

    handle: asyncio.TimerHandle
    waiters: list[asyncio.Future[None]] = field(default_factory=list)


class SharedTicks:
    """Shared-tick waits for paced streams (see the module docstring).

    ``tick`` is in seconds; ``0`` makes every wait a plain ``asyncio.sleep``.
    ``rng`` draws the rounding of :meth:`sleep` (a seeded one in tests).
    """

    def __init__(self, tick: float = 0.002, *, rng: random.Random | None = None) -> None:
        if not (tick >= 0 and math.isfinite(tick)):
            raise ValueError(f"tick must be a finite number of seconds >= 0, not {tick!r}")
        self.tick = tick
        self.rng = rng or random.Random()
        # Per event loop: tick number -> its timer and waiters. A tick is removed when it
        # fires or when its last waiter is cancelled, so an ended loop leaves nothing behind.
        self._ticks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, _Tick]] = (
            weakref.WeakKeyDictionary()
        )

    def wake_tick(self, now: float, delay: float) -> int:
        """The tick :meth:`sleep` wakes on: ``now + delay`` rounded down or up at random, in
        proportion, so that the wait lasts ``delay`` on average (``delay >= tick``)."""
        exact = (now + delay) / self.tick
        below = math.floor(exact)
        return below + (1 if self.rng.random() < exact - below else 0)

    async def sleep(self, delay: float) -> None:
        """Wait ``delay`` seconds on average; ``0`` yields to the loop once."""
        if self.tick == 0 or delay < self.tick:
            await asyncio.sleep(max(0.0, delay))
            return
        loop = asyncio.get_running_loop()
        await self._wait(loop, self.wake_tick(loop.time(), delay))

    async def until(self, when: float) -> None:
        """Wait until ``when`` on the loop's clock, moved to the nearest tick.

        A time already past (or less than half a tick away) yields to the loop once,
        as ``asyncio.sleep(0)`` does, so a late stream lets others run between pieces.
        """
        loop = asyncio.get_running_loop()
        if self.tick == 0:
            await asyncio.sleep(max(0.0, when - loop.time()))
            return
        await self._wait(loop, round(when / self.tick))

    async def _wait(self, loop: asyncio.AbstractEventLoop, number: int) -> None:
        ticks = self._ticks.get(loop)
        if ticks is None:
            ticks = self._ticks[loop] = {}
        tick = ticks.get(number)
        if tick is None:
            if number * self.tick <= loop.time():
                await asyncio.sleep(0)
                return
            tick = ticks[number] = _Tick(loop.call_at(number * self.tick, self._fire, ticks, number))
        future: asyncio.Future[None] = loop.create_future()
        tick.waiters.append(future)
        try:
            await future
        except asyncio.CancelledError:
            # Only this stream's future is cancelled; the others on the tick still wake.
            # The last one to leave takes the timer with it.
            if future in tick.waiters:
                tick.waiters.remove(future)
                if not tick.waiters and ticks.get(number) is tick:
                    del ticks[number]
                    tick.handle.cancel()
            raise

    @staticmethod
    def _fire(ticks: dict[int, _Tick], number: int) -> None:
        tick = ticks.pop(number, None)
        if tick is not None:
            for future in tick.waiters:
                if not future.done():
                    future.set_result(None)
            tick.waiters.clear()

    def waiting(self) -> int:
        """Streams waiting on the running loop's ticks (for tests and the course)."""
        ticks = self._ticks.get(asyncio.get_running_loop(), {})
        return sum(1 for tick in ticks.values() for f in tick.waiters if not f.done())

    def timers(self) -> int:
        """Timers the running loop holds for this pacer: one per tick someone waits for."""
        return len(self._ticks.get(asyncio.get_running_loop(), {}))
