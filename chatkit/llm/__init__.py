"""Streamers: what writes the AI replies.

- :class:`OfflineTutor` — the default; a scripted tutor, no key, no network.
- :class:`OpenAIStreamer` — any OpenAI-compatible API, configured by environment.
- :class:`EchoStreamer` — the user's text back with no delay (tests, benchmarks).

:func:`make_streamer` picks one by name; ``"auto"`` chooses OpenAI-compatible
when ``OPENAI_API_KEY`` or ``OPENAI_BASE_URL`` is set and the tutor otherwise.
"""

from __future__ import annotations

import os
from typing import Any

from ..pacing import SharedTicks
from .base import DEFAULT_SYSTEM_PROMPT, ChatMessage, Streamer, last_user_text
from .echo import EchoStreamer
from .offline import OfflineTutor

__all__ = [
    "Streamer",
    "ChatMessage",
    "DEFAULT_SYSTEM_PROMPT",
    "EchoStreamer",
    "OfflineTutor",
    "OpenAIStreamer",
    "make_streamer",
    "resolve_backend",
    "last_user_text",
    "BACKENDS",
]

BACKENDS = ("auto", "offline", "openai", "echo")


def resolve_backend(name: str = "auto", environ: dict[str, str] | None = None) -> str:
    """Turn ``auto`` into ``openai`` or ``offline`` according to the environment."""
    env = os.environ if environ is None else environ
    if name not in BACKENDS:
        raise ValueError(f"unknown LLM backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "auto":
        return "openai" if env.get("OPENAI_API_KEY") or env.get("OPENAI_BASE_URL") else "offline"
    return name


def make_streamer(
    name: str = "auto",
    *,
    first_token_ms: float = 300.0,
    tokens_per_s: float = 30.0,
    echo_delay_ms: float = 0.0,
    echo_chunks: int | None = None,
    echo_stamp: bool = False,
    echo_schedule: bool = False,
    pace_tick_ms: float = 2.0,
    **openai_options: Any,
) -> Streamer:
    """Build the streamer called ``name`` (see :data:`BACKENDS`).

    ``first_token_ms`` and ``tokens_per_s`` pace the offline tutor;
    ``echo_delay_ms``, ``echo_chunks``, ``echo_stamp`` and ``echo_schedule`` shape the echo streamer
    (the benchmarks' zero-delay, fixed-size, time-stamped replies). Both paced streamers wait on
    :class:`~chatkit.pacing.SharedTicks` of ``pace_tick_ms`` (``0``: a timer per piece).
    """
    backend = resolve_backend(name)
    if backend == "offline":
        ticks = SharedTicks(pace_tick_ms / 1000)
        return OfflineTutor(first_token_ms=first_token_ms, tokens_per_s=tokens_per_s, sleep=ticks.sleep)
    if backend == "echo":
        return EchoStreamer(
            delay=echo_delay_ms / 1000,
            chunks=echo_chunks,
            stamp=echo_stamp,
            schedule=echo_schedule,
            ticks=SharedTicks(pace_tick_ms / 1000),
        )
    from .openai import OpenAIStreamer

    return OpenAIStreamer(**openai_options)


def __getattr__(name: str) -> Any:
    if name == "OpenAIStreamer":  # imported lazily: the openai package is slow to import
        from .openai import OpenAIStreamer

        return OpenAIStreamer
    raise AttributeError(name)
