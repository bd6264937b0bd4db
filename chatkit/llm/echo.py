"""The echo streamer: the user's own text back, word by word, with no delay.

Used by benchmarks and tests, where the time spent generating a reply must be
zero so that what is measured is the server. ``chunks`` fixes the number of
pieces instead (the streaming benchmark's "20 chunks per reply").
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator

from ..pacing import SharedTicks
from .base import ChatMessage, last_user_text

__all__ = ["EchoStreamer"]

_WORD = re.compile(r"\S+\s*|\s+")


class EchoStreamer:
    """Stream the last user message back in word pieces (or ``chunks`` fixed pieces)."""

    name = "echo"

    def __init__(
        self,
        *,
        chunks: int | None = None,
        delay: float = 0.0,
        stamp: bool = False,
        schedule: bool = False,
        ticks: SharedTicks | None = None,
    ) -> None:
        self.chunks = chunks
        self.delay = delay
        self.ticks = ticks or SharedTicks(0)
        """What the pieces wait on when ``delay`` is set: :class:`~chatkit.pacing.SharedTicks`, or
        (the default, tick ``0``) a timer per piece."""
        self.schedule = schedule
        """With ``schedule``, piece i is due ``i × delay`` after the start: when the loop is late the
        pieces already due are yielded without waiting (a burst, as from a model's socket) —
        ``benchmarks/capacity.py`` measures chunk coalescing with it."""
        self.stamp = stamp
        """With ``stamp``, each piece is ``time.monotonic()`` at the moment it is yielded
        (the benchmarks measure the server's added latency per chunk from it)."""

    async def stream(self, messages: list[ChatMessage]) -> AsyncIterator[str]:
        text = last_user_text(messages)
        if self.chunks is None:
            pieces = _WORD.findall(text)
        else:
            pieces = [f"{text}#{i} " for i in range(self.chunks)]
        loop = asyncio.get_running_loop()
        ticks = self.ticks
        due = loop.time()
        for piece in pieces:
            # Yield to the loop between pieces even with no delay, as a network
            # stream would, so a stop or a new message can be handled mid-reply.
            # With ``schedule`` the pieces keep their timetable, like a model producing
            # at its own pace: a late reader gets the pieces already due at once.
            # Without it each piece waits ``delay`` after the last: a late loop slows the stream.
            due += self.delay
            if not self.schedule:
                await ticks.sleep(self.delay)
            elif due > loop.time():
                await ticks.until(due)
            yield f"{time.monotonic():.6f} " if self.stamp else piece
