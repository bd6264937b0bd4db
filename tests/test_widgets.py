"""ChatPane: the model and the rendered HTML, driven by a real server."""

from __future__ import annotations

import time

from chatkit.client import FixedDelay
from chatkit.llm import EchoStreamer, OfflineTutor
from chatkit.widgets import ChatModel, ChatPane, side_by_side

from .conftest import TIMEOUT, until_model

FAST = FixedDelay(0.05)


async def test_two_panes_chat_and_stream(servers):
    srv = await servers(streamer=EchoStreamer(delay=0.01))
    ann = await ChatPane(srv, "room", user="ann", policy=FAST).start()
    bob = await ChatPane(srv, "room", user="bob", policy=FAST).start()
    try:
        row = side_by_side(ann, bob)
        assert isinstance(row.children[0], ChatPane)
        assert not bob.displayed
        row._repr_mimebundle_()  # what showing the row in a cell does
        assert ann.displayed and bob.displayed
        await until_model(lambda: ann.model.online == ["ann", "bob"], ann)
        ann.input.value = "hello bob, how are you"
        ann._on_input_msg(ann.input, {"event": "submit"}, [])  # Enter
        assert ann.input.value == ""
        await until_model(lambda: bob.model.streaming or len(bob.model.messages) >= 2, bob)
        await until_model(lambda: len(bob.model.messages) == 2 and len(ann.model.messages) == 2, ann, bob)
        for pane in (ann, bob):
            assert [m["text"] for m in pane.model.messages] == ["hello bob, how are you"] * 2
            assert pane.model.messages[1]["is_user"] is False
        bob.flush()
        html = bob.message_list.value
        assert 'class="message user' in html and 'class="message ai' in html
        # avatars are inline SVG, not emoji (no emoji font needed)
        assert 'class="ck-avatar-user"' in html and 'class="ck-avatar-ai"' in html
        assert "👤" not in html and "🤖" not in html
        # read receipts: bob's pane marked ann's message read; ann sees ✓✓
        await until_model(lambda: "bob" in ann.model.receipts.get(str(ann.model.messages[0]["id"]), []), ann)
        ann.flush()
        assert "✓✓ read by bob" in ann.message_list.value
    finally:
        await ann.aclose()
        await bob.aclose()
    assert not ann._tasks and ann.client._task.done()


async def test_streaming_cursor_and_stop(servers):
    srv = await servers(streamer=EchoStreamer(chunks=300, delay=0.01))
    pane = await ChatPane(srv, "s", user="ann", policy=FAST).start()
    try:
        pane.submit("go")
        await until_model(lambda: pane.model.streaming, pane)
        pane.flush()
        assert "▊" in pane.stream_view.value and pane.stop_button.layout.display is None
        pane.stop_button.click()
        await until_model(lambda: len(pane.model.messages) == 2, pane)
        assert pane.model.messages[1]["status"] == "cancelled"
        pane.flush()
        assert pane.stream_view.value == "" and pane.stop_button.layout.display == "none"
    finally:
        await pane.aclose()


async def test_status_across_restart_and_korean_labels(servers):
    srv = await servers()
    port = srv.port
    pane = await ChatPane(srv, "r", user="지민", lang="ko", policy=FixedDelay(0.3)).start()
    try:
        assert "연결됨" in pane.status.value and not pane.input.disabled
        assert pane.input.placeholder == "메시지를 입력하세요..." and pane.send_button.description == "전송"
        await srv.stop()
        await until_model(lambda: pane.model.state == "reconnecting", pane)
        pane.flush()
        assert "재연결" in pane.status.value and 'data-state="reconnecting"' in pane.status.value
        assert "🔴" not in pane.status.value  # the dot is CSS
        assert pane.input.disabled and pane.send_button.disabled
        srv2 = await servers(port=port)
        await until_model(lambda: pane.model.state == "open", pane)
        pane.flush()
        assert "연결됨" in pane.status.value and not pane.input.disabled
        del srv2
    finally:
        await pane.aclose()


async def test_english_reconnecting_label_counts_attempts(servers):
    srv = await servers()
    pane = await ChatPane(srv, "r", user="ann", policy=FixedDelay(5)).start()
    try:
        await srv.stop()
        await until_model(lambda: pane.model.state == "reconnecting", pane)
        pane.flush()
        assert (
            "Reconnecting in 5 s (attempt 1)" in pane.status.value
            or "Reconnecting in 4 s (attempt 1)" in pane.status.value
        )
    finally:
        await pane.aclose()


