"""SSEClient: follow a chatkit room over Server-Sent Events, as a browser's EventSource does.

Built on ``httpx`` and ``httpx-sse`` (which parses the event stream by the
WHATWG rules). It reconnects after a drop, sending the last event id in the
``Last-Event-ID`` header, so the server replays what was missed; the same
:class:`~chatkit.resume.ResumeState` as the WebSocket client removes
duplicates, so the application sees every message exactly once. Messages are
sent with ``POST /sse/chat/<room>/messages``; a refusal that may pass later
(429, 503) is retried after the server's ``Retry-After``, within the post's deadline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
from httpx_sse import aconnect_sse

from . import protocol
from .client import ExponentialBackoff, FileSource, ReconnectPolicy, upload_file
from .errors import HandshakeRefused, MessageRefused, ProtocolError, SendTimeout
from .resume import DEFAULT_RETRY_MS, ResumeState

__all__ = ["SSEClient"]

logger = logging.getLogger("chatkit.sse")


class SSEClient:
    """A room over SSE: ``async for event in client.events()`` and ``await client.post(text)``.

    ``base_url`` is the HTTP server's root (``http://127.0.0.1:8766/``).
    """

    def __init__(
        self,
        base_url: str,
        room: str,
        *,
        user: str | None = None,
        after: int | None = None,
        policy: ReconnectPolicy | None = None,
        timeout: float = 10.0,
        send_timeout: float = 60.0,
        token: str | None = None,
        verify: Any = True,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.room = room
        self.user = user
        self.policy = policy or ExponentialBackoff()
        self.send_timeout = send_timeout
        self.resume = ResumeState(after)
        self.last_event_id: str | None = None if after is None else str(after)
        self.connections = 0
        self.raw_events: list[Any] = []
        """Every ``ServerSentEvent`` received, duplicates included (for the notebooks)."""
        # With sign-in the token is the name (``Authorization: Bearer``); ``verify`` is an
        # ``ssl.SSLContext`` (or CA file) for https:// servers with a private CA.
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, read=None), trust_env=False, headers=headers, verify=verify
        )

    async def __aenter__(self) -> SSEClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def stream_url(self) -> str:
        query = f"?user={quote(self.user)}" if self.user else ""
        return f"{self.base_url}/sse/chat/{quote(self.room, safe='')}/{query}"

    async def events(self, *, reconnect: bool = True) -> AsyncIterator[dict[str, Any]]:
        """Yield the room's frames, reconnecting with ``Last-Event-ID`` after a drop."""
        attempt = 0
        while True:
            headers = {"Last-Event-ID": self.last_event_id} if self.last_event_id else {}
            try:
                async with aconnect_sse(self._http, "GET", self.stream_url, headers=headers) as source:
                    if source.response.status_code in (400, 401, 403, 404):
                        raise HandshakeRefused(source.response.status_code, "the server refused the stream")
                    source.response.raise_for_status()
                    self.connections += 1
                    attempt = 0
                    async for sse in source.aiter_sse():
                        self.raw_events.append(sse)
                        if sse.id:
                            self.last_event_id = sse.id
                        if not sse.data:
                            continue  # a retry: hint or a heartbeat comment carries no frame
                        frame = json.loads(sse.data)
                        if frame.get("type") == "connection":
                            self.resume.connected(frame)
                        event = self.resume.accept(frame)
                        if event is not None:
                            yield event
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                logger.info("SSE stream dropped: %s", exc)
            if not reconnect:
                return
            attempt += 1
            await asyncio.sleep(self.policy.delay(attempt))

    async def upload(
        self, file: FileSource, *, name: str | None = None, content_type: str | None = None
    ) -> dict[str, Any]:
        """Upload a file for this room (``POST /files``); see :func:`chatkit.client.upload_file`."""
        return await upload_file(
            self._http, self.base_url, self.room, file, name=name, content_type=content_type
        )

    async def post_file(
        self, file: FileSource, *, name: str | None = None, text: str = "", content_type: str | None = None
    ) -> dict[str, Any]:
        """Upload ``file`` and post it as a message with the caption ``text``; returns the stored message."""
        uploaded = await self.upload(file, name=name, content_type=content_type)
        return await self.post(text, attachment=protocol.AttachmentRef(uploaded["id"], uploaded["name"]))

    async def post(
        self,
        text: str,
        *,
        client_id: str | None = None,
        timeout: float | None = None,
        attachment: protocol.AttachmentRef | None = None,
    ) -> dict[str, Any]:
        """Send a message; returns the stored message (201, or 200 for a known ``client_id``).

        Raises :class:`~chatkit.errors.MessageRefused` for a permanent refusal
        and :class:`~chatkit.errors.SendTimeout` when the message is not stored
        within ``timeout`` seconds (default ``send_timeout``); 429 and 503 are
        retried after ``Retry-After`` with the same ``client_id`` (stored once).
        """
        frame = protocol.SendMessage(text, client_id or uuid.uuid4().hex, attachment)
        try:
            protocol.decode_object(frame.to_object())
        except ProtocolError as exc:
            raise MessageRefused(exc.message, code=exc.code) from None
        payload = {**frame.to_object(), **({"user": self.user} if self.user else {})}
        url = f"{self.base_url}/sse/chat/{quote(self.room, safe='')}/messages"
        deadline = self.send_timeout if timeout is None else timeout
        give_up = time.monotonic() + deadline
        while True:
            try:
                async with asyncio.timeout(max(0.0, give_up - time.monotonic())):
                    response = await self._http.post(url, json=payload)
            except TimeoutError:
                raise SendTimeout(f"the server did not store the message within {deadline:g} s") from None
            except httpx.TransportError as exc:
                response = None
                logger.info("POST failed (%s); retrying", exc)
            if response is not None:
                try:
                    body = response.json()
                except ValueError:
                    body = {}
                if response.status_code < 400:
                    return body
                if response.status_code not in (429, 503):
                    raise MessageRefused(
                        str(body.get("message", "refused")), code=str(body.get("code", "client_error"))
                    )
                wait = _retry_after(response, body)
            else:
                wait = DEFAULT_RETRY_MS / 1000
            if time.monotonic() + wait > give_up:
                raise SendTimeout(f"the server did not store the message within {deadline:g} s")
            await asyncio.sleep(wait)


def _retry_after(response: httpx.Response, body: Any) -> float:
    """Seconds to wait from ``retry_after_ms`` in the body, else ``Retry-After``, else 1 s."""
    if isinstance(body, dict):
        ms = body.get("retry_after_ms")
        if isinstance(ms, (int, float)) and not isinstance(ms, bool) and ms >= 0:
            return ms / 1000
    header = response.headers.get("retry-after", "")
    if header.isascii() and header.isdigit():
        return float(header)
    return DEFAULT_RETRY_MS / 1000
