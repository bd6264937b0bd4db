"""Build the course notebooks from the cell lists below, then execute them in place.

    python tools/build_notebooks.py            # write + execute every notebook
    python tools/build_notebooks.py 03         # only the ones whose name starts with 03

The notebooks are committed with their outputs (nbval compares them); edit
the cells here, rebuild, review the diff, commit.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent / "notebooks"

IGNORE = "# NBVAL_IGNORE_OUTPUT\n"


def md(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(text.strip())


def code(src: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_code_cell(src.strip())


NOTEBOOKS: dict[str, list] = {}

# ---------------------------------------------------------------------------
NOTEBOOKS["00_start_here"] = [
    md("""
# 00 · Start here

**chatkit** is a small, real chat server and client that you can run, break and measure from a notebook.
Over seven notebooks you rebuild what a chat product like the seed document's Django Channels app does — and
what it leaves out: streaming AI replies, reconnection without losing a message, presence, and the choice
between WebSocket and Server-Sent Events.

**Learning objectives** — after this notebook you can:
1. check that your environment runs the course,
2. start a chatkit server inside the notebook and ask its offline AI tutor a question,
3. switch the same server to a real model with environment variables only.

**Prerequisites:** Python basics, `async`/`await` at the level of "call it with `await`". About 15 minutes.

## Contents

| notebook | you will | time |
|---|---|---|
| 00 start here | check the setup, meet the tutor | 15 min |
| [01 the handshake](01_handshake.ipynb) | speak WebSocket by hand: the HTTP upgrade, `Sec-WebSocket-Accept`, frame bytes, masking | 25 min |
| [02 a chat server](02_chat_server.ipynb) | rooms, the message protocol frame by frame, the SQLite store, bad input | 25 min |
| [03 streaming AI replies](03_streaming.ipynb) | `ai_chunk`/`ai_complete`, time to first token, cancelling, real models | 20 min |
| [04 chat panes](04_chat_panes.ipynb) | two users side by side: typing, presence, read receipts, history | 20 min |
| [05 reconnection](05_reconnection.ipynb) | kill the server under live clients; backoff, jitter, the thundering herd, exactly-once | 30 min |
| [06 WebSocket vs SSE](06_ws_vs_sse.ipynb) | the same room over both transports, raw SSE bytes, `Last-Event-ID`, measurements | 25 min |

Every notebook ends with **Try it** exercises; their checkers live in `chatkit.exercises` and the
solutions in [solutions/](solutions/).
"""),
    md("## 1. Setup check\n\nThis cell checks the Python version and that chatkit and its libraries import. Look for `True` everywhere."),
    code("""
import sys
import chatkit, websockets, aiosqlite, ipywidgets

print("Python 3.11+:", sys.version_info >= (3, 11))
print("chatkit imports:", chatkit.__name__ == "chatkit")
"""),
    md("""
## 2. Start a server inside the notebook

`ChatServer` runs in the notebook's own event loop: `await server.start()` returns at once and the server keeps
serving between cells. `port=0` picks a free port, `db=":memory:"` keeps nothing after the notebook, and
`llm="offline"` chooses the scripted tutor (no key, no network). We ask it to stream without delays so the
notebook runs fast.
"""),
    code("""
from chatkit import ChatServer

server = await ChatServer(port=0, http_port=-1, db=":memory:", llm="offline",
                          first_token_ms=0, tokens_per_s=0).start()
print("replies by:", server.backend)
print("room URL:", server.ws_url("setup"))
"""),
    md("""
## 3. Ask the tutor

`ChatClient` connects to a room. `send()` returns once the server has **stored** the message; then the
reply streams as `ai_chunk` events and ends with `ai_complete`.
"""),
    code("""
from chatkit.client import ChatClient

async with ChatClient(server.ws_url("setup"), user="student") as chat:
    stored = await chat.send("How does the WebSocket handshake work?")
    reply = await chat.next_event("ai_complete", timeout=10)

print("stored as message id", stored["id"])
print(reply["message"][:160], "...")
assert "101 Switching Protocols" in reply["message"]
"""),
    md("""
The tutor is **not a language model**: it picks the best-matching entry of a small knowledge base written
for this course and streams it in sub-word pieces. It answers in Korean when you ask in Korean:
"""),
    code("""
async with ChatClient(server.ws_url("setup"), user="지민") as chat:
    await chat.send("재연결할 때 백오프와 지터는 왜 필요해요?")
    reply = await chat.next_event("ai_complete", timeout=10)

print(reply["message"][:80], "...")
assert "백오프" in reply["message"]
"""),
    md("""
## 4. A real model, by environment variables only

`chatkit serve --llm auto` (the default) uses an OpenAI-compatible API when `OPENAI_API_KEY` or
`OPENAI_BASE_URL` is set, and the offline tutor otherwise:

```bash
export OPENAI_API_KEY=sk-...                        # OpenAI
export OPENAI_BASE_URL=http://127.0.0.1:11434/v1    # or a local Ollama / vLLM / LM Studio
export CHATKIT_MODEL=llama3.2                       # which model
chatkit serve
```

`resolve_backend` is the function that makes that choice; here it is with two pretend environments:
"""),
    code("""
from chatkit.llm import resolve_backend

print("no variables  ->", resolve_backend("auto", {}))
print("with a key    ->", resolve_backend("auto", {"OPENAI_API_KEY": "sk-..."}))
print("local Ollama  ->", resolve_backend("auto", {"OPENAI_BASE_URL": "http://127.0.0.1:11434/v1"}))
"""),
    md("## 5. Stop the server\n\nEvery notebook stops what it started."),
    code("""
await server.stop()
print("stopped")
"""),
    md("""
## Summary

- chatkit's server runs inside the notebook: `await ChatServer(...).start()`, `await server.stop()`.
- A message is stored, broadcast, then answered by a streamed reply.
- The offline tutor needs nothing; real models are one environment variable away.

## Try it

Each exercise has a scaffold (it runs, and the checker says ⏳ until you fill it in) and a checker.
Solutions: [solutions/00_start_here_solutions.ipynb](solutions/00_start_here_solutions.ipynb).

**1 (easy).** Write `room_url(host, port, room)` returning the WebSocket URL of a room.
"""),
    code("""
from chatkit import exercises

def room_url(host: str, port: int, room: str) -> str:
    raise NotImplementedError

exercises.check_room_url(room_url)
"""),
    md("**2 (medium).** Write `choose(environ)` that picks `\"openai\"` or `\"offline\"` the way `--llm auto` does."),
    code("""
def choose(environ: dict) -> str:
    raise NotImplementedError

exercises.check_backend_choice(choose)
"""),
    md("**3 (harder).** Write `collect(frames)` that rebuilds a reply's text from a list of frames, ignoring frames that are not `ai_chunk`."),
    code("""
