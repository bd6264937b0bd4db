"""SSEClient: follow a chatkit room over Server-Sent Events, as a browser's EventSource does.

Built on ``httpx`` and ``httpx-sse`` (which parses the event stream by the
WHATWG rules). It reconnects after a drop, sending the last event id in the
``Last-Event-ID`` header, so the server replays what was missed; the same
:class:`~chatkit.client.ResumeState` as the WebSocket client removes
duplicates, so the application sees every message exactly once. Messages are
sent with ``POST /sse/chat/<room>/messages``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any, AsyncIterator
from urllib.parse import quote

import httpx
from httpx_sse import aconnect_sse

from .client import ExponentialBackoff, ReconnectPolicy, ResumeState
from .errors import ClientError, HandshakeRefused

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
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.room = room
        self.user = user
        self.policy = policy or ExponentialBackoff()
        self.resume = ResumeState(after)
        self.last_event_id: str | None = None if after is None else str(after)
        self.connections = 0
        self.raw_events: list[Any] = []
        """Every ``ServerSentEvent`` received, duplicates included (for the notebooks)."""
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(timeout, read=None), trust_env=False)

    async def __aenter__(self) -> "SSEClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def stream_url(self) -> str:
        query = f"?user={quote(self.user)}" if self.user else ""
        return f"{self.base_url}/sse/chat/{self.room}/{query}"

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

    async def post(self, text: str, *, client_id: str | None = None) -> dict[str, Any]:
        """Send a message; returns the stored message (201, or 200 for a known ``client_id``)."""
        payload = {"message": text, "user": self.user or "anonymous",
                   "client_id": client_id or uuid.uuid4().hex}
        response = await self._http.post(f"{self.base_url}/sse/chat/{self.room}/messages", json=payload)
        body = response.json()
        if response.status_code >= 400:
            raise ClientError(body.get("message", "refused"), code=body.get("code", "client_error"))
        return body
