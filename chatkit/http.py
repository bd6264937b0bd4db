"""The HTTP server beside the WebSocket server: SSE rooms, POST messages, history, /v1.

Built on ``h11`` — a sans-I/O HTTP/1.1 parser, the same design as
``websockets`` — with ``asyncio`` streams for the I/O, so it runs in whatever
event loop is running (a Jupyter kernel's included) and never installs signal
handlers. Routes:

- ``GET  /sse/chat/<id>/``            the room as an event stream (resume with ``Last-Event-ID`` or ``?after=``)
- ``POST /sse/chat/<id>/messages``    send a message: 201 with the stored message
- ``GET  /api/chat/<id>/messages``    history pages (``before``, ``limit``)
- ``GET  /v1/models``, ``POST /v1/chat/completions``   an OpenAI-compatible API answered by the server's streamer
- ``POST /auth/login``                sign in with a name and the join code: a token (and an ``HttpOnly`` cookie)
- ``POST /files?room=<id>``           upload a file (raw body): 201 with its id, type, size, thumbnail
- ``GET  /files/<sha256>[/thumb]``    download a file (or an image's thumbnail), never as a document
- ``GET  /health``

Every request passes the server's :class:`~chatkit.guard.Guard` first (origin,
content type, sign-in, rate limits); the connection itself is counted against
the per-port and per-address caps, and a whole request head (and body) must
arrive within a deadline, not per read.

SSE members join the same hub rooms as WebSocket members, so one room has two
transports and every member sees the same frames with the same ids.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl as ssl_module
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h11

from . import files, protocol
from .auth import COOKIE_NAME
from .endpoints import HISTORY_PATH, Endpoints, HTTPResponse, error_response, json_response
from .errors import ChatkitError, LLMError, ProtocolError
from .guard import REFUSALS, SECURITY_HEADERS, Admitted, Guard, Refused, refusal_response
from .hub import Hub
from .limits import Slot, refusal_bytes
from .llm.base import Streamer
from .rooms import BUSY_MESSAGE
from .sinks import Outgoing, Sink

__all__ = ["HTTPServer", "SSESink", "SSE_RETRY_MS", "HEARTBEAT_S"]

logger = logging.getLogger("chatkit.http")

SSE_RETRY_MS = 3000
HEARTBEAT_S = 15.0
MAX_BODY = 256 * 1024
SSE_BUFFER_BYTES = 1024 * 1024
"""Unsent bytes after which an SSE stream is ended as too slow (it resumes by ``Last-Event-ID``)."""
KEEPALIVE_IDLE_S = 30.0

_SSE_ROOM = re.compile(r"/sse/chat/(?P<sid>[^/]+)/")
_SSE_POST = re.compile(r"/sse/chat/(?P<sid>[^/]+)/messages/?")
_SSE_MESSAGE = re.compile(r"/sse/chat/(?P<sid>[^/]+)/messages/(?P<mid>[1-9][0-9]{0,17})")
_FILE = re.compile(r"/files/(?P<id>[^/]+)(?P<thumb>/thumb)?")
FILE_HEADERS = [
    ("X-Content-Type-Options", "nosniff"),
    ("Content-Security-Policy", "default-src 'none'; sandbox"),
    # cross-origin: the page (another port, often an IP address, which Chromium never counts as
    # "same-site") embeds the files; the ids are unguessable and sign-in still gates them.
    ("Cross-Origin-Resource-Policy", "cross-origin"),
    ("Referrer-Policy", "no-referrer"),
]
"""Sent with every file: never sniffed, never run as a document even if opened directly."""


class HTTPError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.extra = extra


def _openai_error(status: int, code: str, message: str, headers: list[tuple[str, str]]) -> HTTPResponse:
    """An error in OpenAI's shape, so ``openai`` clients report ``status_code`` and ``code``."""
    kind = {
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        429: "rate_limit_error",
    }.get(status, "invalid_request_error" if status < 500 else "api_error")
    extra = [(k, v) for k, v in headers if k.lower() not in ("content-type", "content-length")]
    return json_response(
        status, {"error": {"message": message, "type": kind, "param": None, "code": code}}, extra
    )