def collect(frames: list[dict]) -> str:
    raise NotImplementedError

exercises.check_collect_reply(collect)
"""),
    md("**Next:** [01 · The handshake](01_handshake.ipynb) — what happens on the wire when a client connects."),
]

# ---------------------------------------------------------------------------
NOTEBOOKS["01_handshake"] = [
    md("""
# 01 · The handshake

**Learning objectives** — after this notebook you can:
1. open a WebSocket by hand: send the HTTP Upgrade request over a raw socket and read `101 Switching Protocols`,
2. compute and check `Sec-WebSocket-Accept`,
3. read a frame's bytes (FIN, opcode, length) and explain why clients mask theirs,
4. measure what a held-open connection saves compared with one HTTP request per message.

**Prerequisites:** [00 · Start here](00_start_here.ipynb); bytes and hex in Python. About 25 minutes.

In the seed document's words, HTTP is a letter and WebSocket a phone call. Here we dial by hand.
"""),
    md("We start a server to talk to (echo replies: the AI repeats you, instantly)."),
    code("""
import asyncio, base64, hashlib, json, os
from chatkit import ChatServer

server = await ChatServer(port=0, db=":memory:", llm="echo").start()
HOST, PORT = "127.0.0.1", server.port
print("serving on", f"{HOST}:{PORT}")
"""),
    md("""
## 1. The Upgrade request, by hand

A WebSocket starts as an ordinary HTTP/1.1 `GET`. The client asks to *upgrade* the connection and sends a
random 16-byte key in base64. We use the RFC's example key so the result is reproducible.
"""),
    code("""
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
request = (
    f"GET /ws/chat/handshake/?user=student HTTP/1.1\\r\\n"
    f"Host: {HOST}:{PORT}\\r\\n"
    "Upgrade: websocket\\r\\n"
    "Connection: Upgrade\\r\\n"
    f"Sec-WebSocket-Key: {KEY}\\r\\n"
    "Sec-WebSocket-Version: 13\\r\\n"
    "\\r\\n"
)
print(request)
"""),
    md("We open a plain TCP connection, send those bytes, and read the response headers (up to the blank line)."),
    code("""
reader, writer = await asyncio.open_connection(HOST, PORT)
writer.write(request.encode())
head = await reader.readuntil(b"\\r\\n\\r\\n")
status_line, *header_lines = head.decode().strip().split("\\r\\n")
headers = dict(line.split(": ", 1) for line in header_lines)
print(status_line)
for name in ("Upgrade", "Connection", "Sec-WebSocket-Accept"):
    print(f"{name}: {headers[name]}")
"""),
    md("""
`101 Switching Protocols`: from now on this TCP connection speaks WebSocket frames, in both directions.

## 2. Check `Sec-WebSocket-Accept`

The server proves it understood: it appends a fixed GUID to our key, hashes with SHA-1 and encodes in base64.
"""),
    code("""
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
expected = base64.b64encode(hashlib.sha1((KEY + GUID).encode()).digest()).decode()
print("computed:", expected)
assert headers["Sec-WebSocket-Accept"] == expected == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
"""),
    md("""
## 3. The first frame's bytes

The server greets us with a `connection` frame. Byte 0 holds FIN (the last fragment) and the opcode
(1 = text); byte 1 holds the MASK bit and a 7-bit length (126 and 127 announce a longer length field).
"""),
    code("""
b0, b1 = await reader.readexactly(2)
fin, opcode, masked, length = bool(b0 & 0x80), b0 & 0x0F, bool(b1 & 0x80), b1 & 0x7F
if length == 126:
    length = int.from_bytes(await reader.readexactly(2), "big")
payload = await reader.readexactly(length)
print(f"byte 0 = {b0:08b}  FIN={fin} opcode={opcode}")
print(f"byte 1 = {b1:08b}  MASK={masked}")
print("frame type:", json.loads(payload)["type"])
assert fin and opcode == 1 and not masked
"""),
    md("""
Server frames are never masked. **Client** frames always are: a random 4-byte key, and every payload byte
XORed with it. That stops a malicious page from making a browser emit bytes that a confused proxy could
take for an HTTP request. Let us build a masked text frame by hand (short payload: one length byte).
"""),
    code("""
def client_frame(text: str, mask_key: bytes) -> bytes:
    data = text.encode()
    masked = bytes(b ^ mask_key[i % 4] for i, b in enumerate(data))
    return bytes([0x81, 0x80 | len(data)]) + mask_key + masked

frame = client_frame(json.dumps({"message": "hi"}), mask_key=b"\\x01\\x02\\x03\\x04")
print(frame.hex(" "))
writer.write(frame)
"""),
    md("The server decodes it, stores the message and broadcasts it back to the room. We read frames until we see our message."),
    code("""
async def read_frame() -> dict:
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    return json.loads(await reader.readexactly(n))

while (incoming := await read_frame())["type"] != "message":
    pass
print(incoming["type"], incoming["message"], "is_user:", incoming["is_user"])
writer.close()
"""),
    md("""
## 4. Letter or phone call? Measured.

Now the cost of *not* keeping the connection: 100 requests to `/health`, each on a new HTTP connection,
against 100 `ping`/`pong` round trips over one WebSocket. Timings vary by machine, so the cell prints the
ratio and checks only that the open connection wins.
"""),
    code("""
import time
from websockets.asyncio.client import connect

N = 100

async def http_get() -> None:
    r, w = await asyncio.open_connection(HOST, PORT)
    w.write(f"GET /health HTTP/1.1\\r\\nHost: {HOST}\\r\\nConnection: close\\r\\n\\r\\n".encode())
    await r.read()
    w.close()

t0 = time.perf_counter()
for _ in range(N):
    await http_get()
http_s = time.perf_counter() - t0

async with connect(server.ws_url("bench"), proxy=None) as ws:
    await ws.recv()  # the connection frame
    t0 = time.perf_counter()
    for _ in range(N):
        await ws.send('{"type": "ping"}')
        await ws.recv()
    ws_s = time.perf_counter() - t0

print("one WebSocket is faster:", ws_s < http_s)
"""),
    code("""
# NBVAL_IGNORE_OUTPUT
print(f"HTTP, new connection each: {http_s / N * 1000:.2f} ms per exchange")
print(f"one WebSocket:             {ws_s / N * 1000:.2f} ms per exchange  ({http_s / ws_s:.1f}x faster)")
"""),
    code("""
await server.stop()
print("stopped")
"""),
    md("""
## Summary

- The WebSocket handshake is one HTTP request and a `101` response; `Sec-WebSocket-Accept` = base64(SHA-1(key + GUID)).
- Frames: FIN + opcode, MASK + length (7, 16 or 64 bits), then (for clients) the mask key and the masked payload.
- Keeping one connection open saves a TCP handshake and HTTP headers on every message.

