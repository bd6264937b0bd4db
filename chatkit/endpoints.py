"""The plain HTTP answers both servers give, with no transport: history, health,
the page's config, CORS, JSON responses and the chat page's static files.

Each answer is an :class:`HTTPResponse` (status, headers, body); the WebSocket
server turns it into a ``websockets`` response in ``process_request``, the
h11 server writes it on its connection. This module depends only on the store
and the protocol.
"""

from __future__ import annotations

import http
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from . import protocol
from .storage import ChatStore

__all__ = [
    "HISTORY_PATH",
    "SAME_ORIGIN_HEADER",
    "STATIC_TYPES",
    "Endpoints",
    "HTTPResponse",
    "cors_headers",
    "error_response",
    "json_response",
]

Headers = list[tuple[str, str]]

STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}

HISTORY_PATH = re.compile(r"/api/chat/(?P<sid>[^/]+)/messages/?")
"""``/api/chat/<session_id>/messages`` (the id percent-encoded), served on the WebSocket port and on the HTTP server."""

SAME_ORIGIN_HEADER = "x-chatkit-same-origin"
"""Set to ``1`` by a load balancer that routes every path (the WebSocket port's and the HTTP
port's) on one origin: ``/config.json`` then tells the page to use that origin for SSE too."""


@dataclass(frozen=True, slots=True)
class HTTPResponse:
    """A complete HTTP response, ready for either server to send."""

    status: int
    headers: Headers
    body: bytes

    @property
    def reason(self) -> str:
        return http.HTTPStatus(self.status).phrase


def json_response(status: int, payload: Any, extra: Headers | None = None) -> HTTPResponse:
    """The one JSON response of chatkit: UTF-8, ``Content-Length``, extra headers after."""
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    headers = [
        ("Content-Type", "application/json; charset=utf-8"),
        ("Content-Length", str(len(body))),
    ]
    return HTTPResponse(status, headers + (extra or []), body)


def error_response(status: int, code: str, message: str, extra: Headers | None = None) -> HTTPResponse:
    """A JSON ``error`` frame (``{"type": "error", "code", "message"}``) with an HTTP status."""
    return json_response(status, protocol.error_frame(code, message), extra)


def cors_headers(origin: str | None, allowed: list[str] | None) -> Headers:
    """CORS headers for a read-only JSON endpoint, limited to the allowed origins."""
    if origin is None:
        return []
    if allowed is None:
        return [("Access-Control-Allow-Origin", "*")]
    if origin in allowed:
        return [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")]
    return [("Vary", "Origin")]


@dataclass
class Endpoints:
    """The answers to plain GETs, shared by the WebSocket port and the HTTP server."""

    store: ChatStore
    backend: str
    """The LLM backend's name, shown by ``/health`` and ``/config.json``."""
    allowed_origins: list[str] | None = None
    max_text: int = protocol.DEFAULT_MAX_TEXT
    http_port: int | None = None
    """The SSE/HTTP server's port, for the page (set once that server listens)."""
    origins: Any = None
    """The server's :class:`~chatkit.origins.OriginPolicy`; CORS follows it when set."""
    sign_in: str | None = None
    """``"join_code"`` (the page asks for a name and the code), ``"token"`` or ``None`` (off)."""
    max_upload_bytes: int | None = None
    """The largest file ``POST /files`` accepts (the page checks a file before sending it)."""

    def cors(self, origin: str | None) -> Headers:
        if self.origins is not None:
            return self.origins.cors_headers(origin)
        return cors_headers(origin, self.allowed_origins)

    async def get(
        self, path: str, query: str, origin: str | None, *, page: bool, same_origin: bool = False
    ) -> HTTPResponse | None:
        """Answer ``GET path?query``, or ``None`` when it is not one of these routes.

        ``page``: also serve the chat page (``/``, static files, ``/config.json``).
        ``same_origin``: the request came through a proxy that routes every HTTP path
        on the page's own origin (its ``X-Chatkit-Same-Origin: 1`` header; see
        ``deploy/nginx.conf``): ``/config.json`` tells the page to use it.
        """
        if path == "/health":
            return self.health(origin)
        if (history := HISTORY_PATH.fullmatch(path)) is not None:
            return await self.history(history["sid"], query, origin)
        if page:
            if path == "/config.json":
                return json_response(200, self.page_config(same_origin=same_origin))
            return self.static(path)
        return None

    def health(self, origin: str | None = None) -> HTTPResponse:
        return json_response(200, {"status": "ok", "llm": self.backend}, self.cors(origin))

    async def history(self, session_id: str, query: str, origin: str | None = None) -> HTTPResponse:
        """``GET /api/chat/<id>/messages?before=&limit=``: one page, oldest first.

        ``session_id`` is the path segment as sent (percent-encoded UTF-8).
        """
        cors = self.cors(origin)
        try:
            session_id = protocol.session_id_from_path(session_id)
        except protocol.ProtocolError as exc:
            return error_response(404, exc.code, exc.message, cors)
        params = parse_qs(query)
        try:  # ASCII digits within SQLite's range only: never int("²") or 2**63 into a query
            before_raw = params.get("before", [""])[-1]
            limit_raw = params.get("limit", [""])[-1]
            before = protocol.parse_id(before_raw, "before") if before_raw else None
            limit = protocol.parse_id(limit_raw, "limit") if limit_raw else 20
        except protocol.ProtocolError as exc:  # (errors is reached through protocol, see test_imports)
            return error_response(400, exc.code, exc.message, cors)
        page = await self.store.history_page(session_id, before=before, limit=limit)
        reactions = await self.store.reactions([m.id for m in page.messages])
        messages = []
        for msg in page.messages:
            frame = msg.to_frame()
            if msg.id in reactions:  # each message's reactions, as in a `reaction` frame
                frame["reactions"] = [r.to_object() for r in reactions[msg.id]]
            messages.append(frame)
        return json_response(
            200, {"session_id": session_id, "messages": messages, "has_more": page.has_more}, cors
        )

    def page_config(self, *, same_origin: bool = False) -> dict[str, Any]:
        """What the browser page needs to know: the SSE port (or ``same_origin``: the
        HTTP routes are on the page's own origin, behind a load balancer), the backend,
        the protocol."""
        return {
            "protocol": protocol.PROTOCOL_VERSION,
            "http_port": self.http_port,
            "same_origin": same_origin,
            "llm": self.backend,
            "max_text": self.max_text,
            "sign_in": self.sign_in,
            "max_upload_bytes": self.max_upload_bytes,
        }

    def static(self, path: str) -> HTTPResponse | None:
        """A file of the chat page (``chatkit/web/``), or ``None``."""
        name = "index.html" if path in ("/", "/index.html") else path.lstrip("/")
        parts = name.split("/")  # the page's files, and vendor/<file> (the vendored JS libraries)
        if (
            len(parts) > 2
            or (len(parts) == 2 and parts[0] != "vendor")
            or any(not part or part.startswith(".") for part in parts)
        ):
            return None
        suffix = Path(name).suffix
        if suffix not in STATIC_TYPES:
            return None
        resource = resources.files("chatkit.web").joinpath(*parts)
        if not resource.is_file():
            return None
        body = resource.read_bytes()
        return HTTPResponse(
            200,
            [
                ("Content-Type", STATIC_TYPES[suffix]),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-cache"),
            ],
            body,
        )
