"""Paced streams that wake together: one timer per tick for every stream due in it.

A model-like stream waits between tokens. With ``asyncio.sleep`` every wait is
a timer of its own — a heap push and pop, a future, a loop iteration — so a
thousand streams at 50 tokens/s cost the event loop 50,000 timers a second
on top of the tokens themselves. A :class:`Pacer` moves each wake-up to the
nearest multiple of its ``tick`` and keeps one timer per tick, shared by
every stream due in it: the streams due together wake in one loop iteration.
A wake-up is at most half a tick early or late and on average on time, so a
stream keeps its pace (``benchmarks/README.md``, *Capacity*, measures what
this saves).

The offline tutor and the echo streamer pace their pieces with one. A
``Pacer`` may serve several event loops (a notebook's kernel and a test's
loop): each loop has its own ticks.
"""

from __future__ import annotations

import asyncio
import weakref

__all__ = ["Pacer"]


class Pacer:
    """Shared-tick sleeps for paced streams (see the module docstring).

    ``tick`` is in seconds; ``0`` makes :meth:`until` and :meth:`sleep` plain
    ``asyncio.sleep`` calls (a timer per wait).
    """

    def __init__(self, tick: float = 0.002) -> None:
        if tick < 0:
            raise ValueError("tick must be >= 0")
        self.tick = tick
        # Per event loop: tick number -> the futures of the streams waiting for it.
        self._slots: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[int, list[asyncio.Future[None]]]
        ] = weakref.WeakKeyDictionary()

    async def sleep(self, delay: float) -> None:
        """Wait ``delay`` seconds, to the nearest tick (``0``: yield to the loop once)."""
        if self.tick == 0 or delay <= 0:
            await asyncio.sleep(max(0.0, delay))
            return
        await self.until(asyncio.get_running_loop().time() + delay)

    async def until(self, when: float) -> None:
        """Wait until ``when`` on the loop's clock, moved to the nearest tick.

        A time already past still yields to the loop once, as ``asyncio.sleep(0)``
        does, so a late stream lets others run between its pieces.
        """
        loop = asyncio.get_running_loop()
        if self.tick == 0:
            await asyncio.sleep(max(0.0, when - loop.time()))
            return
        slot = round(when / self.tick)
        slots = self._slots.get(loop)
        if slots is None:
            slots = self._slots[loop] = {}
        waiters = slots.get(slot)
        if waiters is None:
            if slot * self.tick <= loop.time():
                await asyncio.sleep(0)
                return
            waiters = slots[slot] = []
            loop.call_at(slot * self.tick, self._fire, slots, slot)
        future: asyncio.Future[None] = loop.create_future()
        waiters.append(future)
        await future  # a cancelled waiter cancels its own future only

    @staticmethod
    def _fire(slots: dict[int, list[asyncio.Future[None]]], slot: int) -> None:
        for future in slots.pop(slot, ()):
            if not future.done():
                future.set_result(None)

    def waiting(self) -> int:
        """Streams waiting on the running loop's ticks (for tests and the course)."""
        slots = self._slots.get(asyncio.get_running_loop(), {})
        return sum(1 for waiters in slots.values() for f in waiters if not f.done())

    def ticks(self) -> int:
        """Timers the running loop holds for this pacer: one per tick someone waits for."""
        return len(self._slots.get(asyncio.get_running_loop(), {}))