## Try it

Solutions: [solutions/01_handshake_solutions.ipynb](solutions/01_handshake_solutions.ipynb).

**1 (easy).** Write `accept_key(key)`.
"""),
    code("""
from chatkit import exercises

def accept_key(key: str) -> str:
    raise NotImplementedError

exercises.check_accept_key(accept_key)
"""),
    md("**2 (medium).** Write `parse_header(data)` returning `{\"fin\", \"opcode\", \"masked\", \"length\"}`, including the 16- and 64-bit lengths."),
    code("""
def parse_header(data: bytes) -> dict:
    raise NotImplementedError

exercises.check_frame_header(parse_header)
"""),
    md("**3 (harder).** Write `mask(payload, key)`. Check it against RFC 6455's own example (`Hello` with key `37 fa 21 3d`)."),
    code("""
def mask(payload: bytes, key: bytes) -> bytes:
    raise NotImplementedError

exercises.check_mask(mask)
"""),
    md("**Next:** [02 · A chat server](02_chat_server.ipynb) — rooms, frames and what the database keeps."),
]

# ---------------------------------------------------------------------------
NOTEBOOKS["02_chat_server"] = [
    md("""
# 02 · A chat server

**Learning objectives** — after this notebook you can:
1. follow the chat protocol frame by frame: `connection`, `message`, `ai_chunk`, `ai_complete`, presence and typing,
2. explain why a message is stored *before* it is broadcast, and query what the SQLite store holds,
3. predict the `error` frame the server answers to bad input, and why the connection stays open.

**Prerequisites:** [01 · The handshake](01_handshake.ipynb). About 25 minutes.

The seed's Django consumer stores a message, broadcasts it to the room group, then streams the AI reply to
the sender. chatkit keeps those frames and fixes what breaks in a real room.
"""),
    md("This time the database is a real file, so we can open it with `sqlite3` afterwards."),
    code("""
import json, sqlite3, tempfile
from pathlib import Path
from chatkit import ChatServer

db_path = Path(tempfile.mkdtemp()) / "chat.db"
server = await ChatServer(port=0, http_port=-1, db=str(db_path), llm="echo").start()
print("database file exists:", db_path.exists())
"""),
    md("""
## 1. Two clients in one room

A room is the path: `/ws/chat/<room>/`. We connect Ann, then Bob. Each first receives a `connection` frame
listing who is online; Ann then sees Bob's `user_join`.
"""),
    code("""
from websockets.asyncio.client import connect

ann = await connect(server.ws_url("lobby", user="ann"), proxy=None)
print("ann <-", json.loads(await ann.recv()))
bob = await connect(server.ws_url("lobby", user="bob"), proxy=None)
print("bob <-", json.loads(await bob.recv())["online"])
print("ann <-", json.loads(await ann.recv()))
"""),
    md("""
## 2. A message, frame by frame

Ann sends exactly what the seed's client sends: `{"message": "..."}`. The server **stores it first** (the id
comes from the database), then broadcasts it to everyone in the room, then streams the AI reply — to the
whole room, not just the sender. We print what Bob receives.
"""),
    code("""
await ann.send(json.dumps({"message": "hello everyone"}))

async def frames_until_complete(ws):
    out = []
    while True:
        frame = json.loads(await ws.recv())
        out.append(frame)
        if frame["type"] == "ai_complete":
            return out

for f in await frames_until_complete(bob):
    print({k: f[k] for k in ("type", "id", "message", "chunk", "is_user") if k in f})
"""),
    md("Ann received the same frames, with the same ids — that is what makes a room consistent:"),
    code("""
ann_frames = await frames_until_complete(ann)
print([(f["type"], f["id"]) for f in ann_frames if f["type"] != "ai_chunk"])
"""),
    md("""
## 3. Typing and presence

Typing notices go to everyone **else**. When Bob leaves, his typing state is cleared and Ann gets
`user_leave`.
"""),
    code("""
await bob.send(json.dumps({"type": "typing", "isTyping": True}))
print("ann <-", json.loads(await ann.recv()))
await bob.close()
print("ann <-", json.loads(await ann.recv()))  # bob's typing state ends with him
print("ann <-", json.loads(await ann.recv()))
"""),
    md("""
## 4. What the store holds

Every accepted message is a row: the user's message and the AI reply, with its status. Ids are strictly
increasing, so "everything after id N" is one indexed query — the basis of reconnection in notebook 05.
"""),
    code("""
con = sqlite3.connect(db_path)
for row in con.execute("SELECT id, session_id, user, is_user, content, status FROM messages ORDER BY id"):
    print(row)
con.close()
"""),
    md("""
## 5. Bad input

A server must assume clients misbehave. Each bad frame gets an `error` frame with a stable `code`, nothing
is stored, and the connection stays open.
"""),
    code("""
bad_frames = ["{not json", "[1, 2]", '{"type": "dance"}', '{"type": "message"}',
              '{"message": ""}', json.dumps({"message": "x" * 5000})]
for raw in bad_frames:
    await ann.send(raw)
    reply = json.loads(await ann.recv())
    print(f"{raw[:24]!r:28} -> {reply['code']}")
"""),
    md("The connection still works, and the row count did not move:"),
    code("""
await ann.send(json.dumps({"message": "still connected?"}))
print(json.loads(await ann.recv())["message"])
await frames_until_complete(ann)
print("rows:", await server.store.count("lobby"))
"""),
    md("A frame over the size limit (64 KiB by default) is different: `websockets` closes the connection with code **1009**."),
    code("""
await ann.send(json.dumps({"message": "x" * 100_000}))
try:
    await ann.recv()
except Exception as exc:
    print(type(exc).__name__, "code", exc.rcvd.code)
"""),
    code("""
await server.stop()
print("stopped")
"""),
    md("""
## Summary

- One path per room; `connection` tells a newcomer who is there; `user_join`/`user_leave` keep everyone current.
- Store, then broadcast: the id a client sees is the id in the database.
- Bad frames get `error` frames with codes; oversized frames close with 1009; the server stays up.

## Try it

Solutions: [solutions/02_chat_server_solutions.ipynb](solutions/02_chat_server_solutions.ipynb).

**1 (easy).** Write `make_frame(text, client_id=None)` returning the JSON text a client sends.
"""),
    code("""
from chatkit import exercises

def make_frame(text: str, client_id: str | None = None) -> str:
    raise NotImplementedError

exercises.check_message_frame(make_frame)
"""),
    md("**2 (medium).** Write `is_valid_room(name)`: 1 to 64 letters, digits, `_` or `-`."),
    code("""
def is_valid_room(name: str) -> bool:
    raise NotImplementedError

exercises.check_room_names(is_valid_room)
"""),
    md("""
