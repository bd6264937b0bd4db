"""In-memory stand-ins for the hub's surroundings: a fake clock, recording sinks, a scripted model.

They let ``test_hub.py`` and ``test_replies.py`` drive rooms, timers, rate
limits and AI replies with no sockets and no sleeps: time moves only when a
test calls :meth:`FakeClock.advance`, and waits are for frames, not for time.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from chatkit.errors import LLMError
from chatkit.hub import Hub, HubConfig, Member
from chatkit.sinks import Outgoing, Sink
from chatkit.store import Store

from .conftest import TIMEOUT


class FakeTimer:
    def __init__(self, when: float, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.when, self.callback, self.args = when, callback, args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A :class:`chatkit.clock.Clock` whose time moves only by :meth:`advance`."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._timers: list[tuple[float, int, FakeTimer]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> FakeTimer:
        timer = FakeTimer(self.now + delay, callback, args)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    @property
    def pending(self) -> int:
        return sum(1 for *_, t in self._timers if not t.cancelled)

    def advance(self, seconds: float) -> None:
        """Move time forward, running every timer that falls due, in order."""
        target = self.now + seconds
        while self._timers and self._timers[0][0] <= target:
            when, _, timer = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            if not timer.cancelled:
                timer.callback(*timer.args)
        self.now = target


class MemorySink(Sink):
    """A sink that keeps every frame; tests wait for frames with :meth:`until`."""

    def __init__(self) -> None:
        self.received: list[Outgoing] = []
        self._arrived = asyncio.Event()

    def send(self, frame: Outgoing) -> None:
        self.received.append(frame)
        self._arrived.set()

    @property
    def frames(self) -> list[dict[str, Any]]:
        return [json.loads(f.text) for f in self.received]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == kind]

    def types(self) -> list[str]:
        return [f.type for f in self.received]

    def clear(self) -> None:
        self.received.clear()

    async def next(self, index: int) -> dict[str, Any]:
        """The frame received at position ``index`` (0-based), waiting for it."""
        async with asyncio.timeout(TIMEOUT):
            while len(self.received) <= index:
                self._arrived.clear()
                await self._arrived.wait()
        return json.loads(self.received[index].text)

    async def until(self, kind: str, **match: Any) -> dict[str, Any]:
        """The first frame received of type ``kind`` (and matching fields), waiting for it."""
        async with asyncio.timeout(TIMEOUT):
            while True:
                for frame in self.frames:
                    if frame["type"] == kind and all(frame.get(k) == v for k, v in match.items()):
                        return frame
                self._arrived.clear()
                await self._arrived.wait()


class BatchSink(MemorySink):
    """A sink class with its own ``send_many``, counting how often fan-out used it."""

    batches: list[tuple[int, Outgoing]] = []

    @classmethod
    def send_many(cls, sinks: Any, frame: Outgoing) -> None:
        cls.batches.append((len(sinks), frame))
        for sink in sinks:
            sink.send(frame)


@dataclass
class Gate:
    """A point in a scripted stream where the model waits until the test opens it."""

    opened: asyncio.Event = field(default_factory=asyncio.Event)
    reached: asyncio.Event = field(default_factory=asyncio.Event)

    def open(self) -> None:
        self.opened.set()

    async def wait_reached(self) -> None:
        """Wait until the stream stands at this gate."""
        async with asyncio.timeout(TIMEOUT):
            await self.reached.wait()


class ScriptedStreamer:
    """A :class:`chatkit.llm.Streamer` that plays scripts: one per reply, in order.

    A script is a list of steps: a ``str`` is yielded as a delta, a :class:`Gate`
    waits until opened, an exception is raised. Replies beyond the scripts echo
    the prompt in one chunk. ``calls`` holds the messages of every request.
    """

    name = "scripted"

    def __init__(self, *scripts: list[Any]) -> None:
        self.scripts = list(scripts)
        self.calls: list[list[dict[str, str]]] = []
        self.closed = 0

    async def stream(self, messages: list[dict[str, str]]) -> AsyncIterator[str]:
        self.calls.append(messages)
        script = self.scripts.pop(0) if self.scripts else [messages[-1]["content"]]
        try:
            for step in script:
                if isinstance(step, Gate):
                    step.reached.set()
                    await step.opened.wait()
                elif isinstance(step, BaseException):
                    raise step
                else:
                    yield step
        finally:
            self.closed += 1


def llm_error(message: str = "model down") -> LLMError:
    return LLMError(message, code="llm_error")


# -- fixtures (imported by the test modules that use them) -----------------------


@pytest.fixture
async def store():
    """A real store, in memory."""
    async with await Store.open(":memory:") as db:
        yield db


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def make_hub(store, clock):
    """``make_hub(streamer=None, **HubConfig fields)``: hubs on the fake clock, closed at the end."""
    hubs: list[Hub] = []

    def factory(streamer: Any = None, **config: Any) -> Hub:
        hub = Hub(store, streamer or ScriptedStreamer(), HubConfig(**config), clock=clock)
        hubs.append(hub)
        return hub

    yield factory
    for hub in hubs:
        await hub.close()


async def join(hub: Hub, user: str, room: str = "r", after: int | None = None) -> tuple[Member, MemorySink]:
    sink = MemorySink()
    member = await hub.join(room, user, sink, after=after)
    return member, sink
