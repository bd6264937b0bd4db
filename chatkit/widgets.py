"""ChatPane: the seed's React ``ChatInterface`` as an ipywidgets pane in a notebook.

Model and view are separate. :class:`ChatModel` (``traitlets.HasTraits``)
holds the conversation — messages, replies streaming, who is online and
typing, read receipts, the connection state — and changes only through
:meth:`ChatModel.apply`, fed by a :class:`~chatkit.client.ChatClient`; tests
drive it without a browser. :class:`ChatPane` renders it with ``HTML``
widgets at most ~20 times a second however fast chunks arrive, and only a
window of recent messages. Message text is Markdown, rendered and sanitized by
:func:`chatkit.render.render_markdown` (raw HTML in a message is shown as
text); every other piece of user text is escaped. A message's file shows as its
thumbnail (fetched by the kernel and embedded, so it shows wherever the notebook
does), an audio player, or a download link. The interface draws its
status dot and avatars with CSS and inline SVG, so it needs no emoji font.

Everything runs on the kernel's own event loop: the client's task sets traits,
timers are loop handles, and :meth:`ChatPane.close` stops them all.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import html
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import ipywidgets as widgets
import traitlets

from . import i18n
from ._textbox import ChatInput
from .client import ChatClient, FileSource, ReconnectPolicy
from .errors import ClientError
from .protocol import apply_presence, session_id_to_path
from .render import PYGMENTS_CSS, render_markdown

if TYPE_CHECKING:  # pragma: no cover
    from .server import ChatServer

__all__ = ["ChatModel", "ChatPane", "side_by_side", "LABELS", "CSS", "AVATAR_USER", "AVATAR_AI"]

LABELS = {
    "en": {
        "connected": "Connected",
        "disconnected": "Disconnected",
        "connecting": "Connecting…",
        "reconnecting": "Reconnecting in {seconds} s (attempt {attempt})",
        "placeholder": "Type a message...",
        "send": "Send",
        "stop": "Stop",
        "older": "Load older messages",
        "typing_one": "{users} is typing…",
        "typing_many": "{users} are typing…",
        "online": "Online",
        "read_by": "read by {users}",
        "sent": "sent",
        "not_sent": "⚠ not sent ({code}): {text}",
        "status_streaming": "streaming",
        "status_cancelled": "cancelled",
        "status_error": "error",
        "status_interrupted": "interrupted",
        "react": "react {emoji} to the newest message",
        "file": "file",
    },
    "ko": {
        "connected": "연결됨",
        "disconnected": "연결 안됨",
        "connecting": "연결 중…",
        "reconnecting": "{seconds}초 후 재연결 (시도 {attempt}회)",
        "placeholder": "메시지를 입력하세요...",
        "send": "전송",
        "stop": "중지",
        "older": "이전 메시지 불러오기",
        "typing_one": "{users}님이 입력 중…",
        "typing_many": "{users}님이 입력 중…",
        "online": "접속 중",
        "read_by": "{users} 읽음",
        "sent": "보냄",
        "not_sent": "⚠ 전송되지 않음 ({code}): {text}",
        "status_streaming": "스트리밍 중",
        "status_cancelled": "취소됨",
        "status_error": "오류",
        "status_interrupted": "중단됨",
        "react": "가장 최근 메시지에 {emoji} 반응 달기",
        "file": "파일",
    },
}

# The seed's ChatInterface.css, scoped to the pane; status dot and avatars drawn without emoji.
CSS = (
    """