**3 (harder).** The seed suggests emoji reactions. Design the frame `{"type": "reaction", "messageId": 4, "emoji": "👍"}`
and write `decode_reaction(raw)` that validates it like `chatkit.protocol.decode` does (accept `messageId` or
`message_id`; a positive integer; an emoji of 1 to 8 characters) and raises `ValueError` otherwise.
"""),
    code("""
def decode_reaction(raw: str) -> dict:
    raise NotImplementedError

exercises.check_reaction(decode_reaction)
"""),
    md("**Next:** [03 · Streaming AI replies](03_streaming.ipynb)."),
]

# ---------------------------------------------------------------------------
NOTEBOOKS["03_streaming"] = [
    md("""
# 03 · Streaming AI replies

**Learning objectives** — after this notebook you can:
1. read a streamed reply as `ai_chunk` frames and one `ai_complete`,
2. measure time to first token and plot when tokens arrive,
3. cancel a reply mid-stream and see what is stored,
4. point the same server at OpenAI or a local model.

**Prerequisites:** [02 · A chat server](02_chat_server.ipynb). About 20 minutes.
"""),
    md("""
This server's tutor streams at a realistic pace: 300 ms before the first token, then 30 tokens per second.
"""),
    code("""
import asyncio, time
from chatkit import ChatServer
from chatkit.client import ChatClient

server = await ChatServer(port=0, db=":memory:", llm="offline", first_token_ms=300, tokens_per_s=30).start()
chat = await ChatClient(server.ws_url("stream"), user="student").__aenter__()
print(chat.state.state)
"""),
    md("## 1. Watch a reply arrive\n\nWe note the time of every chunk, relative to the moment we sent the question."),
    code("""
sent = time.perf_counter()
await chat.send("What are Server-Sent Events?")
times, pieces = [], []
async for event in chat:
    if event["type"] == "ai_chunk":
        times.append(time.perf_counter() - sent)
        pieces.append(event["chunk"])
    elif event["type"] == "ai_complete":
        break
print("chunks:", len(pieces), "| joined text == ai_complete:", "".join(pieces) == event["message"])
print("first pieces:", pieces[:6])
"""),
    md("Time to first token is what users feel; then the rate. The cell checks they match the configured pace."),
    code("""
ttft = times[0]
rate = (len(times) - 1) / (times[-1] - times[0])
print("time to first token ~300 ms:", 0.2 < ttft < 1.0)
print("about 30 tokens/s:", 15 < rate < 35)
"""),
    code("""
# NBVAL_IGNORE_OUTPUT
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(7, 2.2))
ax.eventplot(times, lineoffsets=0, linelengths=0.8)
ax.axvline(ttft, color="red", linestyle="--", label=f"first token {ttft * 1000:.0f} ms")
ax.set_xlabel("seconds after sending"); ax.set_yticks([]); ax.legend(loc="upper left")
ax.set_title(f"{len(times)} chunks at {rate:.0f}/s")
plt.show()
"""),
    md("""
## 2. Cancel a reply

Any member of the room may send `{"type": "stop"}`. The reply stops within one chunk, the text so far is
stored with status `cancelled`, and everyone gets `ai_complete` with `"cancelled": true`.
"""),
    code("""
await chat.send("How does the WebSocket handshake work?")
seen = 0
async for event in chat:
    if event["type"] == "ai_chunk":
        seen += 1
        if seen == 5:
            await chat.stop_reply()
    elif event["type"] == "ai_complete":
        break
print("cancelled:", event["cancelled"], "| status:", event["status"])
row = await server.store.get(event["id"])
print("stored:", row.status, "| stored text is what was shown:", row.content == event["message"])
"""),
    md("""
## 3. The same server, a real model

Set `OPENAI_API_KEY` (OpenAI) or `OPENAI_BASE_URL` (Ollama: `http://127.0.0.1:11434/v1`) and `CHATKIT_MODEL`
before starting Jupyter, and `llm="auto"` picks it up. Without them this cell skips itself.
"""),
    code("""
# NBVAL_IGNORE_OUTPUT
import os

if os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL"):
    async with ChatServer(port=0, http_port=-1, db=":memory:", llm="auto") as real:
        async with ChatClient(real.ws_url("real"), user="student") as c:
            await c.send("In one sentence: what is a WebSocket?")
            print((await c.next_event("ai_complete", timeout=60))["message"])
else:
    print("skipped: set OPENAI_API_KEY or OPENAI_BASE_URL to try a real model")
"""),
    md("""
## 4. The tutor behind an OpenAI-compatible API

chatkit's HTTP server also speaks the OpenAI chat API, so the `openai` library streams the offline tutor —
exactly the code you would write against a real model.
"""),
    code("""
from openai import AsyncOpenAI

client = AsyncOpenAI(base_url=server.http_url + "v1", api_key="none")
stream = await client.chat.completions.create(
    model="chatkit", stream=True, messages=[{"role": "user", "content": "What is masking?"}])
text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
print(text[:120], "...")
await client.close()
"""),
    code("""
await chat.close()
await server.stop()
print("stopped")
"""),
    md("""
## Summary

- A streamed reply is deltas (`ai_chunk`) plus one `ai_complete` with the full, stored text.
- Time to first token and tokens per second are the two numbers users feel.
- `stop` ends a reply within one chunk and stores what was said, with status `cancelled`.

## Try it

Solutions: [solutions/03_streaming_solutions.ipynb](solutions/03_streaming_solutions.ipynb).

**1 (easy).** `ttft(sent_at, chunk_times)`.
"""),
    code("""
from chatkit import exercises

def ttft(sent_at: float, chunk_times: list[float]) -> float:
    raise NotImplementedError

exercises.check_ttft(ttft)
"""),
    md("**2 (medium).** `rate(chunk_times)`: chunks per second after the first."),
    code("""
def rate(chunk_times: list[float]) -> float:
    raise NotImplementedError

exercises.check_rate(rate)
"""),
    md("**3 (harder).** `async def take(stream, n)`: the first `n` pieces of a stream — and close the stream, so the model stops generating (that is how `stop` saves tokens)."),
    code("""
async def take(stream, n: int) -> list[str]:
    raise NotImplementedError

await exercises.check_take(take)
"""),
    md("**Next:** [04 · Chat panes](04_chat_panes.ipynb) — the chat interface, live in the notebook."),
]

# ---------------------------------------------------------------------------
NOTEBOOKS["04_chat_panes"] = [
    md("""
# 04 · Chat panes

**Learning objectives** — after this notebook you can:
1. put two users side by side in one room and watch an AI reply stream into both,
2. explain the typing indicator's debounce and expiry, presence, and read receipts,
3. page through older messages by id.

**Prerequisites:** [03 · Streaming](03_streaming.ipynb). About 20 minutes.

