"""Stream from any OpenAI-compatible chat API (OpenAI, Ollama, vLLM, llama.cpp, LM Studio).

Built on the ``openai`` library's ``AsyncOpenAI`` client. ``base_url``,
``api_key`` and ``model`` come from the arguments or from the environment
(``OPENAI_BASE_URL``, ``OPENAI_API_KEY``, ``CHATKIT_MODEL``), so switching a
classroom from the offline tutor to a real model needs no code change.

Every failure becomes an :class:`~chatkit.errors.LLMError` with a stable code
and a message without tracebacks or secrets. A stream is complete only when
the backend says so with a ``finish_reason``: one that simply ends without it
(a proxy or server closing the response cleanly mid-answer — the ``openai``
library then ends iteration quietly) is ``llm_stream_dropped``, so the partial
reply is stored as ``error``, never as ``complete``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import openai

from ..errors import LLMError
from .base import ChatMessage

__all__ = ["OpenAIStreamer", "DEFAULT_MODEL"]

DEFAULT_MODEL = "gpt-4o-mini"


class OpenAIStreamer:
    """Stream chat completions from an OpenAI-compatible endpoint.

    ``timeout`` bounds connecting and each read; ``max_retries`` is passed to
    the ``openai`` client (0 by default: a chat user prefers a quick, clear error).
    """

    name = "openai"

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        model: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 0,
        temperature: float | None = None,
    ) -> None:
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        # A local server (Ollama, vLLM) needs no key, but the client insists on one.
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY") or "no-key"
        self.model = model or os.environ.get("CHATKIT_MODEL") or DEFAULT_MODEL
        self.temperature = temperature
        self.client = openai.AsyncOpenAI(
            base_url=self.base_url, api_key=self.api_key, timeout=timeout, max_retries=max_retries
        )

    def describe(self) -> str:
        """A one-line description without the key, for start-up logs."""
        return f"OpenAI-compatible model {self.model!r} at {self.base_url or 'api.openai.com'}"

    async def stream(self, messages: list[ChatMessage]) -> AsyncIterator[str]:
        extra = {} if self.temperature is None else {"temperature": self.temperature}
        try:
            response = await self.client.chat.completions.create(  # type: ignore[call-overload]
                model=self.model,
                messages=messages,
                stream=True,
                **extra,
            )
        except openai.APIError as exc:
            raise _translate(exc) from None
        started = False
        finished = False
        try:
            async for chunk in response:
                if not chunk.choices:  # usage or content-filter chunks
                    continue
                choice = chunk.choices[0]
                delta = choice.delta.content if choice.delta is not None else None
                if delta:
                    started = True
                    yield delta
                if choice.finish_reason is not None:
                    finished = True
            if not finished:
                # The library stops at `data: [DONE]` and at a clean end of the body
                # alike and does not say which; only finish_reason proves the end.
                raise LLMError(
                    "the model's stream ended before the answer was finished",
                    code="llm_stream_dropped",
                )
        except openai.APIError as exc:
            raise _translate(exc, started) from None
        except LLMError:
            raise
        except Exception as exc:  # a dropped connection surfaces from the HTTP layer
            raise LLMError(
                f"the model's stream broke off ({type(exc).__name__})", code="llm_stream_dropped"
            ) from None
        finally:
            await response.close()

    async def aclose(self) -> None:
        await self.client.close()


def _translate(exc: openai.APIError, started: bool = False) -> LLMError:
    if isinstance(exc, openai.AuthenticationError):
        return LLMError("the model refused the API key (401)", code="llm_auth")
    if isinstance(exc, openai.PermissionDeniedError):
        return LLMError("the model refused access (403)", code="llm_auth")
    if isinstance(exc, openai.RateLimitError):
        return LLMError("the model is rate-limited (429); try again later", code="llm_rate_limited")
    if isinstance(exc, openai.APITimeoutError):
        return LLMError("the model did not answer in time", code="llm_timeout")
    if isinstance(exc, openai.APIConnectionError):
        if started:
            return LLMError("the model's stream broke off", code="llm_stream_dropped")
        return LLMError("the model's server cannot be reached", code="llm_unreachable")
    if isinstance(exc, openai.APIStatusError):
        return LLMError(f"the model's server answered {exc.status_code}", code="llm_error")
    return LLMError(f"the model failed ({type(exc).__name__})", code="llm_error")