async def test_typing_indicator_debounce_and_expiry(servers):
    srv = await servers()
    ann = await ChatPane(srv, "t", user="ann", policy=FAST, typing_idle=0.3).start()
    bob = await ChatPane(srv, "t", user="bob", policy=FAST).start()
    sent = []
    real_typing = ann.client.typing

    async def spy(is_typing=True):
        sent.append(is_typing)
        await real_typing(is_typing)

    ann.client.typing = spy
    try:
        for ch in "hello":
            ann.input.value += ch  # five keystrokes within 500 ms
        await until_model(lambda: bob.model.typing == ["ann"], bob)
        bob.flush()  # render now (no sleep: under load the idle timer may already have run)
        assert "ann is typing…" in bob.typing_line.value
        assert sent[0] is True and True not in sent[1:]  # debounced to one frame
        await until_model(lambda: bob.model.typing == [], bob)  # cleared after idle
        assert sent == [True, False]
    finally:
        await ann.aclose()
        await bob.aclose()


async def test_paging_older_messages(servers):
    srv = await servers()
    for i in range(45):
        await srv.store.append("hist", "old", f"old {i}")
    pane = await ChatPane(srv, "hist", user="ann", policy=FAST).start()
    try:
        assert [m["text"] for m in pane.model.messages] == [f"old {i}" for i in range(25, 45)]
        assert await pane.load_older() == 20
        assert await pane.load_older() == 5
        assert pane.model.has_more is False and len(pane.model.messages) == 45
        pane.flush()
        assert pane.older.layout.display == "none"
        assert pane.message_list.value.count('class="message user') == 45
    finally:
        await pane.aclose()


async def test_html_is_escaped(servers):
    srv = await servers()
    pane = await ChatPane(srv, "x", user="<b>eve</b>", policy=FAST).start()
    try:
        await pane.client.send("<img src=x onerror=alert(1)>")
        await until_model(lambda: len(pane.model.messages) == 2, pane)
        pane.flush()
        html = pane.message_list.value
        assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
        assert "<b>eve" not in html and "&lt;b&gt;eve&lt;/b&gt;" in html
    finally:
        await pane.aclose()


async def test_stream_of_1000_chunks_is_throttled(servers):
    srv = await servers(streamer=EchoStreamer(chunks=1000))
    pane = await ChatPane(srv, "fast", user="ann", policy=FAST).start()
    try:
        start_renders = pane.renders
        started = time.monotonic()
        pane.submit("x")
        await until_model(lambda: len(pane.model.messages) == 2, pane, timeout=2 * TIMEOUT)
        elapsed = time.monotonic() - started
        pane.flush()  # the last render (one more than the throttle's)
        renders = pane.renders - start_renders
        assert renders <= elapsed * 20 + 5, (renders, elapsed)
        assert pane.model.messages[1]["text"].count("x#") == 1000
    finally:
        await pane.aclose()


def test_model_window_of_1000_messages():
    model = ChatModel(user="ann")
    for i in range(1, 1001):
        model.apply(
            {
                "type": "message",
                "id": i,
                "user": "bob",
                "is_user": True,
                "message": f"m{i}",
                "timestamp": "2026-01-01T00:00:00.000Z",
            }
        )
    model.apply({"type": "message", "id": 5, "user": "bob", "is_user": True, "message": "dup"})
    assert len(model.messages) == 1000 and model.messages[4]["text"] == "m5"
    pane = ChatPane("ws://127.0.0.1:1", "w", user="ann", window=100)
    pane.model = model
    html = pane.render_messages()
    assert html.count('class="message user') == 100 and "m1000" in html and ">m900<" not in html
    pane.close()


def test_model_from_events_without_a_server():
    m = ChatModel(user="ann")
    m.apply({"type": "connection", "online": ["ann"]})
    m.apply({"type": "user_join", "username": "bob"})
    m.apply({"type": "typing", "user": "bob", "is_typing": True})
    assert m.online == ["ann", "bob"] and m.typing == ["bob"]
    m.apply({"type": "user_leave", "username": "bob"})
    assert m.online == ["ann"] and m.typing == []
    m.apply({"type": "typing", "user": "cy", "is_typing": True})
    m.apply({"type": "presence", "joined": ["dan", "cy", "ann"], "left": [], "count": 3})
    assert m.online == ["ann", "cy", "dan"]
    m.apply({"type": "presence", "joined": ["eve"], "left": ["cy", "zed"], "count": 3})
    assert m.online == ["ann", "dan", "eve"] and m.typing == []  # who left stops typing
    m.apply({"type": "connection", "online": ["ann", "bob"], "online_count": 40})  # a big room: first names
    m.apply({"type": "presence", "joined": ["zoe"], "left": ["bob", "yan"], "count": 39})
    assert m.online == ["ann", "zoe"] and m.online_count == 39
    m.apply({"type": "ai_chunk", "id": 3, "chunk": "Hel"})
    m.apply({"type": "ai_chunk", "id": 3, "chunk": "lo"})
    assert m.streaming == {3: "Hello"}
    m.apply({"type": "ai_complete", "id": 3, "message": "Hello", "status": "complete"})
    assert m.streaming == {} and m.messages[-1]["text"] == "Hello"
    m.apply({"type": "state", "state": "reconnecting", "attempt": 2, "delay": 4.0})
    assert (m.state, m.attempt, m.delay) == ("reconnecting", 2, 4.0)