`ChatPane` is the seed's React `ChatInterface` rebuilt with ipywidgets: status line, bubbles with avatars,
the streaming cursor ▊, the input disabled while offline. Its state lives in a `ChatModel` that the cells
below read, so the notebook can check what the panes show.
"""),
    code("""
import asyncio
from chatkit import ChatServer
from chatkit.widgets import ChatPane, side_by_side

server = await ChatServer(port=0, http_port=-1, db=":memory:", llm="offline",
                          first_token_ms=200, tokens_per_s=40).start()
for i in range(30):  # an earlier conversation, for paging later
    await server.store.append("class", "teacher", f"earlier message {i}")

async def until(predicate, timeout=10):
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)
"""),
    md("## 1. Two panes, one room\n\nAnn and Bob join the room `class`. Type in either pane and press Enter (in a live notebook)."),
    code("""
# NBVAL_IGNORE_OUTPUT
ann = await ChatPane(server, "class", user="ann").start()
bob = await ChatPane(server, "class", user="bob").start()
side_by_side(ann, bob)
"""),
    md("Both show who is online; the status is 🟢."),
    code("""
await until(lambda: ann.model.online == ["ann", "bob"])
print("online:", ann.model.online, "| ann:", ann.model.state, "| bob:", bob.model.state)
"""),
    md("## 2. A message and a streamed reply in both panes\n\n`submit()` is what the Send button does."),
    code("""
ann.submit("How do I show who is online?")
await until(lambda: bob.model.streaming)
print("bob sees the reply streaming:", bool(bob.model.streaming))
await until(lambda: len(bob.model.messages) == 22 and not bob.model.streaming)
print("last two in bob's pane:", [(m["user"], m["text"][:30]) for m in bob.model.messages[-2:]])
"""),
    md("## 3. Read receipts\n\nBob's pane marked Ann's message read; Ann's bubble now shows ✓✓."),
    code("""
mine = ann.model.messages[-2]
await until(lambda: "bob" in ann.model.receipts.get(str(mine["id"]), []))
ann.flush()
print("read by:", ann.model.receipts[str(mine["id"])], "| shown:", "✓✓ read by bob" in ann.message_list.value)
"""),
    md("""
## 4. Typing: debounced and expiring

Keystrokes call `notify_typing()`: at most one `typing` frame per 500 ms, and `typing: false` after 3 s
without input. The server also expires typing states, in case a client vanishes mid-word.
"""),
    code("""
for ch in "Hi Ann":
    bob.input.value += ch
await until(lambda: ann.model.typing == ["bob"])
ann.flush()
print(ann.typing_line.value)
await until(lambda: ann.model.typing == [], timeout=6)
print("cleared after idle:", ann.model.typing == [])
"""),
    md("## 5. Older messages\n\nA pane shows the last 20 messages at first; **Load older messages** fetches 20 more by id (`?before=`)."),
    code("""
print("before:", len(bob.model.messages))
added = await bob.load_older()
print("loaded:", added, "| now:", len(bob.model.messages), "| more to load:", bob.model.has_more)
"""),
    md("## 6. Safety: text is escaped\n\nA message that looks like HTML is shown as text, never run."),
    code("""
await ann.client.send("<img src=x onerror=alert(1)>")
await until(lambda: any(m["text"].startswith("<img") for m in bob.model.messages))
bob.flush()
print("escaped:", "&lt;img src=x onerror=alert(1)&gt;" in bob.message_list.value, "| raw tag:", "<img" in bob.message_list.value)
"""),
    code("""
await ann.aclose()
await bob.aclose()
await server.stop()
print("stopped")
"""),
    md("""
## Summary

- Panes are views of a `ChatModel`; the client's events change the model; the view re-renders at most 20×/s.
- Typing is debounced on the client and expired on the server; presence counts users, not sockets.
- Receipts are stored and broadcast; history is paged by id, never by offset.

## Try it

Solutions: [solutions/04_chat_panes_solutions.ipynb](solutions/04_chat_panes_solutions.ipynb).

**1 (easy).** `render(user, text)` → `<b>user</b>: text`, safely.
"""),
    code("""
from chatkit import exercises

def render(user: str, text: str) -> str:
    raise NotImplementedError

exercises.check_escape(render)
"""),
    md("**2 (medium).** `typing_line(users)`: \"ann is typing…\", \"ann and bob are typing…\", \"3 people are typing…\"."),
    code("""
def typing_line(users: list[str]) -> str:
    raise NotImplementedError

exercises.check_typing_line(typing_line)
"""),
    md("**3 (harder).** A typing debouncer with explicit time: `keystroke(now)` and `poll(now)` return the typing values to send."),
    code("""
class Debouncer:
    def __init__(self, interval: float, idle: float):
        self.interval, self.idle = interval, idle

    def keystroke(self, now: float) -> list[bool]:
        raise NotImplementedError

    def poll(self, now: float) -> list[bool]:
        raise NotImplementedError

exercises.check_debouncer(Debouncer)
"""),
    md("**Next:** [05 · Reconnection](05_reconnection.ipynb) — what happens when the server goes away."),
]

# ---------------------------------------------------------------------------
NOTEBOOKS["05_reconnection"] = [
    md("""
# 05 · Reconnection

**Learning objectives** — after this notebook you can:
1. watch clients go from `open` to `reconnecting` and back when the server stops and restarts,
2. explain the thundering herd and how exponential backoff with jitter avoids it,
3. show that every message missed while away arrives exactly once: resume by id, outbox, deduplication.

**Prerequisites:** [04 · Chat panes](04_chat_panes.ipynb). About 30 minutes.

The seed's client reconnects every 3 s but loses whatever was said while it was away, and may store a
message twice when a send was in flight. Here we fix both, and measure.
"""),
    code("""
import asyncio, tempfile
from pathlib import Path
from chatkit import ChatServer
from chatkit.client import ChatClient, FixedDelay

db = str(Path(tempfile.mkdtemp()) / "chat.db")
server = await ChatServer(port=0, http_port=-1, db=db, llm="echo").start()
PORT = server.port
"""),
    md("## 1. Watch the state\n\nA client reports its state as events: `connecting`, `open`, `reconnecting` (with the attempt and the delay), `closed`."),
    code("""
states = []
ann = ChatClient(server.ws_url("room"), user="ann", policy=FixedDelay(0.2))
ann.on_event(lambda e: e["type"] == "state" and states.append((e["state"], e["attempt"])))
await ann.start()
await ann.send("before the crash")
print(states)
"""),
    md("We stop the server. Ann's client notices and starts retrying every 0.2 s."),
    code("""
await server.stop()
await asyncio.sleep(0.7)
print(ann.state.state, "| attempts so far:", ann.state.attempt)
print(states[:4])
"""),
    md("""
## 2. Sending while offline: the outbox