class SSESink(Sink):
    """A hub sink writing one event stream's events straight into its transport.

    Each event's ``id:`` is this stream's safe resume cursor: the newest
    finished message id, or one less than a reply still streaming, so that a
    browser's ``Last-Event-ID`` never skips a reply cut off mid-stream.

    Like the WebSocket sink it never awaits: an event is written into the
    transport's buffer at once, and the bytes of one frame with one cursor —
    the ``event:``/``id:``/``data:`` lines in their HTTP chunk — are built once
    per fan-out and shared by every stream with that cursor (see
    :func:`_event_bytes`). A stream whose unsent bytes pass ``limit`` is not
    keeping up: it is ended, and the client resumes with ``Last-Event-ID``.
    """

    __slots__ = ("transport", "chunked", "limit", "cursor", "pending", "overflowed", "ended", "_drain")

    def __init__(
        self,
        transport: asyncio.WriteTransport,
        *,
        chunked: bool = True,
        limit: int = SSE_BUFFER_BYTES,
        drain: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.transport = transport
        self._drain = drain
        self.chunked = chunked
        self.limit = limit
        self.cursor: int | None = None
        self.pending: set[int] = set()
        self.overflowed = False
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Done when the stream must end: :meth:`close`, or the client not keeping up."""

    def send(self, frame: Outgoing) -> None:
        if self.overflowed or self.ended.done():
            return
        kind, msg_id = frame.type, frame.id
        event_id: int | None = None
        if msg_id is not None:
            if kind == "ai_chunk":
                self.pending.add(msg_id)
            elif kind in ("message", "ai_complete"):
                self.pending.discard(msg_id)
                self.cursor = max(self.cursor or 0, msg_id)
                if frame.reply_id is not None and frame.reply_id > msg_id:
                    self.pending.add(frame.reply_id)  # its reply has begun: stay below it
            event_id = min(self.pending) - 1 if self.pending else self.cursor
        transport = self.transport
        if transport.is_closing():
            return
        if transport.get_write_buffer_size() > self.limit:
            self.overflowed = True
            logger.warning("ending a slow SSE stream (%d bytes unsent)", transport.get_write_buffer_size())
            self.ended.set_result(None)
            return
        transport.write(_event_bytes(frame, event_id, self.chunked))

    async def drain(self) -> None:
        """Wait until the stream's buffer has room again (a long replay writes page by page)."""
        if self._drain is not None:
            try:
                await self._drain()
            except ConnectionError:
                pass  # gone: the stream's task ends the member

    def write_raw(self, data: bytes) -> None:
        """Write bytes that are not a frame (a heartbeat comment) in this stream's framing."""
        if data and not self.transport.is_closing():
            self.transport.write(_chunk(data) if self.chunked else data)

    def close(self) -> None:
        """End the stream (after what is written)."""
        if not self.ended.done():
            self.ended.set_result(None)


def _chunk(data: bytes) -> bytes:
    """``data`` as one chunk of a ``Transfer-Encoding: chunked`` body (what ``h11`` would write)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


_event_cache: tuple[Outgoing | None, dict[tuple[int | None, bool], bytes]] = (None, {})


def _event_bytes(frame: Outgoing, event_id: int | None, chunked: bool) -> bytes:
    """The bytes of one SSE event, built once per (frame, cursor, framing).

    A fan-out hands every sink the same :class:`~chatkit.sinks.Outgoing`; the
    streams of a room nearly always share one cursor, so a cache of the last
    frame's encodings makes the per-stream work one lookup.
    """
    global _event_cache
    last, encodings = _event_cache
    if last is not frame:
        encodings = {}
        _event_cache = (frame, encodings)
    key = (event_id, chunked)
    data = encodings.get(key)
    if data is None:
        data = protocol.sse_event(frame.text, event=frame.type, id=event_id)
        if chunked:
            data = _chunk(data)
        encodings[key] = data
    return data


class HTTPServer:
    """The SSE/HTTP server: rooms of ``hub`` as event streams, ``streamer`` behind ``/v1``.

    ``endpoints`` answers ``/health`` and history (shared with the WebSocket
    port); ``backend`` names the model in ``/v1/models``.
    """

    def __init__(
        self,
        hub: Hub,
        streamer: Streamer,
        endpoints: Endpoints,
        host: str,
        port: int,
        *,
        backend: str = "",
        guard: Guard | None = None,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        self.hub = hub
        self.guard = guard or Guard()
        self.ssl = ssl
        self.streamer = streamer
        self.endpoints = endpoints
        self.backend = backend or endpoints.backend
        self.host = host
        self.requested_port = port
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._sinks: set[SSESink] = set()
        self.heartbeat_s = HEARTBEAT_S

    async def start(self) -> HTTPServer:
        self._server = await asyncio.start_server(
            self._accept,
            self.host,
            self.requested_port,
            ssl=self.ssl,
            ssl_handshake_timeout=self.guard.limits.head_timeout if self.ssl else None,
            backlog=self.guard.limits.backlog,  # bounds the accept burst (see Limits.backlog)
        )
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    @property
    def streams(self) -> int:
        """How many SSE streams are open (for tests and the notebooks)."""
        return len(self._sinks)

    async def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()

    async def close(self) -> None:
        """End every stream after what is queued (1 s at most), then close."""
        await self.stop_accepting()
        for sink in list(self._sinks):
            sink.close()
        if self._handlers:
            _, pending = await asyncio.wait(self._handlers, timeout=1.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    # -- connections ---------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if peer else ""
        slots = self.guard.connections["http"]
        task = asyncio.current_task()
        assert task is not None
        retry_after = self.guard.limits.retry_after_s

        def turn_away() -> None:
            writer.write(
                refusal_bytes(
                    503, "too_many_connections", "too many open connections; retry later", retry_after
                )
            )
            writer.close()

        def evict() -> None:  # the port is full and this connection has sent no request head yet
            logger.info("closed a connection from %s to make room: no request head yet, port full", address)
            turn_away()
            task.cancel()

        slot = slots.acquire(address, evict)
        if slot is None:
            # Refused before reading anything: the descriptor is freed at once.
            logger.info(
                "refused a connection from %s: %d open (%d from it)",
                address,
                slots.open,
                slots.from_key(address),
            )
            turn_away()
            return
        self._handlers.add(task)
        try:
            await self._serve(reader, writer, slot)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except asyncio.CancelledError:
            # Cancelled by close() or evicted: end quietly. This is the task's outermost frame,
            # and asyncio's stream callback would log a cancelled task as an error.
            pass
        finally:
            slots.release(slot)
            self._handlers.discard(task)
            writer.close()

    async def _next_event(self, conn: h11.Connection, reader: asyncio.StreamReader, idle: float | None):
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            async with asyncio.timeout(idle):
                data = await reader.read(65536)
            conn.receive_data(data)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, slot: Slot) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=16 * 1024)
        peer = writer.get_extra_info("peername")
        limits = self.guard.limits
        slots = self.guard.connections["http"]
        early_cors: list[tuple[str, str]] = []
        while True:
            try:
                try:
                    # One deadline for the whole head (and one for the body), not one per read:
                    # a client sending a byte now and then cannot hold the connection.
                    slots.awaiting_head(slot)  # evictable while the port is full (ConnectionSlots)
                    async with asyncio.timeout(limits.head_timeout):
                        request = await self._next_event(conn, reader, None)
                    slots.head_received(slot)
                except TimeoutError:
                    if conn.trailing_data[0]:  # a head begun but not finished: a slow (or stuck) client
                        logger.info(
                            "closing %s: request head not received within %g s", peer, limits.head_timeout
                        )
                        writer.write(
                            refusal_bytes(
                                408,
                                "request_timeout",
                                f"request head not received within {limits.head_timeout:g} s",
                            )
                        )
                    return  # an idle keep-alive connection is closed without a word
                if isinstance(request, h11.ConnectionClosed) or not isinstance(request, h11.Request):
                    return
                # A refusal before routing (a body too large) still carries CORS headers, so the page
                # on the other port can read its code.
                origin = next((v.decode("latin-1") for k, v in request.headers if k == b"origin"), None)
                early_cors = self.endpoints.cors(origin)
                max_body = self._max_body(request)
                if max_body > MAX_BODY and conn.they_are_waiting_for_100_continue:
                    writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
                body = bytearray()
                try:
                    async with asyncio.timeout(limits.body_timeout):
                        while True:
                            event = await self._next_event(conn, reader, None)
                            if isinstance(event, h11.Data):
                                body += event.data
                                if len(body) > max_body:
                                    raise HTTPError(
                                        413, "too_large", f"request body over {max_body} bytes", max=max_body
                                    )
                            elif isinstance(event, h11.EndOfMessage):
                                break
                            elif isinstance(event, h11.ConnectionClosed):
                                return
                except TimeoutError:
                    raise HTTPError(
                        408, "request_timeout", f"request body not received within {limits.body_timeout:g} s"
                    ) from None
            except h11.RemoteProtocolError as exc:
                logger.warning("bad HTTP from %s: %s", peer, exc)
                await self._respond(
                    conn, writer, error_response(400, "bad_request", "malformed HTTP request")
                )
                return
            except HTTPError as exc:
                logger.info("refused request from %s: %s", peer, exc.message)
                if conn.our_state is h11.SEND_RESPONSE or conn.our_state is h11.IDLE:
                    answer = protocol.error_frame(exc.code, exc.message) | exc.extra
                    try:
                        # The connection ends after this answer: say so, or a client would reuse it.
                        await self._respond(
                            conn,
                            writer,
                            json_response(exc.status, answer, early_cors + [("Connection", "close")]),
                        )
                    except h11.LocalProtocolError:
                        pass
                    if exc.status == 413:
                        await self._discard_body(conn, reader)
                return
            method = request.method.decode("ascii", "replace")
            target = request.target.decode("utf-8", "replace")
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}
            streamed = await self._route(conn, reader, writer, method, target, headers, bytes(body), peer)
            if streamed or conn.our_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    def _max_body(self, request: h11.Request) -> int:
        """The body a request may have: a file upload's limit on ``POST /files``, else
        :data:`MAX_BODY`. A declared ``Content-Length`` over it is refused before reading."""
        limit = MAX_BODY
        if request.method == b"POST" and urlsplit(request.target.decode("utf-8", "replace")).path == "/files":
            limit = self.guard.limits.max_upload_bytes
        for name, value in request.headers:
            if name == b"content-length" and int(value) > limit:  # h11 checked it is digits
                raise HTTPError(
                    413, "too_large", f"request body of {int(value)} bytes; the limit is {limit}", max=limit
                )
        return limit

    async def _discard_body(self, conn: h11.Connection, reader: asyncio.StreamReader) -> None:
        """After an early ``413``, read what the client is still sending (briefly, a bounded
        amount) before closing: closing with unread data resets the connection, and the client
        would see a reset instead of the answer."""
        if conn.their_state is not h11.SEND_BODY:
            return
        left = 4 * self.guard.limits.max_upload_bytes
        try:
            async with asyncio.timeout(self.guard.limits.body_timeout):
                while left > 0:
                    data = await reader.read(65536)
                    if not data:
                        return
                    left -= len(data)
        except (TimeoutError, ConnectionError):
            pass

    async def _respond(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        response: HTTPResponse,
        *,
        head: bool = False,
    ) -> None:
        headers = response.headers
        if not any(k == "X-Content-Type-Options" for k, _ in headers):
            headers = headers + SECURITY_HEADERS
        writer.write(
            conn.send(
                h11.Response(status_code=response.status, headers=headers, reason=response.reason.encode())
            )
        )
        if response.body and not head:  # a HEAD answer has GET's headers and no body
            writer.write(conn.send(h11.Data(data=response.body)))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()

    async def _route(
        self, conn, reader, writer, method: str, target: str, headers: dict[str, str], body: bytes, peer: Any
    ) -> bool:
        """Answer one request; ``True`` when it was a stream that used up the connection."""
        url = urlsplit(target)
        path = url.path
        origin = headers.get("origin")
        cors = self.endpoints.cors(origin)
        address = str(peer[0]) if peer else ""
        query = parse_qs(url.query)

        def admit(*, state_changing: bool = False, signed: bool = True) -> Admitted:
            return self.guard.admit(headers, query, address, state_changing=state_changing, signed=signed)

        try:
            self.guard.origins.check(origin, headers.get("host"))  # one policy for every route
            if path == "/files" and method != "OPTIONS":
                self._require(method, "POST")
                uploaded = await self._upload(url.query, headers, body, admit(), cors)
                await self._respond(conn, writer, uploaded)
                return False
            if (m := _FILE.fullmatch(path)) is not None and method != "OPTIONS":
                if method not in ("GET", "HEAD"):
                    raise HTTPError(405, "method_not_allowed", "use GET")
                admit()
                download = await self._download(m["id"], m["thumb"] is not None, headers, cors)
                await self._respond(conn, writer, download, head=method == "HEAD")
                return False
            if method == "HEAD":  # answered like GET, without a body (no stream is opened)
                if HISTORY_PATH.fullmatch(path) is not None:
                    admit()
                await self._respond(conn, writer, await self._head(path, url.query, origin, cors), head=True)
                return False
            if method == "OPTIONS":
                await self._respond(
                    conn,
                    writer,
                    HTTPResponse(
                        204,
                        cors
                        + [
                            ("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS"),
                            (
                                "Access-Control-Allow-Headers",
                                "Content-Type, Authorization, Last-Event-ID, X-Filename",
                            ),
                            ("Access-Control-Max-Age", "600"),
                            ("Content-Length", "0"),
                        ],
                        b"",
                    ),
                )
                return False
            if method == "GET":
                if HISTORY_PATH.fullmatch(path) is not None:
                    admit()
                answer = await self.endpoints.get(path, url.query, origin, page=False)
                if answer is not None:
                    await self._respond(conn, writer, answer)
                    return False
            if path == "/auth/login":
                self._require(method, "POST")
                await self._respond(
                    conn, writer, self._login(admit(state_changing=True, signed=False), body, cors)
                )
                return False
            if (m := _SSE_MESSAGE.fullmatch(path)) is not None:
                self._require(method, "DELETE")
                await self._respond(conn, writer, await self._delete(m["sid"], int(m["mid"]), admit(), cors))
                return False
            if (m := _SSE_POST.fullmatch(path)) is not None:
                self._require(method, "POST")
                admitted = admit(state_changing=True)
                await self._respond(conn, writer, await self._post_message(m["sid"], body, admitted, cors))
                return False
            if (m := _SSE_ROOM.fullmatch(path)) is not None:
                self._require(method, "GET")
                await self._stream_room(conn, reader, writer, m["sid"], url.query, headers, cors, admit())
                return True
            if HISTORY_PATH.fullmatch(path) is not None:
                self._require(method, "GET")  # a GET was answered above
            if path == "/v1/models":
                self._require(method, "GET")
                admit()
                await self._respond(
                    conn,
                    writer,
                    json_response(
                        200,
                        {
                            "object": "list",
                            "data": [
                                {
                                    "id": self._model_name(),
                                    "object": "model",
                                    "created": 0,
                                    "owned_by": "chatkit",
                                }
                            ],
                        },
                        cors,
                    ),
                )
                return False
            if path == "/v1/chat/completions":
                self._require(method, "POST")
                admitted = admit(state_changing=True)
                self.guard.rate(self.guard.completions, admitted, "completions")
                return await self._completions(conn, writer, body, cors)
            raise HTTPError(404, "not_found", f"no route for {path}")
        except files.UploadRefused as exc:
            logger.info("refused upload from %s: %s %s: %s", address, exc.status, exc.code, exc.message)
            refusal = protocol.error_frame(exc.code, exc.message) | exc.extra
            await self._respond(conn, writer, json_response(exc.status, refusal, cors))
            return False
        except (HTTPError, ChatkitError) as exc:
            level = logging.WARNING if getattr(exc, "status", 400) in (401, 403) else logging.INFO
            logger.log(
                level,
                "refused %s %s from %s: %s %s",
                method,
                path,
                address,
                getattr(exc, "status", ""),
                exc.code,
            )
            if conn.our_state is h11.SEND_RESPONSE:
                response = refusal_response(exc, cors)  # type: ignore[arg-type]
                if path.startswith("/v1/"):
                    response = _openai_error(response.status, exc.code, exc.message, response.headers)
                await self._respond(conn, writer, response, head=method == "HEAD")
            return False

    async def _delete(
        self, sid: str, message_id: int, admitted: Admitted, cors: list[tuple[str, str]]
    ) -> HTTPResponse:
        """``DELETE /sse/chat/<id>/messages/<message_id>``: a teacher's delete (``message_deleted`` to the room)."""
        sid = self._session(sid)
        if not admitted.is_teacher:
            raise Refused(403, "forbidden", "only a teacher can delete messages")
        name = admitted.identity.name if admitted.identity is not None else "teacher"
        if not await self.hub.delete(sid, message_id, name):
            raise Refused(404, "unknown_message", "no such message in this room")
        return json_response(200, protocol.message_deleted_frame(message_id, name), cors)

    # -- files ---------------------------------------------------------------

    async def _upload(
        self,
        query: str,
        headers: dict[str, str],
        body: bytes,
        admitted: Admitted,
        cors: list[tuple[str, str]],
    ) -> HTTPResponse:
        """``POST /files?room=<id>``: the raw body is the file (see :mod:`chatkit.files`).

        The request must not be one a cross-site page can send without a preflight
        (``multipart/form-data``, ``text/plain``, a form, or untyped: 415), so the origin
        policy covers uploads as it covers every other state-changing route.
        """
        files.check_request_type(headers.get("content-type"))
        room = parse_qs(query).get("room", [""])[-1]
        if not room:
            raise HTTPError(400, "missing_field", "name the room: POST /files?room=<room id>")
        try:
            session_id = protocol.validate_session_id(room)
        except ProtocolError as exc:
            raise HTTPError(400, exc.code, exc.message) from None
        self.guard.rate(self.guard.messages, admitted, "uploads")
        limits = self.guard.limits
        upload = await asyncio.to_thread(
            files.inspect_upload,
            body,
            headers.get("x-filename"),
            max_bytes=limits.max_upload_bytes,
            max_pixels=limits.max_image_pixels,
        )
        a = upload.attachment
        try:
            created = await self.hub.store.put_file(session_id, a, upload.data, upload.thumb)
        except ChatkitError as exc:  # the store's fault (full, read-only): try again later
            logger.warning("upload room=%s not stored: %s", session_id, exc.message)
            raise Refused(503, exc.code, exc.message, retry_after=self.guard.limits.retry_after_s) from None
        logger.info(
            "upload room=%s id=%s type=%s size=%d %s",
            session_id,
            a.id[:12],
            a.type,
            a.size,
            "stored" if created else "known already",
        )
        return json_response(201, a.to_object(), cors)

    async def _download(
        self, file_id: str, thumb: bool, headers: dict[str, str], cors: list[tuple[str, str]]
    ) -> HTTPResponse:
        """``GET /files/<sha256>[/thumb]``: the bytes with the sniffed type, never as a document."""
        stored = None
        if protocol.FILE_ID.fullmatch(file_id) is not None:
            stored = await self.hub.store.file_data(file_id, thumb=thumb)
        if stored is None:
            raise HTTPError(404, "unknown_file", "no such file" + (" thumbnail" if thumb else ""))
        a = stored.attachment
        etag = f'"{a.id}{"-thumb" if thumb else ""}"'
        common = (
            [
                ("ETag", etag),
                ("Cache-Control", "private, max-age=31536000, immutable"),  # content-addressed: never changes
            ]
            + FILE_HEADERS
            + cors
        )
        if etag in (value.strip() for value in headers.get("if-none-match", "").split(",")):
            return HTTPResponse(304, common, b"")
        content_type = files.THUMB_TYPE if thumb else a.type
        return HTTPResponse(
            200,
            [
                ("Content-Type", content_type),
                ("Content-Length", str(len(stored.data))),
                ("Content-Disposition", files.content_disposition(a)),
            ]
            + common,
            stored.data,
        )

    def _login(self, admitted: Admitted, body: bytes, cors: list[tuple[str, str]]) -> HTTPResponse:
        """``POST /auth/login {"name", "code"}``: a token, also set as an ``HttpOnly`` cookie."""
        self.guard.rate(self.guard.handshakes, admitted, "sign-in attempts")
        obj = protocol.parse_json(body or b"null")
        if not isinstance(obj, dict):
            raise ProtocolError('send {"name": ..., "code": ...}', code="not_an_object")
        token, who = self.guard.auth.login(obj.get("name"), obj.get("code"))
        max_age = max(1, int(who.expires - time.time()))
        secure = "; Secure" if self.ssl is not None else ""
        cookie = f"{COOKIE_NAME}={token}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
        logger.info("signed in %r as %s from %s", who.name, who.role, admitted.address)
        return json_response(
            200,
            {"token": token, "name": who.name, "role": who.role, "expires": int(who.expires)},
            cors + [("Set-Cookie", cookie), ("Cache-Control", "no-store")],
        )

    async def _head(
        self, path: str, query: str, origin: str | None, cors: list[tuple[str, str]]
    ) -> HTTPResponse:
        """What a GET of ``path`` would answer, for a HEAD (an event stream is not opened)."""
        answer = await self.endpoints.get(path, query, origin, page=False)
        if answer is not None:
            return answer
        if _SSE_ROOM.fullmatch(path) is not None:
            return HTTPResponse(
                200,
                [("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-cache")] + cors,
                b"",
            )
        if path == "/v1/models":
            return json_response(200, {"object": "list", "data": []}, cors)
        if _SSE_POST.fullmatch(path) is not None or path == "/v1/chat/completions":
            return error_response(405, "method_not_allowed", "use POST", cors)
        return error_response(404, "not_found", f"no route for {path}", cors)

    @staticmethod
    def _require(method: str, expected: str) -> None:
        if method != expected:
            raise HTTPError(405, "method_not_allowed", f"use {expected}")

    @staticmethod
    def _session(session_id: str) -> str:
        try:
            return protocol.session_id_from_path(session_id)
        except ProtocolError as exc:
            raise HTTPError(404, "not_found", exc.message) from None

    # -- SSE rooms -----------------------------------------------------------

    async def _stream_room(
        self,
        conn,
        reader,
        writer,
        sid: str,
        query: str,
        headers: dict[str, str],
        cors: list[tuple[str, str]],
        admitted: Admitted,
    ) -> None:
        sid = self._session(sid)
        params = parse_qs(query)
        after_raw = headers.get("last-event-id") or params.get("after", [""])[-1]
        self.guard.rate(self.guard.handshakes, admitted, "connections")
        user = self.guard.name(admitted, params.get("user", [None])[-1])
        self.guard.new_room(admitted, sid in self.hub.rooms)
        try:
            presence_batch = protocol.parse_presence(params.get("presence", [None])[-1])
            after = protocol.parse_cursor(after_raw, "Last-Event-ID / after") if after_raw else None
        except ProtocolError as exc:
            raise HTTPError(400, exc.code, exc.message) from None
        user = user or self.hub.next_guest()
        streams = self.guard.streams
        if not streams.acquire(admitted.address):
            raise Refused(
                429,
                "too_many_streams",
                f"more than {self.guard.limits.max_streams_per_ip} event streams from your address",
                retry_after=self.guard.limits.retry_after_s,
            )
        try:
            await self._stream_member(conn, reader, writer, sid, user, after, cors, presence_batch)
        finally:
            streams.release(admitted.address)

    async def _stream_member(
        self,
        conn,
        reader,
        writer,
        sid: str,
        user: str,
        after: int | None,
        cors: list[tuple[str, str]],
        presence_batch: bool = False,
    ) -> None:
        head = conn.send(
            h11.Response(
                status_code=200,
                reason=b"OK",
                headers=[
                    ("Content-Type", "text/event-stream; charset=utf-8"),
                    ("Cache-Control", "no-cache"),
                    ("X-Accel-Buffering", "no"),
                ]
                + cors
                + SECURITY_HEADERS,
            )
        )
        writer.write(head)
        writer.write(conn.send(h11.Data(data=protocol.sse_retry(SSE_RETRY_MS))))
        # h11 chose the body's framing (chunked for HTTP/1.1, close-delimited for 1.0); the sink
        # writes events in the same framing itself, so that one event's bytes serve every stream.
        sink = SSESink(
            writer.transport,
            chunked=b"chunked" in head.lower(),  # type: ignore[arg-type]
            drain=writer.drain,
        )
        sink.cursor = after
        self._sinks.add(sink)
        try:
            member = await self.hub.join(sid, user, sink, after=after, presence_batch=presence_batch)
        except ChatkitError as exc:  # the store failed (the stream's head is out): end it, logged
            logger.error("join room=%s user=%s failed: %s", sid, user, exc)
            self._sinks.discard(sink)
            return
        except BaseException:
            self._sinks.discard(sink)
            raise
        try:
            async with asyncio.TaskGroup() as tg:
                pump = tg.create_task(self._pump(conn, writer, sink))
                watcher = tg.create_task(self._watch_eof(reader))
                # Whichever ends first ends the other: the stream, or the client leaving.
                pump.add_done_callback(lambda _: watcher.cancel())
                watcher.add_done_callback(lambda _: pump.cancel())
        except* (ConnectionError, TimeoutError) as group:
            # A client leaving mid-write is how event streams end: not an error.
            logger.debug("SSE client of room %s left: %r", sid, group.exceptions[0])
        finally:
            self.hub.leave(member)
            self._sinks.discard(sink)

    @staticmethod
    async def _watch_eof(reader: asyncio.StreamReader) -> None:
        """Return when the client closes its side (an SSE client sends nothing more)."""
        while await reader.read(4096):
            pass

    async def _pump(self, conn: h11.Connection, writer: asyncio.StreamWriter, sink: SSESink) -> None:
        """Heartbeats while the stream is quiet; the end of the body when it must end.

        Events do not pass through here: the sink writes them into the transport.
        """
        while True:
            try:
                async with asyncio.timeout(self.heartbeat_s):
                    await asyncio.shield(sink.ended)
            except TimeoutError:
                sink.write_raw(protocol.sse_comment("heartbeat"))
                await writer.drain()
                continue
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
            return

    async def _post_message(
        self, sid: str, body: bytes, admitted: Admitted, cors: list[tuple[str, str]]
    ) -> HTTPResponse:
        sid = self._session(sid)
        hub = self.hub
        client_id: str | None = None
        try:
            obj = protocol.parse_json(body or b"null")
            if isinstance(obj, dict) and obj.get("type") == "reaction":  # the SSE page's reactions
                reaction = protocol.decode_object(obj)
                assert isinstance(reaction, protocol.Reaction)
                user = self.guard.name(admitted, obj.get("user")) or "anonymous"
                self.guard.rate(self.guard.messages, admitted, "messages")
                return json_response(
                    200, await hub.react(sid, user, reaction.message_id, reaction.emoji), cors
                )
            if isinstance(obj, dict):
                obj = {**obj, "type": "message"}  # otherwise this route only takes chat messages
            frame = protocol.decode_object(obj, max_text=hub.config.max_text)
            # The name is the token's (a different "user" is refused); without sign-in the
            # declared one, validated. The rate limit is keyed on the token or the address.
            user = self.guard.name(admitted, obj.get("user")) or "anonymous"
            assert isinstance(frame, protocol.SendMessage)
            client_id = frame.client_id
            self.guard.rate(self.guard.messages, admitted, "messages")
            self.guard.new_room(admitted, sid in hub.rooms)
            posted = await hub.post(
                sid, user, frame.text, client_id=frame.client_id, attachment=frame.attachment
            )
        except REFUSALS as exc:
            exc.client_id = client_id  # type: ignore[union-attr]  # the answer names the message
            raise
        except ChatkitError as exc:
            # 4xx: the request's fault; 503 (with Retry-After): the server's, try again later.
            if exc.code == "rate_limited":
                status = 429
            elif exc.code == "shutting_down" or exc.code.startswith("store_"):
                status = 503
            else:
                status = 400
            log = logger.warning if status == 503 else logger.info
            log("refused POST room=%s code=%s: %s", sid, exc.code, exc.message)
            payload = protocol.refusal_frame(exc, client_id)
            extra = list(cors)
            if payload.get("retry_after_ms") is not None:
                extra.append(("Retry-After", str(max(1, -(-payload["retry_after_ms"] // 1000)))))
            return json_response(status, payload, extra)
        payload = posted.message.to_frame()
        if posted.created and not posted.queued and posted.asks_reply:
            payload["warning"] = {"code": "busy", "message": BUSY_MESSAGE}
        return json_response(201 if posted.created else 200, payload, cors)

    # -- OpenAI-compatible API -----------------------------------------------

    def _model_name(self) -> str:
        return f"chatkit-{self.backend}"

    async def _completions(self, conn, writer, body: bytes, cors: list[tuple[str, str]]) -> bool:
        try:
            req = json.loads(body)
            messages = req["messages"]
            if (
                not isinstance(messages, list)
                or not messages
                or not all(
                    isinstance(m, dict)
                    and isinstance(m.get("role"), str)
                    and isinstance(m.get("content"), str)
                    for m in messages
                )
            ):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            raise HTTPError(
                400, "invalid_request_error", "'messages' must be a non-empty list of {role, content} strings"
            ) from None
        ceiling = self.guard.limits.v1_max_tokens
        max_tokens = req.get("max_completion_tokens", req.get("max_tokens"))
        if max_tokens is None:
            max_tokens = ceiling
        elif not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise HTTPError(400, "invalid_value", "'max_tokens' must be a positive integer")
        max_tokens = min(max_tokens, ceiling)
        model = req.get("model") or self._model_name()
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        stream = self.streamer.stream([{"role": m["role"], "content": m["content"]} for m in messages])
        finish = "stop"

        async def pieces():
            """The streamer's pieces, at most ``max_tokens`` of them (a piece counts as a token)."""
            nonlocal finish
            count = 0
            async for piece in stream:
                if count >= max_tokens:
                    finish = "length"
                    return
                count += 1
                yield piece

        def chunk(delta: dict, finish: str | None = None) -> bytes:
            return protocol.sse_event(
                json.dumps(
                    {
                        "id": completion_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model,
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                    },
                    ensure_ascii=False,
                )
            )

        if not req.get("stream"):
            try:
                text = "".join([piece async for piece in pieces()])
            except LLMError as exc:
                await self._respond(
                    conn,
                    writer,
                    json_response(502, {"error": {"message": exc.message, "code": exc.code}}, cors),
                )
                return False
            await self._respond(
                conn,
                writer,
                json_response(
                    200,
                    {
                        "id": completion_id,
                        "object": "chat.completion",
                        "created": created,
                        "model": model,
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": text},
                                "finish_reason": finish,
                            }
                        ],
                        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                    },
                    cors,
                ),
            )
            return False
        writer.write(
            conn.send(
                h11.Response(
                    status_code=200,
                    reason=b"OK",
                    headers=[
                        ("Content-Type", "text/event-stream; charset=utf-8"),
                        ("Cache-Control", "no-cache"),
                        ("X-Accel-Buffering", "no"),
                    ]
                    + cors,
                )
            )
        )
        writer.write(conn.send(h11.Data(data=chunk({"role": "assistant", "content": ""}))))
        try:
            async for piece in pieces():
                writer.write(conn.send(h11.Data(data=chunk({"content": piece}))))
                await writer.drain()
            writer.write(conn.send(h11.Data(data=chunk({}, finish))))
        except LLMError as exc:
            writer.write(
                conn.send(
                    h11.Data(
                        data=protocol.sse_event(
                            json.dumps({"error": {"message": exc.message, "code": exc.code}})
                        )
                    )
                )
            )
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        writer.write(conn.send(h11.Data(data=b"data: [DONE]\n\n")))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()
        return True
