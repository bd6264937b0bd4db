"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests, built on h11.

Its behaviour per request is chosen by ``mode``: ``ok`` (normal stream with an
empty-``choices`` usage chunk), ``401``, ``429``, ``drop`` (closes the socket
mid-stream), ``stall`` (sends two chunks, then nothing), ``eof`` (sends two
chunks, then ends the response cleanly: no ``finish_reason``, no ``[DONE]``),
``done_only`` (every chunk, then ``[DONE]`` without any ``finish_reason``).
"""

from __future__ import annotations

import asyncio
import json

import h11


def chunk(content: str | None, finish: str | None = None, choices: bool = True) -> bytes:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [
            {"index": 0, "delta": {} if content is None else {"content": content}, "finish_reason": finish}
        ]
        if choices
        else [],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


class FakeOpenAI:
    def __init__(self, mode: str = "ok", pieces: list[str] | None = None) -> None:
        self.mode = mode
        self.pieces = pieces or ["Hel", "lo", " there"]
        self.requests: list[dict] = []
        self.server: asyncio.Server | None = None
        self.handlers: set[asyncio.Task] = set()

    async def __aenter__(self) -> FakeOpenAI:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.handlers:
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)
        await self.server.wait_closed()

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        conn = h11.Connection(h11.SERVER)
        body = b""
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.Data):
                    body += event.data
                if isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    break
            self.requests.append(json.loads(body or b"{}"))

            def send(ev: object) -> None:
                writer.write(conn.send(ev))  # type: ignore[arg-type]

            if self.mode in ("401", "429"):
                payload = json.dumps({"error": {"message": "nope", "type": "x", "code": self.mode}}).encode()
                send(
                    h11.Response(
                        status_code=int(self.mode),
                        headers=[("content-type", "application/json"), ("content-length", str(len(payload)))],
                    )
                )
                send(h11.Data(data=payload))
                send(h11.EndOfMessage())
                await writer.drain()
                return
            send(
                h11.Response(
                    status_code=200,
                    headers=[("content-type", "text/event-stream"), ("transfer-encoding", "chunked")],
                )
            )
            for i, piece in enumerate(self.pieces):
                send(h11.Data(data=chunk(piece)))
                await writer.drain()
                await asyncio.sleep(0.01)  # a model's pace: pieces arrive apart, as from a real server
                if self.mode == "drop" and i == 1:
                    writer.transport.abort()
                    return
                if self.mode == "stall" and i == 1:
                    await asyncio.sleep(3600)  # the stall under test: the client's idle timeout must end it
                if self.mode == "eof" and i == 1:
                    send(h11.EndOfMessage())  # a well-formed end of the body, mid-answer
                    await writer.drain()
                    return
            if self.mode == "done_only":
                send(h11.Data(data=b"data: [DONE]\n\n"))
                send(h11.EndOfMessage())
                await writer.drain()
                return
            send(h11.Data(data=chunk(None, choices=False)))  # a usage chunk: empty choices
            send(h11.Data(data=chunk(None, "stop")))
            send(h11.Data(data=b"data: [DONE]\n\n"))
            send(h11.EndOfMessage())
            await writer.drain()
        finally:
            writer.close()