`send()` does not fail while offline: the message waits in the outbox with a `client_id`, to be re-sent after
reconnecting. The server stores at most one message per `client_id`, so a re-send can never duplicate.
"""),
    code("""
pending = asyncio.create_task(ann.send("written while the server was down"))
await asyncio.sleep(0.1)
print("outbox:", ann.outbox)
"""),
    md("## 3. Restart, and catch up\n\nThe server comes back on the same port and file. Bob speaks before Ann's next retry — Ann must still get it."),
    code("""
server = await ChatServer(port=PORT, http_port=-1, db=db, llm="echo").start()
async with ChatClient(server.ws_url("room"), user="bob") as bob:
    await bob.send("did you miss me?")
stored = await asyncio.wait_for(pending, 5)
print("outbox empty:", ann.outbox == [], "| stored:", stored["message"])
"""),
    md("Ann reconnected with `?after=<last id>`: the server replayed everything newer, and the client dropped duplicates by id."),
    code("""
user_messages = []
async with asyncio.timeout(5):
    while len(user_messages) < 2:
        event = await ann.next_event("message")
        if event["is_user"]:
            user_messages.append(event["message"])
print(sorted(user_messages))
print("state:", ann.state.state, "| connections:", ann.connections)
"""),
    md("The database holds each message once:"),
    code("""
rows = [m.content for m in await server.store.history("room", limit=100) if m.is_user]
print(rows)
assert len(rows) == len(set(rows)) == 3
await ann.close()
"""),
    md("""
## 4. The thundering herd

When a server restarts, **every** client reconnects. With a fixed delay they all come back at the same
instant, again and again, while the server is busy starting. Exponential backoff spreads retries out over
time; jitter spreads clients apart. We simulate 200 clients that lose the server at t = 0 while it is down
for 10 s, using chatkit's real policy classes (seeded, so the plot is reproducible).
"""),
    code("""
import random
from chatkit.client import ExponentialBackoff

def attempt_times(policy_for, clients=200, down_for=10.0, seed=1):
    rng = random.Random(seed)
    times = []
    for _ in range(clients):
        t, attempt, policy = rng.uniform(0, 0.05), 0, policy_for(rng)
        while True:
            attempt += 1
            t += policy.delay(attempt)
            times.append(t)
            if t >= down_for:
                break
    return times

fixed = attempt_times(lambda rng: FixedDelay(3.0))
backoff = attempt_times(lambda rng: ExponentialBackoff(rng=rng))
peak = lambda ts: max(sum(1 for t in ts if b / 10 <= t < (b + 1) / 10) for b in range(200))
print("peak attempts per 100 ms — fixed 3 s:", peak(fixed), "| backoff + jitter:", peak(backoff))
assert peak(backoff) < peak(fixed) / 3
"""),
    code("""
# NBVAL_IGNORE_OUTPUT
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(8, 3))
bins = [i / 10 for i in range(0, 200)]
ax.hist(fixed, bins=bins, alpha=0.7, label="fixed 3 s (the seed)")
ax.hist(backoff, bins=bins, alpha=0.7, label="exponential backoff + jitter")
ax.axvline(10, color="black", linestyle=":", label="server back")
ax.set_xlabel("seconds after the crash"); ax.set_ylabel("attempts per 100 ms"); ax.legend()
plt.show()
"""),
    md("`benchmarks/reconnect.py` does the same with 200 real clients and a real restart, and reports the peak the server sees."),
    code("""
await server.stop()
print("stopped")
"""),
    md("""
## Summary

- Observable state (`connecting`/`open`/`reconnecting`/`closed`, attempt, delay) makes a status line honest.
- Resume by id + an outbox with `client_id` + deduplication by id = exactly-once delivery to the application.
- Backoff with jitter turns a synchronized stampede into a trickle.

## Try it

Solutions: [solutions/05_reconnection_solutions.ipynb](solutions/05_reconnection_solutions.ipynb).

**1 (easy).** `dedup(frames)`: drop frames whose `id` was already seen.
"""),
    code("""
from chatkit import exercises

def dedup(frames: list[dict]) -> list[dict]:
    raise NotImplementedError

exercises.check_dedup(dedup)
"""),
    md("**2 (medium).** `cursor(last_seen, streaming)`: the `?after=` to reconnect with when some replies were still streaming."),
    code("""
def cursor(last_seen: int, streaming: set[int]) -> int:
    raise NotImplementedError

exercises.check_cursor(cursor)
"""),
    md("**3 (harder).** Write a backoff `delay(attempt, rng)`: 1 s doubling, capped at 30 s, with jitter between 50 % and 100 %."),
    code("""
import random

def delay(attempt: int, rng: random.Random) -> float:
    raise NotImplementedError

exercises.check_backoff(delay)
"""),
    md("**Next:** [06 · WebSocket vs SSE](06_ws_vs_sse.ipynb)."),
]

# ---------------------------------------------------------------------------
NOTEBOOKS["06_ws_vs_sse"] = [
    md("""
# 06 · WebSocket vs Server-Sent Events

**Learning objectives** — after this notebook you can:
1. join one room over both transports and see the same messages with the same ids,
2. read the raw bytes of an event stream and resume it with `Last-Event-ID`,
3. compare the transports with measurements, and recognize that every LLM API streams over SSE,
4. choose a transport for a given product.

**Prerequisites:** [05 · Reconnection](05_reconnection.ipynb). About 25 minutes.

The seed document asks: *WebSocket vs Server-Sent Events — what is the difference?* Let us measure.
"""),
    code("""
import asyncio, json
from chatkit import ChatServer
from chatkit.client import ChatClient
from chatkit.sse import SSEClient

server = await ChatServer(port=0, http_port=0, db=":memory:", llm="echo").start()
print("WebSocket:", server.ws_url("both"))
print("SSE:      ", server.http_url + "sse/chat/both/")
"""),
    md("""
## 1. One room, two transports

Ann uses a WebSocket. Sam uses SSE: a long `GET` for what the room says, a `POST` for what he says.
"""),
    code("""
sam = SSEClient(server.http_url, "both", user="sam")
sam_events = []

async def follow():
    async for event in sam.events():
        sam_events.append(event)

follower = asyncio.create_task(follow())
await asyncio.sleep(0.2)
ann_events = []
async with ChatClient(server.ws_url("both"), user="ann") as ann:
    ann.on_event(ann_events.append)
    await ann.send("hello from a WebSocket")
    await ann.next_event("ai_complete")
    await sam.post("hello from SSE")
    await ann.next_event("ai_complete")
    await asyncio.sleep(0.2)
key = lambda events: [(e["type"], e["id"]) for e in events if e["type"] in ("message", "ai_complete")]
print("over SSE:      ", key(sam_events))
print("same over both:", key(sam_events) == key(ann_events))
"""),
    md("## 2. Raw bytes of an event stream\n\nAn SSE response is plain text over HTTP: `event:`, `id:`, `data:` lines and a blank line per event."),
    code("""
reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
writer.write(b"GET /sse/chat/both/?user=raw HTTP/1.1\\r\\nHost: x\\r\\nLast-Event-ID: 2\\r\\n\\r\\n")
head = (await reader.readuntil(b"\\r\\n\\r\\n")).decode()
print(head.split("\\r\\n")[0])
print([h for h in head.split("\\r\\n") if h.startswith(("Content-Type", "Cache-Control"))])
"""),
    md("""
We sent `Last-Event-ID: 2`, as a browser's `EventSource` does after a drop: the server replays every stored
message after id 2 before live events. (The body is chunked; we read a few chunks and show the events.)
"""),
    code("""
body = b""
async with asyncio.timeout(3):
    while body.count(b"event: message") < 2:
        size = int((await reader.readline()).strip(), 16)
        body += await reader.readexactly(size + 2)
writer.close()
text = body.replace(b"\\r\\n", b"").decode()
for block in text.split("\\n\\n")[:4]:
    print(block.replace('"timestamp"', '"ts"')[:110], end="\\n\\n")
"""),
    md("""
## 3. Measured

`benchmarks/ws_vs_sse.py` delivers the same conversation over both transports in one run: latency per chunk,
chunks per second, bytes on the wire per chunk (with and without `permessage-deflate` for WebSocket), time to
first event and catch-up time after a drop. Its JSON result is committed; run it yourself with
`python benchmarks/ws_vs_sse.py`.
"""),
    code("""
# NBVAL_IGNORE_OUTPUT
from pathlib import Path
result_file = Path("../benchmarks/results/ws_vs_sse.json")
results = json.loads(result_file.read_text()) if result_file.exists() else None
if results:
    rows = results["rows"]
    cols = ["transport", "p50_ms", "p99_ms", "chunks_per_s", "bytes_per_chunk", "first_event_ms", "catch_up_ms"]
    print(" | ".join(f"{c:>15}" for c in cols))
    for r in rows:
        print(" | ".join(f"{r[c]:>15}" if isinstance(r[c], str) else f"{r[c]:>15.2f}" for c in cols))
"""),
    code("""
# NBVAL_IGNORE_OUTPUT
import matplotlib.pyplot as plt
if results:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3))
    names = [r["transport"] for r in rows]
    axes[0].bar(names, [r["bytes_per_chunk"] for r in rows]); axes[0].set_title("bytes on the wire per chunk")
    axes[1].bar(names, [r["p50_ms"] for r in rows]); axes[1].set_title("latency per chunk, p50 (ms)")
    for ax in axes: ax.tick_params(axis="x", rotation=20)
    plt.tight_layout(); plt.show()
"""),
    md("""
## 4. Every LLM API is SSE

The OpenAI chat API streams `chat.completion.chunk` objects as SSE `data:` lines, ending with `data: [DONE]`.
chatkit's `/v1/chat/completions` does the same, so here are the raw bytes of the tutor behind that API:
"""),
    code("""
import httpx
async with httpx.AsyncClient(trust_env=False) as http:
    async with http.stream("POST", server.http_url + "v1/chat/completions", json={
            "model": "m", "stream": True, "messages": [{"role": "user", "content": "hi there"}]}) as r:
        lines = [line async for line in r.aiter_lines() if line]
chunk = json.loads(lines[1][len("data: "):])
print(chunk["object"], chunk["choices"][0]["delta"])
print(lines[-1])
"""),
    code("""
follower.cancel()
await sam.aclose()
await server.stop()
print("stopped")
"""),
    md("""
## When to choose which

| | WebSocket | SSE |
|---|---|---|
| direction | both ways on one connection | server → client; client sends with `POST` |
| reconnect + resume | your code (notebook 05) | built into `EventSource` with `Last-Event-ID` |
| data | text and binary | text |
| infrastructure | needs Upgrade support end to end | plain HTTP: proxies, caches, auth, `curl -N` |
| best for | chat, games, collaboration | notifications, feeds, **LLM token streams** |

## Summary

- One hub, two transports: the same frames, the same ids.
- SSE resume is a header; WebSocket resume is a query parameter and some client code.
- Measure before you choose.

## Try it

Solutions: [solutions/06_ws_vs_sse_solutions.ipynb](solutions/06_ws_vs_sse_solutions.ipynb).

**1 (easy).** `encode(data, event=None, id=None)` → one SSE event.
"""),
    code("""
from chatkit import exercises

def encode(data: str, event: str | None = None, id: int | None = None) -> str:
    raise NotImplementedError

exercises.check_sse_encoder(encode)
"""),
    md("**2 (medium).** `choose(needs)` → `\"websocket\"` or `\"sse\"`."),
    code("""
def choose(needs: dict) -> str:
    raise NotImplementedError

exercises.check_choose(choose)
"""),
    md("**3 (harder).** Parse an event stream by hand, by the WHATWG rules (comments, multi-line data, ids that carry over)."),
    code("""
def parse(text: str) -> list[dict]:
    raise NotImplementedError

exercises.check_sse_parser(parse)
"""),
    md("**The end** — back to [00 · Start here](00_start_here.ipynb), or run `chatkit serve` and open the chat page in a browser."),
]


# ---------------------------------------------------------------------------
# Solutions: every exercise solved, run through the same checkers.

SOLUTIONS: dict[str, list[str]] = {
    "00_start_here": [
        """
from chatkit import exercises

def room_url(host: str, port: int, room: str) -> str:
    return f"ws://{host}:{port}/ws/chat/{room}/"

assert exercises.check_room_url(room_url)
""",
        """
def choose(environ: dict) -> str:
    return "openai" if environ.get("OPENAI_API_KEY") or environ.get("OPENAI_BASE_URL") else "offline"

assert exercises.check_backend_choice(choose)
""",
        """
def collect(frames: list[dict]) -> str:
    return "".join(f["chunk"] for f in frames if f.get("type") == "ai_chunk")

assert exercises.check_collect_reply(collect)
""",
    ],
    "01_handshake": [
        """
import base64, hashlib
from chatkit import exercises

def accept_key(key: str) -> str:
    guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
    return base64.b64encode(hashlib.sha1((key + guid).encode()).digest()).decode()

assert exercises.check_accept_key(accept_key)
""",
        """
def parse_header(data: bytes) -> dict:
    fin, opcode = bool(data[0] & 0x80), data[0] & 0x0F
    masked, length = bool(data[1] & 0x80), data[1] & 0x7F
    if length == 126:
        length = int.from_bytes(data[2:4], "big")
    elif length == 127:
        length = int.from_bytes(data[2:10], "big")
    return {"fin": fin, "opcode": opcode, "masked": masked, "length": length}