async def test_markdown_rendered_in_finished_and_streaming_messages(servers):
    text = "Use `Sec-WebSocket-Key`:\n\n```python\nimport base64\nprint(base64.b64encode(b'x'))\n```\n[rfc](https://www.rfc-editor.org/rfc/rfc6455)"
    srv = await servers(streamer=EchoStreamer(delay=0.02))
    pane = await ChatPane(srv, "md", user="ann", policy=FAST).start()
    try:
        pane.submit(text)
        await until_model(
            lambda: pane.model.streaming and "```" in next(iter(pane.model.streaming.values())), pane
        )
        pane.flush()
        # a partial reply with an open code fence is already a highlighted code block
        assert '<pre class="highlight">' in pane.stream_view.value and "```" not in pane.stream_view.value
        await until_model(lambda: len(pane.model.messages) == 2, pane)
        pane.flush()
        html = pane.message_list.value
        for row in html.split('<div class="message ')[1:]:  # the user's message and the echo, alike
            assert "<code>Sec-WebSocket-Key</code>" in row
            assert '<span class="tok-kn">import</span>' in row
            assert (
                'href="https://www.rfc-editor.org/rfc/rfc6455" target="_blank" rel="noopener noreferrer"'
                in row
            )
        assert ".chatkit-pane .ck-md .highlight .tok-k" in pane.children[0].value  # pygments CSS shipped
    finally:
        await pane.aclose()


async def test_markdown_xss_cases_are_text_in_the_pane(servers):
    srv = await servers()
    pane = await ChatPane(srv, "mdx", user="eve", policy=FAST).start()
    cases = [
        "[x](javascript:alert(1))",
        "`<img src=x onerror=alert(1)>`",
        "![x](data:image/png;base64,AAAA)",
        "[y](data:text/html;base64,PHNjcmlwdD4=)",
        "<img src=x onerror=alert(1)>",
    ]
    try:
        for text in cases:
            await pane.client.send(text)
        await until_model(lambda: len(pane.model.messages) == 2 * len(cases), pane)
        pane.flush()
        html = pane.message_list.value
        assert "<img" not in html and "javascript:" not in html.replace("[x](javascript:", "")
        assert 'href="data:' not in html and "onerror=alert(1)&gt;" in html
        assert html.count("[x](javascript:alert(1))") == 2  # not a link: shown as typed
    finally:
        await pane.aclose()


def test_status_dot_follows_the_state_without_emoji():
    pane = ChatPane("ws://127.0.0.1:1", "s", user="ann")
    try:
        for state in ("connecting", "open", "reconnecting", "closed"):
            pane.model.apply({"type": "state", "state": state, "attempt": 1, "delay": 1.0})
            pane.flush()
            assert f'data-state="{state}"' in pane.status.value and '<span class="dot">' in pane.status.value
            assert not any(ch in pane.status.value for ch in "🟢🔴🟡")
    finally:
        pane.close()


async def test_tutor_answer_shows_highlighted_code(servers):
    srv = await servers(streamer=OfflineTutor(first_token_ms=0, tokens_per_s=0))
    pane = await ChatPane(srv, "tutor", user="ann", policy=FAST).start()
    try:
        pane.submit("How do I compute Sec-WebSocket-Accept?")
        await until_model(lambda: len(pane.model.messages) == 2, pane)
        pane.flush()
        answer = pane.message_list.value.split('class="message ai')[1]
        assert "<code>Sec-WebSocket-Key</code>" in answer and "`" not in answer
        assert '<pre class="highlight"><code class="language-python">' in answer
        assert (
            '<span class="tok-kn">import</span>' in answer and '<span class="tok-nf">accept</span>' in answer
        )
    finally:
        await pane.aclose()


