"""The streamer interface: the one thing the server asks of a language model.

A streamer turns the conversation so far into an async iterator of text
deltas. The conversation is a list of ``{"role": ..., "content": ...}`` dicts
with the system prompt first, exactly the shape of the OpenAI chat API, so a
real model and the offline tutor are interchangeable.

Cancellation is part of the contract: the server may close the iterator
(``aclose()``) or cancel the task consuming it at any chunk; a streamer
releases what it holds (an HTTP response, a timer) in ``finally`` blocks.
Failures are raised as :class:`chatkit.errors.LLMError` with a stable code and
a message safe to show to users.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

__all__ = ["Streamer", "ChatMessage", "DEFAULT_SYSTEM_PROMPT", "last_user_text"]

ChatMessage = dict[str, str]

DEFAULT_SYSTEM_PROMPT = (
    "You are the tutor of chatkit, a course on real-time chat: WebSockets, streaming, "
    "Server-Sent Events, reconnection, presence and scaling. Answer briefly and precisely. "
    "Answer in the language of the question."
)


@runtime_checkable
class Streamer(Protocol):
    """Anything with a ``name`` and a ``stream(messages)`` async generator."""

    name: str

    def stream(self, messages: list[ChatMessage]) -> AsyncIterator[str]:
        """Yield the reply to ``messages`` as text deltas."""
        ...


def last_user_text(messages: list[ChatMessage]) -> str:
    """The content of the last ``user`` message (empty if there is none)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return message.get("content", "")
    return ""