assert exercises.check_frame_header(parse_header)
""",
        """
def mask(payload: bytes, key: bytes) -> bytes:
    return bytes(b ^ key[i % 4] for i, b in enumerate(payload))

assert exercises.check_mask(mask)
""",
    ],
    "02_chat_server": [
        """
import json, re
from chatkit import exercises

def make_frame(text: str, client_id: str | None = None) -> str:
    frame = {"message": text}
    if client_id is not None:
        frame["client_id"] = client_id
    return json.dumps(frame, ensure_ascii=False)

assert exercises.check_message_frame(make_frame)
""",
        """
def is_valid_room(name: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name) is not None

assert exercises.check_room_names(is_valid_room)
""",
        """
def decode_reaction(raw: str) -> dict:
    try:
        obj = json.loads(raw)
    except ValueError:
        raise ValueError("not JSON") from None
    if not isinstance(obj, dict) or obj.get("type") != "reaction":
        raise ValueError("not a reaction frame")
    message_id = obj.get("messageId", obj.get("message_id"))
    if not isinstance(message_id, int) or isinstance(message_id, bool) or message_id <= 0:
        raise ValueError("messageId must be a positive integer")
    emoji = obj.get("emoji")
    if not isinstance(emoji, str) or not 1 <= len(emoji) <= 8:
        raise ValueError("emoji must be 1 to 8 characters")
    return {"message_id": message_id, "emoji": emoji}

assert exercises.check_reaction(decode_reaction)
""",
    ],
    "03_streaming": [
        """
from chatkit import exercises

def ttft(sent_at: float, chunk_times: list[float]) -> float:
    return chunk_times[0] - sent_at

assert exercises.check_ttft(ttft)
""",
        """
def rate(chunk_times: list[float]) -> float:
    if len(chunk_times) < 2:
        return 0.0
    return (len(chunk_times) - 1) / (chunk_times[-1] - chunk_times[0])

assert exercises.check_rate(rate)
""",
        """
async def take(stream, n: int) -> list[str]:
    out = []
    try:
        async for piece in stream:
            out.append(piece)
            if len(out) == n:
                break
    finally:
        await stream.aclose()
    return out

assert await exercises.check_take(take)
""",
    ],
    "04_chat_panes": [
        """
import html
from chatkit import exercises

def render(user: str, text: str) -> str:
    return f"<b>{html.escape(user)}</b>: {html.escape(text)}"

assert exercises.check_escape(render)
""",
        """
def typing_line(users: list[str]) -> str:
    if not users:
        return ""
    if len(users) == 1:
        return f"{users[0]} is typing…"
    if len(users) == 2:
        return f"{users[0]} and {users[1]} are typing…"
    return f"{len(users)} people are typing…"

assert exercises.check_typing_line(typing_line)
""",
        """
class Debouncer:
    def __init__(self, interval: float, idle: float):
        self.interval, self.idle = interval, idle
        self.last_sent = None   # when typing: true was last sent
        self.last_key = None    # when the last keystroke happened

    def keystroke(self, now: float) -> list[bool]:
        self.last_key = now
        if self.last_sent is None or now - self.last_sent >= self.interval:
            self.last_sent = now
            return [True]
        return []

    def poll(self, now: float) -> list[bool]:
        if self.last_key is not None and now - self.last_key >= self.idle:
            self.last_key = self.last_sent = None
            return [False]
        return []

assert exercises.check_debouncer(Debouncer)
""",
    ],
    "05_reconnection": [
        """
from chatkit import exercises

def dedup(frames: list[dict]) -> list[dict]:
    seen, out = set(), []
    for frame in frames:
        if "id" in frame:
            if frame["id"] in seen:
                continue
            seen.add(frame["id"])
        out.append(frame)
    return out

assert exercises.check_dedup(dedup)
""",
        """
def cursor(last_seen: int, streaming: set[int]) -> int:
    return min(streaming) - 1 if streaming else last_seen

assert exercises.check_cursor(cursor)
""",
        """
import random

def delay(attempt: int, rng: random.Random) -> float:
    base = min(30.0, 2.0 ** (attempt - 1))
    return base * rng.uniform(0.5, 1.0)

assert exercises.check_backoff(delay)
""",
    ],
    "06_ws_vs_sse": [
        """
from chatkit import exercises

def encode(data: str, event: str | None = None, id: int | None = None) -> str:
    lines = []
    if event is not None:
        lines.append(f"event: {event}")
    if id is not None:
        lines.append(f"id: {id}")
    lines += [f"data: {line}" for line in data.split("\\n")]
    return "\\n".join(lines) + "\\n\\n"

assert exercises.check_sse_encoder(encode)
""",
        """
def choose(needs: dict) -> str:
    if needs["binary"] or needs["client_sends_often"]:
        return "websocket"
    return "sse"

assert exercises.check_choose(choose)
""",
        """
def parse(text: str) -> list[dict]:
    events, data, kind, last_id = [], [], "", None
    for line in text.replace("\\r\\n", "\\n").replace("\\r", "\\n").split("\\n"):
        if line == "":
            if data:
                events.append({"event": kind or "message", "data": "\\n".join(data), "id": last_id})
            data, kind = [], ""
        elif not line.startswith(":"):
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "data":
                data.append(value)
            elif field == "event":
                kind = value
            elif field == "id":
                last_id = value
    return events

assert exercises.check_sse_parser(parse)
""",
    ],
}


def solution_notebook(name: str, cells: list[str]) -> nbformat.NotebookNode:
    title = name.split("_", 1)[1].replace("_", " ")
    out = [md(f"# Solutions · {name[:2]} {title}\n\nEach cell solves one exercise of "
              f"[{name}](../{name}.ipynb) and runs it through the same checker. Try first!")]
    for i, src in enumerate(cells, 1):
        out.append(md(f"**Exercise {i}.**"))
        out.append(code(src))
    return nbformat.v4.new_notebook(cells=out)


def write(path: Path, nb: nbformat.NotebookNode) -> None:
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.write(nb, path)


def execute(path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", "--inplace",
         "--ExecutePreprocessor.timeout=120", str(path)],
        check=True, cwd=path.parent,
    )


def main(prefixes: list[str]) -> None:
    targets = []
    for name, cells in NOTEBOOKS.items():
        if prefixes and not any(name.startswith(p) for p in prefixes):
            continue
        path = ROOT / f"{name}.ipynb"
        write(path, nbformat.v4.new_notebook(cells=cells))
        targets.append(path)
        sol = ROOT / "solutions" / f"{name}_solutions.ipynb"
        write(sol, solution_notebook(name, SOLUTIONS[name]))
        targets.append(sol)
    for path in targets:
        print("executing", path.relative_to(ROOT.parent), flush=True)
        execute(path)


if __name__ == "__main__":
    main(sys.argv[1:])