async def test_a_pane_sends_read_receipts_only_once_displayed(servers):
    srv = await servers(streamer=EchoStreamer(delay=0.01))
    ann = await ChatPane(srv, "seen", user="ann", policy=FAST).start()
    cam = await ChatPane(srv, "seen", user="cam", policy=FAST).start()
    try:
        await until_model(lambda: ann.model.state == "open" and cam.model.state == "open", ann, cam)
        sent = await ann.submit("are you there?")
        await until_model(lambda: any(m["id"] == sent["id"] for m in cam.model.messages), cam)
        assert not cam.displayed and cam._read_sent == set()  # received, not shown: no receipt
        cam.mark_displayed()
        await until_model(lambda: "cam" in ann.model.receipts.get(str(sent["id"]), []), ann)
    finally:
        await ann.aclose()
        await cam.aclose()


async def test_reactions_between_two_panes_and_after_history(servers):
    srv = await servers()
    ann = await ChatPane(srv, "react", user="ann", policy=FAST).start()
    bob = await ChatPane(srv, "react", user="bob", policy=FAST).start()
    try:
        ann.submit("react to me")
        await until_model(lambda: len(bob.model.messages) == 2, bob)
        mine = bob.model.messages[0]
        assert mine["user"] == "ann"
        bob.react("👍", mine["id"])
        await until_model(lambda: ann.model.reactions.get(str(mine["id"])), ann)
        ann.flush()
        assert '<span class="chip" title="bob">👍 1</span>' in ann.message_list.value
        ann.react("👍", mine["id"])
        await until_model(lambda: bob.model.reactions[str(mine["id"])][0]["count"] == 2, bob)
        bob.flush()
        assert '<span class="chip mine" title="bob, ann">👍 2</span>' in bob.message_list.value
        bob.reaction_buttons[3].click()  # 🎉 on the newest message not bob's own: the AI's echo
        echo = bob.model.messages[1]
        await until_model(lambda: ann.model.reactions.get(str(echo["id"])), ann)
        assert ann.model.reactions[str(echo["id"])] == [{"emoji": "🎉", "count": 1, "users": ["bob"]}]
        # a third pane joining later gets them with the history page
        cat = await ChatPane(srv, "react", user="cat", policy=FAST).start()
        try:
            assert cat.model.reactions[str(mine["id"])][0]["users"] == ["bob", "ann"]
            cat.flush()
            assert "👍 2" in cat.message_list.value and "🎉 1" in cat.message_list.value
        finally:
            await cat.aclose()
    finally:
        await ann.aclose()
        await bob.aclose()


async def test_a_picture_and_a_voice_message_between_two_panes(servers):
    import asyncio
    import io
    import wave

    from PIL import Image

    srv = await servers(http_port=0)
    picture = io.BytesIO()
    Image.new("RGB", (640, 480), "teal").save(picture, "PNG")
    ann = await ChatPane(srv, "pics", user="ann", policy=FAST).start()
    bob = await ChatPane(srv, "pics", user="bob", policy=FAST).start()
    try:
        sent = await ann.send_file(picture.getvalue(), name="sea & sky.png", text="the **sea**")
        file_id = sent["attachment"]["id"]
        await until_model(lambda: file_id in bob.thumbs, bob)
        bob.flush()
        html = bob.message_list.value
        files = srv.http_url.rstrip("/")
        assert f'<a href="{files}/files/{file_id}" target="_blank" rel="noopener noreferrer">' in html
        assert '<img src="data:image/webp;base64,' in html and 'alt="sea &amp; sky.png"' in html
        assert "<strong>sea</strong>" in html  # the caption is Markdown as usual
        sound = io.BytesIO()
        with wave.open(sound, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(b"\0\0" * 800)
        voice = await bob.send_file(sound.getvalue(), name="hello.wav")
        await until_model(lambda: any(m["id"] == voice["id"] for m in ann.model.messages), ann)
        ann.flush()
        assert f'<audio controls preload="none" src="{files}/files/{voice["attachment"]["id"]}">' in (
            ann.message_list.value
        )
        assert "hello.wav · 1.6 KB" in ann.message_list.value
        # A file the server refuses is shown as not sent, with its code.
        refused = ann.send_file(b"<html><script>alert(1)</script></html>", name="cat.png")
        await asyncio.gather(refused, return_exceptions=True)
        assert "unsupported_type" in ann.model.error and "cat.png" in ann.model.error
        # A pane that joins later shows the picture from the history page.
        cat = await ChatPane(srv, "pics", user="cat", policy=FAST).start()
        try:
            await until_model(lambda: file_id in cat.thumbs, cat)
            cat.flush()
            assert '<img src="data:image/webp;base64,' in cat.message_list.value
        finally:
            await cat.aclose()
    finally:
        await ann.aclose()
        await bob.aclose()