<style>
.chatkit-pane .status { padding: 6px 10px; background: #f0f0f0; text-align: center; font-size: 13px; }
.chatkit-pane .status .dot { display: inline-block; width: 10px; height: 10px; border-radius: 50%; margin-right: 6px; vertical-align: middle; background: #dc3545; }
.chatkit-pane .status[data-state="open"] .dot { background: #28a745; }
.chatkit-pane .status[data-state="connecting"] .dot { background: #ffc107; }
.chatkit-pane .online { padding: 2px 10px; color: #555; font-size: 12px; }
.chatkit-pane .messages { padding: 10px; }
.chatkit-pane .message { display: flex; margin-bottom: 12px; }
.chatkit-pane .message.new { animation: ck-slideIn 0.3s ease; }
@keyframes ck-slideIn { from { opacity: 0; transform: translateY(10px); } to { opacity: 1; transform: translateY(0); } }
.chatkit-pane .message.user { flex-direction: row-reverse; }
.chatkit-pane .message .avatar { flex: none; width: 28px; height: 28px; margin: 0 8px; }
.chatkit-pane .message .avatar svg { width: 28px; height: 28px; display: block; }
.chatkit-pane .message .content { max-width: 70%; padding: 8px 13px; border-radius: 15px; background: #e0e0e0; word-wrap: break-word; }
.chatkit-pane .ck-md { white-space: normal; }
.chatkit-pane .ck-md > :first-child { margin-top: 0; }
.chatkit-pane .ck-md > :last-child { margin-bottom: 0; }
.chatkit-pane .ck-md p, .chatkit-pane .ck-md ul, .chatkit-pane .ck-md ol, .chatkit-pane .ck-md pre { margin: 0 0 6px; }
.chatkit-pane .ck-md pre { white-space: pre; overflow-x: auto; padding: 6px 8px; border-radius: 6px; background: #f8f8f8; color: #1f2328; }
.chatkit-pane .ck-md code { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 90%; }
.chatkit-pane .ck-md :not(pre) > code { background: rgba(0,0,0,0.08); padding: 0 3px; border-radius: 3px; }
.chatkit-pane .message.user .ck-md a { color: inherit; text-decoration: underline; }
.chatkit-pane .ck-md table { border-collapse: collapse; }
.chatkit-pane .ck-md th, .chatkit-pane .ck-md td { border: 1px solid #ccc; padding: 2px 6px; }
.chatkit-pane .message.user .content { background: #007bff; color: white; }
.chatkit-pane .message .meta { font-size: 11px; opacity: 0.75; margin-bottom: 2px; }
.chatkit-pane .reactions { margin-top: 4px; display: flex; flex-wrap: wrap; gap: 4px; }
.chatkit-pane .reactions .chip { background: rgba(255,255,255,0.85); color: #333; border: 1px solid #ccc; border-radius: 10px; padding: 0 6px; font-size: 12px; }
.chatkit-pane .reactions .chip.mine { border-color: #007bff; background: #e7f1ff; }
.chatkit-pane .message .receipt { font-size: 11px; opacity: 0.8; text-align: right; }
.chatkit-pane .message.ai.streaming .cursor { animation: ck-blink 1s infinite; }
@keyframes ck-blink { 0%, 50% { opacity: 1; } 51%, 100% { opacity: 0; } }
.chatkit-pane .typing { color: #777; font-style: italic; font-size: 12px; padding: 0 10px; min-height: 16px; }
.chatkit-pane .error { color: #b00020; font-size: 12px; padding: 0 10px; }
.chatkit-pane .attachment { margin-top: 4px; }
.chatkit-pane .attachment img { display: block; max-width: 100%; height: auto; border-radius: 8px; }
.chatkit-pane .attachment audio { display: block; max-width: 100%; }
.chatkit-pane .attachment .file { font-size: 12px; }
.chatkit-pane .message.user .attachment a { color: inherit; }
"""
    + PYGMENTS_CSS.replace(".ck-md", ".chatkit-pane .ck-md")
    + """
</style>
"""
)

QUICK_REACTIONS = ("👍", "❤️", "😂", "🎉", "😮", "😢")
"""The pane's reaction buttons (they react to the newest message from someone else)."""

# Avatars as inline SVG: a person for users, a robot for the AI (no emoji font needed).
AVATAR_USER = (
    '<svg class="ck-avatar-user" viewBox="0 0 32 32" role="img" aria-label="user">'
    '<circle cx="16" cy="16" r="16" fill="#007bff"/><circle cx="16" cy="12" r="6" fill="#fff"/>'
    '<path d="M6 27c1.5-6 6-8 10-8s8.5 2 10 8" fill="#fff"/></svg>'
)
AVATAR_AI = (
    '<svg class="ck-avatar-ai" viewBox="0 0 32 32" role="img" aria-label="AI">'
    '<circle cx="16" cy="16" r="16" fill="#6f42c1"/><rect x="8" y="10" width="16" height="13" rx="3" fill="#fff"/>'
    '<circle cx="12.5" cy="16" r="2" fill="#6f42c1"/><circle cx="19.5" cy="16" r="2" fill="#6f42c1"/>'
    '<rect x="15" y="5" width="2" height="5" fill="#fff"/><circle cx="16" cy="5" r="2" fill="#fff"/></svg>'
)

_esc = html.escape


class ChatModel(traitlets.HasTraits):
    """The conversation state of one pane. Change it only with :meth:`apply`."""

    user = traitlets.Unicode("")
    messages: traitlets.List[dict] = traitlets.List()
    """Finished messages in id order: dicts with id, user, is_user, text, timestamp, status."""
    streaming = traitlets.Dict()
    """Replies in progress: reply id → text so far."""
    online: traitlets.List[str] = traitlets.List()
    online_count = traitlets.Int(0)
    """Users online in the room; more than ``online`` lists in a big room (batched presence)."""
    typing: traitlets.List[str] = traitlets.List()
    reactions = traitlets.Dict()
    """message id (str) → its reactions: ``[{"emoji", "count", "users"}]``."""
    receipts = traitlets.Dict()
    """message id → users who read it."""
    thumbs = traitlets.Dict()
    """file id → its thumbnail as a ``data:`` URL, once the pane has fetched it."""
    state = traitlets.Unicode("closed")
    attempt = traitlets.Int(0)
    delay = traitlets.Float(None, allow_none=True)
    error = traitlets.Unicode("")
    error_code = traitlets.Unicode("")
    has_more = traitlets.Bool(True)

    def __init__(self, user: str = "", **kwargs: Any) -> None:
        super().__init__(user=user, **kwargs)
        self._ids: set[int] = set()
        self._deleted: set[int] = set()

    def _insert(self, entry: dict[str, Any]) -> None:
        if entry["id"] in self._ids or entry["id"] in self._deleted:
            return
        self._ids.add(entry["id"])
        ids = [m["id"] for m in self.messages]
        messages = list(self.messages)
        messages.insert(bisect.bisect(ids, entry["id"]), entry)
        self.messages = messages

    @staticmethod
    def _entry(frame: dict[str, Any], *, is_user: bool | None = None) -> dict[str, Any]:
        return {
            "id": frame["id"],
            "user": frame.get("user") or "AI",
            "is_user": frame.get("is_user", False) if is_user is None else is_user,
            "text": frame.get("message", ""),
            "timestamp": frame.get("timestamp", ""),
            "status": frame.get("status", "complete"),
            "attachment": frame.get("attachment"),
        }

    def apply(self, event: dict[str, Any]) -> None:
        """Update the state from one client event (a server frame or a state event)."""
        kind = event.get("type")
        if kind == "state":
            self.state, self.attempt, self.delay = event["state"], event["attempt"], event["delay"]
        elif kind == "connection":
            self.online = list(event.get("online", []))
            count = event.get("online_count")
            self.online_count = count if isinstance(count, int) and count >= 0 else len(self.online)
            self.error = ""
        elif kind == "message":
            if event.get("deleted"):  # a tombstone (replay, history): nothing to show
                self._deleted.add(event["id"])
            else:
                self._insert(self._entry(event))
        elif kind == "ai_chunk":
            streaming = dict(self.streaming)
            streaming[event["id"]] = streaming.get(event["id"], "") + event.get("chunk", "")
            self.streaming = streaming
        elif kind == "ai_complete":
            streaming = dict(self.streaming)
            streaming.pop(event["id"], None)
            self._insert(self._entry(event, is_user=False))
            self.streaming = streaming
        elif kind == "typing":
            typing = [u for u in self.typing if u != event["user"]]
            if event.get("is_typing") and event["user"] != self.user:
                typing.append(event["user"])
            self.typing = sorted(typing)
        elif kind == "user_join":
            if event.get("username") not in self.online:
                self.online = sorted([*self.online, event.get("username", "")])
                self.online_count += 1
        elif kind == "user_leave":
            if event.get("username") in self.online or self.online_count > len(self.online):
                self.online_count -= 1
            self.online = [u for u in self.online if u != event.get("username")]
            self.typing = [u for u in self.typing if u != event.get("username")]
        elif kind == "presence":  # ?presence=batch (ChatClient asks for it): a tick's joins and leaves
            self.online = apply_presence(self.online, event)
            count = event.get("count")
            self.online_count = count if isinstance(count, int) and count >= 0 else len(self.online)
            left = set(event.get("left") or ())
            self.typing = [u for u in self.typing if u not in left]
        elif kind == "read_receipt":
            key = str(event["message_id"])
            readers = list(self.receipts.get(key, []))
            if event["user"] not in readers:
                readers.append(event["user"])
                self.receipts = {**self.receipts, key: readers}
        elif kind == "message_deleted":  # a teacher deleted it: gone for everyone
            gone = event.get("message_id")
            self._deleted.add(gone)  # type: ignore[arg-type]
            if gone in self._ids:
                self._ids.discard(gone)
                self.messages = [m for m in self.messages if m["id"] != gone]
        elif kind == "reaction":  # always the message's full state: applying it twice is harmless
            self.reactions = {**self.reactions, str(event["message_id"]): list(event.get("reactions", []))}
        elif kind == "error":
            self.error = f"{event.get('code')}: {event.get('message')}"
            self.error_code = str(event.get("code") or "")

    def prepend_history(self, frames: list[dict[str, Any]], has_more: bool) -> int:
        """Add a page of older messages; returns how many were new."""
        before = len(self._ids)
        reactions = {str(f["id"]): f["reactions"] for f in frames if f.get("reactions")}
        if reactions:
            self.reactions = {**reactions, **self.reactions}  # live frames seen meanwhile are newer
        for frame in frames:
            if not frame.get("deleted"):
                self._insert(self._entry(frame))
        self.has_more = has_more
        return len(self._ids) - before


class ChatPane(widgets.VBox):
    """A live chat pane: ``pane = ChatPane(server, "demo", user="ann"); await pane.start()``.

    ``url_or_server`` is a :class:`~chatkit.server.ChatServer` or a WebSocket
    base URL (``ws://127.0.0.1:8765/``). ``window`` is how many recent messages
    are rendered (``Load older`` extends it 20 at a time). ``lang`` (``"en"`` or
    ``"ko"``) defaults to :func:`chatkit.i18n.get_language`; times are formatted for it by Babel.
    """

    def __init__(
        self,
        url_or_server: str | ChatServer,
        room: str,
        *,
        user: str,
        lang: str | None = None,
        policy: ReconnectPolicy | None = None,
        window: int = 100,
        max_fps: float = 20.0,
        typing_debounce: float = 0.5,
        typing_idle: float = 3.0,
        token: str | None = None,
        ssl: Any = None,
    ) -> None:
        # token: sign-in (the name is then the token's; ``user`` only labels the pane).
        # ssl: an ``ssl.SSLContext`` trusting the server's CA, for wss:// and https:// (a private CA).
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        self._verify = ssl if ssl is not None else True
        http_url = None
        if isinstance(url_or_server, str):
            base = url_or_server.rstrip("/")
            ws_url = f"{base}/ws/chat/{session_id_to_path(room)}/"
        else:
            ws_url = url_or_server.ws_url(room)
            http_url = url_or_server.http_url
        self.room = room
        self.lang = i18n.get_language() if lang is None else (i18n.normalize_language(lang) or lang)
        self.labels = LABELS[self.lang]
        self.model = ChatModel(user=user)
        self.client = ChatClient(
            ws_url,
            user=None if token else user,
            policy=policy,
            token=token,
            http_url=http_url,
            **({"ssl": ssl} if ssl is not None else {}),
        )
        parts = urlsplit(ws_url)
        scheme = "https" if parts.scheme == "wss" else "http"
        self._history_url = urlunsplit(
            (scheme, parts.netloc, f"/api/chat/{session_id_to_path(room)}/messages", "", "")
        )
        self.window = window
        self._min_interval = 1.0 / max_fps
        self._typing_debounce = typing_debounce
        self._typing_idle = typing_idle
        self._dirty: set[str] = set()
        self._render_handle: asyncio.TimerHandle | None = None
        self._last_render = 0.0
        self._tick_handle: asyncio.TimerHandle | None = None
        self._typing_handle: asyncio.TimerHandle | None = None
        self._last_typing_sent = 0.0
        self._is_typing = False
        self._tasks: set[asyncio.Task] = set()
        self._read_sent: set[int] = set()
        self._unread: list[int] = []
        self.displayed = False
        """True once a cell output showed the pane: only then does it send read receipts (they mean *read*)."""
        self._reconnect_at: float | None = None
        self._shown_upto = 0
        self._fetching: set[str] = set()
        self.renders = 0
        """How many times the view was re-rendered (the throttling test counts them)."""

        self.status = widgets.HTML(layout=widgets.Layout(width="100%"))
        self.online_line = widgets.HTML()
        self.older = widgets.Button(description=self.labels["older"], layout=widgets.Layout(width="auto"))
        self.message_list = widgets.HTML()
        self.stream_view = widgets.HTML()
        self.typing_line = widgets.HTML()
        self.error_line = widgets.HTML()
        self.input = ChatInput(placeholder=self.labels["placeholder"], layout=widgets.Layout(flex="1"))
        self.send_button = widgets.Button(description=self.labels["send"], button_style="primary")
        self.stop_button = widgets.Button(
            description=self.labels["stop"], button_style="warning", layout=widgets.Layout(display="none")
        )
        self.reaction_buttons = [
            widgets.Button(
                description=e,
                tooltip=self.labels["react"].format(emoji=e),
                layout=widgets.Layout(width="auto", padding="0 6px"),
            )
            for e in QUICK_REACTIONS
        ]
        for button in self.reaction_buttons:
            button.on_click(lambda b: self.react(b.description))
        self.older.on_click(lambda _: self._spawn(self.load_older()))
        self.send_button.on_click(lambda _: self.submit())
        self.stop_button.on_click(lambda _: self._spawn(self.client.stop_reply()))
        self.input.on_msg(self._on_input_msg)
        self.input.observe(self._on_input_value, "value")
        box = widgets.VBox(
            [
                self.status,
                self.online_line,
                self.older,
                self.message_list,
                self.stream_view,
                self.typing_line,
                self.error_line,
                widgets.HBox(self.reaction_buttons),
                widgets.HBox([self.input, self.send_button, self.stop_button]),
            ],
            layout=widgets.Layout(border="1px solid #ddd", width="100%"),
        )
        box.add_class("chatkit-pane")
        super().__init__([widgets.HTML(CSS), box], layout=widgets.Layout(width="100%"))
        self.client.on_event(self._on_event)
        self.model.observe(self._on_model, names=["messages", "receipts", "reactions", "thumbs"])
        self.model.observe(lambda _: self._mark("stream"), names=["streaming"])
        self.model.observe(
            lambda _: self._mark("status"),
            names=["state", "attempt", "delay", "online", "online_count", "typing", "error", "has_more"],
        )
        self._render_now({"status", "log", "stream"})

    # -- life cycle ----------------------------------------------------------

    async def start(self, *, history: bool = True) -> ChatPane:
        """Connect (and show the last page of history); returns the pane for display."""
        await self.client.start()
        if history:
            await self.load_older()
        self.flush()
        return self

    def flush(self) -> None:
        """Render pending changes now instead of at the next frame (~50 ms)."""
        if self._render_handle is not None:
            self._render_handle.cancel()
        self._render_now(self._dirty | {"status", "log", "stream"})

    def close(self) -> None:
        """Stop the client, the timers and the tasks, and close the widgets."""
        self.client.abort()
        for handle in (self._render_handle, self._tick_handle, self._typing_handle):
            if handle is not None:
                handle.cancel()
        for task in list(self._tasks):
            task.cancel()
        super().close()

    async def aclose(self) -> None:
        """Like :meth:`close`, but waits until the connection and the tasks have ended."""
        tasks = list(self._tasks)
        self.close()
        await self.client.close()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> ChatPane:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- actions -------------------------------------------------------------

    def react(self, emoji: str, message_id: int | None = None) -> asyncio.Task | None:
        """Toggle this user's ``emoji`` on ``message_id`` (default: the newest message not
        this user's own); the same call again removes it."""
        if message_id is None:
            others = [m for m in self.model.messages if m["user"] != self.model.user]
            if not others:
                return None
            message_id = others[-1]["id"]
        return self._spawn(self.client.react(message_id, emoji))

    def submit(self, text: str | None = None) -> asyncio.Task | None:
        """Send the input's text (or ``text``) as the user; clears the input."""
        text = self.input.value if text is None else text
        if not text.strip() or self.model.state != "open":
            return None
        self.input.value = ""
        self._stop_typing()
        task = self._spawn(self.client.send(text))
        task.add_done_callback(lambda done: self._sent(done, text))
        return task

    def send_file(self, file: FileSource, *, name: str | None = None, text: str = "") -> asyncio.Task:
        """Upload ``file`` (bytes or a path) and send it with the caption ``text``; a refused file
        (too large, not a picture, sound or PDF) is shown as not sent."""
        task = self._spawn(self.client.send_file(file, name=name, text=text))
        shown = name or (self.labels["file"] if isinstance(file, bytes) else Path(file).name)
        task.add_done_callback(lambda done: self._sent(done, shown))
        return task

    def _sent(self, task: asyncio.Task, text: str) -> None:
        """A send ended: a refused or timed-out message is shown as not sent."""
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, ClientError):
            shown = text if len(text) <= 60 else text[:60] + "…"
            self.model.error = self.labels["not_sent"].format(code=exc.code, text=shown)

    async def load_older(self, limit: int = 20) -> int:
        """Fetch the page of history before the oldest message shown; returns how many."""
        oldest = self.model.messages[0]["id"] if self.model.messages else None
        params: dict[str, Any] = {"limit": limit}
        if oldest is not None:
            params["before"] = oldest
        async with httpx.AsyncClient(
            trust_env=False, timeout=10, headers=self._auth, verify=self._verify
        ) as http:
            response = await http.get(self._history_url, params=params)
        page = response.json()
        added = self.model.prepend_history(page["messages"], page["has_more"])
        self.window += added
        return added

    def _on_input_msg(self, _widget: Any, content: dict, _buffers: Any) -> None:
        if content.get("event") == "submit":  # Enter in the text box (not while composing)
            value = content.get("value")
            self.submit(value if isinstance(value, str) else None)
        elif content.get("event") == "typing":  # an IME is composing
            self.notify_typing()

    def _on_input_value(self, change: dict) -> None:
        if change["new"]:
            self.notify_typing()

    def notify_typing(self) -> None:
        """Debounced typing: at most one ``typing`` frame per 500 ms; ``false`` after 3 s idle."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if not self._is_typing or now - self._last_typing_sent >= self._typing_debounce:
            self._is_typing = True
            self._last_typing_sent = now
            self._spawn(self.client.typing(True))
        if self._typing_handle is not None:
            self._typing_handle.cancel()
        self._typing_handle = loop.call_later(self._typing_idle, self._stop_typing)

    def _stop_typing(self) -> None:
        if self._typing_handle is not None:
            self._typing_handle.cancel()
            self._typing_handle = None
        if self._is_typing:
            self._is_typing = False
            self._spawn(self.client.typing(False))

    # -- events → model → view -----------------------------------------------

    def _on_event(self, event: dict[str, Any]) -> None:
        self.model.apply(event)
        if event.get("type") == "state":
            self._reconnect_at = None
            if event["state"] == "reconnecting" and event["delay"] is not None:
                self._reconnect_at = time.monotonic() + event["delay"]
                self._schedule_tick()
        if (
            event.get("type") == "message"
            and event.get("is_user")
            and event.get("user") != self.model.user
            and event["id"] not in self._read_sent
        ):
            self._unread.append(event["id"])
            if self.displayed:
                self._send_receipts()

    def mark_displayed(self) -> None:
        """The pane is on screen: send read receipts for the messages it shows, and from now on as they arrive.

        Displaying the pane (or a :func:`side_by_side` row holding it) in a cell calls this; a pane that
        was never displayed has shown nothing to anyone, so it sends no receipts."""
        self.displayed = True
        self._send_receipts()

    def _send_receipts(self) -> None:
        unread, self._unread = self._unread, []
        for message_id in unread:
            if message_id not in self._read_sent:
                self._read_sent.add(message_id)
                self._spawn(self.client.mark_read(message_id))

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        self.mark_displayed()
        return super()._repr_mimebundle_(**kwargs)

    def _schedule_tick(self) -> None:
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        if self._reconnect_at is None:
            return

        def tick() -> None:
            self._mark("status")
            if self._reconnect_at is not None and self._reconnect_at > time.monotonic():
                self._tick_handle = asyncio.get_running_loop().call_later(1.0, tick)

        self._tick_handle = asyncio.get_running_loop().call_later(1.0, tick)

    def _on_model(self, change: dict) -> None:
        if change.get("name") == "messages":
            self._want_thumbnails()
        self._mark("log")

    @property
    def thumbs(self) -> dict[str, str]:
        """File id → thumbnail (a ``data:`` URL) of the pictures this pane has fetched."""
        return self.model.thumbs

    def _want_thumbnails(self) -> None:
        """Fetch the thumbnails of the pictures in view that the pane has not fetched yet."""
        for msg in self.model.messages[-self.window :]:
            attachment = msg.get("attachment") or {}
            file_id, thumb = str(attachment.get("id")), attachment.get("thumb")
            if thumb and file_id not in self.model.thumbs and file_id not in self._fetching:
                self._fetching.add(file_id)
                self._spawn(self._fetch_thumbnail(file_id, thumb))

    async def _fetch_thumbnail(self, file_id: str, path: str) -> None:
        try:
            async with self.client._http() as http:
                base = await self.client._http_base(http)
                response = await http.get(base.rstrip("/") + path)
            if response.status_code == 200 and response.headers.get("content-type", "").startswith("image/"):
                data = base64.b64encode(response.content).decode("ascii")
                url = f"data:{response.headers['content-type']};base64,{data}"
                self.model.thumbs = {**self.model.thumbs, file_id: url}
        except (httpx.HTTPError, ClientError, ValueError) as exc:  # shown as a link instead
            self.model.error = f"{self.labels['file']}: {exc}"
        finally:
            self._fetching.discard(file_id)

    def _mark(self, part: str) -> None:
        self._dirty.add(part)
        if self._render_handle is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # driven synchronously (no loop): render at once
            self._render_now()
            return
        wait = max(0.0, self._last_render + self._min_interval - loop.time())
        self._render_handle = loop.call_later(wait, self._render_now)

    def _render_now(self, parts: set[str] | None = None) -> None:
        self._render_handle = None
        parts = parts if parts is not None else self._dirty
        self._dirty = set()
        try:
            self._last_render = asyncio.get_running_loop().time()
        except RuntimeError:
            self._last_render = 0.0
        self.renders += 1
        if "status" in parts:
            self._render_status()
        if "log" in parts:
            self.message_list.value = self.render_messages()
        if "stream" in parts or "status" in parts:
            self.stream_view.value = self.render_streaming()
            self.stop_button.layout.display = None if self.model.streaming else "none"

    def _render_status(self) -> None:
        m, lab = self.model, self.labels
        if m.state == "open":
            text = lab["connected"]
        elif m.state == "reconnecting":
            remaining = m.delay or 0.0
            if self._reconnect_at is not None:
                remaining = max(0.0, self._reconnect_at - time.monotonic())
            text = lab["reconnecting"].format(seconds=f"{remaining:.0f}", attempt=m.attempt)
        elif m.state == "connecting":
            text = lab["connecting"]
        else:
            text = lab["disconnected"]
        self.status.value = (
            f'<div class="status" data-state="{_esc(m.state)}"><span class="dot"></span>{_esc(text)}</div>'
        )
        more = f" +{m.online_count - len(m.online)}" if m.online_count > len(m.online) else ""
        self.online_line.value = (
            f'<div class="online">{_esc(lab["online"])}: {_esc(", ".join(m.online))}{more}</div>'
            if m.online
            else ""
        )
        if m.typing:
            key = "typing_one" if len(m.typing) == 1 else "typing_many"
            self.typing_line.value = (
                f'<div class="typing">{_esc(lab[key].format(users=", ".join(m.typing)))}</div>'
            )
        else:
            self.typing_line.value = '<div class="typing"></div>'
        error = (
            i18n.error_text(m.error_code, m.error.partition(": ")[2], self.lang) if m.error_code else m.error
        )
        self.error_line.value = f'<div class="error">{_esc(error)}</div>' if m.error else ""
        online = m.state == "open"
        self.input.disabled = not online
        self.send_button.disabled = not online
        self.older.layout.display = None if m.has_more else "none"

    def render_messages(self) -> str:
        """The message list as HTML (the last ``window`` messages): Markdown rendered and sanitized."""
        me = self.model.user
        rows = []
        # The list is re-rendered as a whole: only messages new since the last render slide in.
        seen_upto, self._shown_upto = (
            self._shown_upto,
            max([self._shown_upto] + [m["id"] for m in self.model.messages[-1:]]),
        )
        for msg in self.model.messages[-self.window :]:
            cls = "user" if msg["is_user"] else "ai"
            if msg["id"] > seen_upto:
                cls += " new"
            avatar = AVATAR_USER if msg["is_user"] else AVATAR_AI
            when = i18n.format_time(msg["timestamp"], self.lang)
            receipt = ""
            if msg["is_user"] and msg["user"] == me:
                readers = [u for u in self.model.receipts.get(str(msg["id"]), []) if u != me]
                if readers:
                    who = self.labels["read_by"].format(users=", ".join(readers))
                    receipt = f'<div class="receipt" title="{_esc(who)}">✓✓ {_esc(who)}</div>'
                else:
                    receipt = f'<div class="receipt" title="{_esc(self.labels["sent"])}">✓</div>'
            shown = self.labels.get(f"status_{msg['status']}", msg["status"])
            status = "" if msg["status"] == "complete" else f" [{_esc(shown)}]"
            chips = "".join(
                f'<span class="chip{" mine" if me in r["users"] else ""}" title="{_esc(", ".join(r["users"]))}">'
                f"{_esc(r['emoji'])} {int(r['count'])}</span>"
                for r in self.model.reactions.get(str(msg["id"]), [])
            )
            reactions = f'<div class="reactions">{chips}</div>' if chips else ""
            text = f'<div class="ck-md">{render_markdown(msg["text"])}</div>' if msg["text"] else ""
            attached = self.render_attachment(msg["attachment"]) if msg.get("attachment") else ""
            rows.append(
                f'<div class="message {cls}" data-id="{msg["id"]}"><div class="avatar">{avatar}</div>'
                f'<div class="content"><div class="meta">{_esc(msg["user"])} · {_esc(when)}{status}</div>'
                f"{attached}{text}{reactions}{receipt}</div></div>"
            )
        return f'<div class="messages">{"".join(rows)}</div>'

    def render_attachment(self, attachment: dict[str, Any]) -> str:
        """A message's file: a picture's thumbnail (linked to the picture), an audio player, or a
        link — every value from the server escaped, URLs only on the server's HTTP port."""
        base = (self.client.http_url or "").rstrip("/")
        name = str(attachment.get("name", ""))
        url = _esc(base + str(attachment.get("url", ""))) if base else ""
        size = attachment.get("size")
        label = _esc(f"{name} · {_size(size)}" if isinstance(size, int) else name)
        link = (
            f'<a class="file" href="{url}" target="_blank" rel="noopener noreferrer">{label}</a>'
            if url
            else f'<span class="file">{label}</span>'
        )
        kind = str(attachment.get("type", ""))
        thumb = self.model.thumbs.get(str(attachment.get("id")))
        if kind.startswith("image/") and thumb is not None:
            image = f'<img src="{_esc(thumb)}" alt="{_esc(name)}">'
            shown = f'<a href="{url}" target="_blank" rel="noopener noreferrer">{image}</a>' if url else image
            return f'<div class="attachment image">{shown}</div>'
        if kind.startswith("audio/") and url:
            return f'<div class="attachment audio"><audio controls preload="none" src="{url}"></audio>{link}</div>'
        return f'<div class="attachment">{link}</div>'

    def render_streaming(self) -> str:
        """Replies in progress, their partial Markdown rendered, each with the blinking ▊ cursor."""
        rows = [
            f'<div class="message ai streaming" data-id="{rid}"><div class="avatar">{AVATAR_AI}</div>'
            f'<div class="content"><div class="ck-md">{render_markdown(text)}</div>'
            f'<span class="cursor">▊</span></div></div>'
            for rid, text in sorted(self.model.streaming.items())
        ]
        return f'<div class="messages">{"".join(rows)}</div>' if rows else ""


def _size(size: int) -> str:
    """A file size for people: ``812 B``, ``48.2 KB``, ``1.5 MB``."""
    if size < 1000:
        return f"{size} B"
    if size < 1_000_000:
        return f"{size / 1000:.1f} KB"
    return f"{size / 1_000_000:.1f} MB"


def side_by_side(*panes: ChatPane) -> widgets.HBox:
    """Show several panes next to each other (a multi-user demo in one notebook)."""
    for pane in panes:
        pane.layout.width = f"{100 / max(1, len(panes)):.1f}%"
    return _PaneRow(list(panes), layout=widgets.Layout(width="100%"))


class _PaneRow(widgets.HBox):
    """A row of panes; displaying it displays them (so they send read receipts)."""

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        for child in self.children:
            if isinstance(child, ChatPane):
                child.mark_displayed()
        return super()._repr_mimebundle_(**kwargs)
