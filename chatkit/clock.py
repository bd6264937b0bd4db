"""The hub's clock: time and timers behind one small interface, so tests can drive them.

The hub's timers (typing expiry, a reply's idle watchdog) and rate limits read
time only through a :class:`Clock`. :class:`LoopClock` is the running event
loop's; a test passes a fake one and advances it by hand — no sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Clock", "LoopClock", "Timer"]


class Timer(Protocol):
    """A scheduled callback (``asyncio.TimerHandle`` is one)."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    def time(self) -> float:
        """Monotonic seconds."""
        ...

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Timer:
        """Run ``callback(*args)`` after ``delay`` seconds unless cancelled."""
        ...


class LoopClock:
    """The running event loop's clock (``loop.time()``, ``loop.call_later()``)."""

    def time(self) -> float:
        return asyncio.get_running_loop().time()

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Timer:
        return asyncio.get_running_loop().call_later(delay, callback, *args)
