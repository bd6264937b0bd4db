"""Attachments: uploads bounded and typed by content, downloads that never run, files in messages.

Every upload here goes through a real server (``POST /files`` on its HTTP port) with the
default limits; the files are made on the spot (Pillow for images, ``wave`` for sound, the
first bytes of a WebM/Ogg/MP4 container as MediaRecorder writes them).
"""

from __future__ import annotations

import hashlib
import io
import struct
import wave
from urllib.parse import quote

import httpx
import pytest
from PIL import Image

from chatkit import ChatServer, files, protocol
from chatkit.auth import Authenticator
from chatkit.errors import ProtocolError
from chatkit.limits import Limits
from chatkit.llm import EchoStreamer
from chatkit.storage import open_store

from .conftest import TIMEOUT, peer

# -- sample files ---------------------------------------------------------------------------


def image(fmt: str = "PNG", size: tuple[int, int] = (800, 600), color: str = "tomato") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, fmt)
    return out.getvalue()


def wav() -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 800)
    return out.getvalue()


def _ebml(element: bytes, data: bytes) -> bytes:
    return element + bytes([0x80 | len(data)]) + data


def webm() -> bytes:
    """The start of what Chromium's MediaRecorder writes for ``audio/webm;codecs=opus``."""
    head = _ebml(b"\x42\x86", b"\x01") + _ebml(b"\x42\xf7", b"\x01") + _ebml(b"\x42\x82", b"webm")
    return b"\x1a\x45\xdf\xa3" + bytes([0x80 | len(head)]) + head + b"\x18\x53\x80\x67" + b"\x01" * 64


def ogg() -> bytes:
    return b"OggS\x00\x02" + b"\x00" * 20 + b"\x01\x13OpusHead\x01\x01" + b"\x00" * 64


def m4a() -> bytes:
    return struct.pack(">I", 24) + b"ftypM4A \x00\x00\x00\x00M4A isom" + b"\x00" * 64


def mp3() -> bytes:
    return b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x00" + b"\x00" * 400


HTML = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>"
SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'


# -- what a file is, from its bytes -----------------------------------------------------------


@pytest.mark.parametrize(
    "data, expected",
    [
        (image("PNG"), "image/png"),
        (image("JPEG"), "image/jpeg"),
        (image("GIF"), "image/gif"),
        (image("WEBP"), "image/webp"),
        (image("PDF"), "application/pdf"),
        (wav(), "audio/wav"),
        (webm(), "audio/webm"),
        (ogg(), "audio/ogg"),
        (m4a(), "audio/mp4"),
        (mp3(), "audio/mpeg"),
    ],
)
def test_accepted_types_are_sniffed_from_the_bytes(data, expected):
    assert files.sniff(data) == expected


@pytest.mark.parametrize(
    "data",
    [
        HTML,
        SVG,
        b"just some text",
        b"#!/bin/sh\nrm -rf /\n",
        b"PK\x03\x04" + b"\x00" * 40,
        b"MZ" + b"\x00" * 80,
    ],
    ids=["html", "svg", "text", "script", "zip", "exe"],
)
def test_everything_else_is_refused_by_content(data):
    with pytest.raises(files.UploadRefused) as info:
        files.sniff(data)
    assert (info.value.status, info.value.code) == (415, "unsupported_type")


@pytest.mark.parametrize(
    "raw, type_, expected",
    [
        ("cat.png", "image/png", "cat.png"),
        ("CAT.PNG", "image/png", "CAT.PNG"),
        ("../../etc/passwd", "image/png", "passwd.png"),
        ("C:\\Users\\ann\\photo.jpg", "image/jpeg", "photo.jpg"),
        ("photo.html", "image/png", "photo.html.png"),  # the extension follows the content
        ("voice.svg", "audio/webm", "voice.svg.webm"),
        ("evil\u202egnp.exe", "image/png", "evilgnp.exe.png"),  # no bidi override tricks
        ("사진.jpeg", "image/jpeg", "사진.jpeg"),
        ("", "audio/ogg", "file.ogg"),
        (None, "application/pdf", "file.pdf"),
        (".htaccess", "image/gif", "htaccess.gif"),
        ("a" * 300 + ".png", "image/png", "a" * (files.MAX_NAME_CHARS - 4) + ".png"),
    ],
)
def test_names_are_cleaned(raw, type_, expected):
    assert files.clean_name(raw, type_) == expected


def test_attachment_frames_decode_and_bad_ones_are_refused():
    sha = "ab" * 32
    frame = protocol.decode(f'{{"type": "message", "attachment": {{"id": "{sha}"}}}}')
    assert frame == protocol.SendMessage("", None, protocol.AttachmentRef(sha))
    assert protocol.decode(frame.encode()) == frame
    named = protocol.SendMessage("look", "c1", protocol.AttachmentRef(sha, "cat.png"))
    assert protocol.decode(named.encode()) == named
    for bad in ({"id": "AB" * 32}, {"id": "ab" * 31}, {"id": 5}, "ab" * 32, {"id": sha, "name": ""}, []):
        with pytest.raises(ProtocolError) as info:
            protocol.decode_object({"message": "x", "attachment": bad, "client_id": "c9"})
        assert info.value.code == "bad_attachment" and info.value.client_id == "c9"
    with pytest.raises(ProtocolError) as info:  # without an attachment, text is still required
        protocol.decode_object({"message": "  "})
    assert info.value.code == "empty_message"


# -- upload and download over HTTP ------------------------------------------------------------


async def upload(
    http: httpx.AsyncClient,
    base: str,
    data: bytes,
    *,
    name: str | None = "file.bin",
    content_type: str | None = "application/octet-stream",
    room: str = "room",
    **headers: str,
) -> httpx.Response:
    sent = dict(headers)
    if content_type is not None:
        sent["Content-Type"] = content_type
    if name is not None:
        sent["X-Filename"] = quote(name)
    return await http.post(f"{base}files", params={"room": room}, content=data, headers=sent)


@pytest.fixture
async def http():
    async with httpx.AsyncClient(trust_env=False, timeout=TIMEOUT) as client:
        yield client


async def test_upload_and_download_an_image_with_safe_headers(servers, store_url, http):
    srv = await servers(http_port=0, db=store_url)
    data = image("PNG", (800, 600))
    response = await upload(http, srv.http_url, data, name="사진 1.png", content_type="image/png")
    assert response.status_code == 201, response.text
    sha = hashlib.sha256(data).hexdigest()
    assert response.json() == {
        "id": sha,
        "name": "사진 1.png",
        "type": "image/png",
        "size": len(data),
        "url": f"/files/{sha}",
        "thumb": f"/files/{sha}/thumb",
        "width": 800,
        "height": 600,
    }
    got = await http.get(f"{srv.http_url}files/{sha}")
    assert got.status_code == 200 and got.content == data
    assert got.headers["content-type"] == "image/png"
    assert got.headers["x-content-type-options"] == "nosniff"
    assert got.headers["content-disposition"] == (
        "inline; filename=\"__ 1.png\"; filename*=UTF-8''%EC%82%AC%EC%A7%84%201.png"
    )
    assert got.headers["content-security-policy"] == "default-src 'none'; sandbox"
    assert got.headers["cross-origin-resource-policy"] == "cross-origin"  # embedded by the page's port
    assert "immutable" in got.headers["cache-control"]
    assert got.headers["etag"] == f'"{sha}"'
    again = await http.get(f"{srv.http_url}files/{sha}", headers={"If-None-Match": f'"{sha}"'})
    assert again.status_code == 304 and again.content == b""
    head = await http.head(f"{srv.http_url}files/{sha}")
    assert (
        head.status_code == 200 and head.headers["content-length"] == str(len(data)) and head.content == b""
    )
    thumb = await http.get(f"{srv.http_url}files/{sha}/thumb")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/webp"
    with Image.open(io.BytesIO(thumb.content)) as t:
        assert t.format == "WEBP" and max(t.size) == files.THUMB_SIZE and t.size == (320, 240)


async def test_files_other_than_images_are_downloaded_as_attachments(servers, http):
    srv = await servers(http_port=0)
    for data, type_ in ((webm(), "audio/webm"), (image("PDF"), "application/pdf")):
        response = await upload(http, srv.http_url, data, name="x", content_type=type_)
        assert response.status_code == 201, response.text
        body = response.json()
        assert (body["type"], body["thumb"], body["width"]) == (type_, None, None)
        got = await http.get(f"{srv.http_url}{body['url'].lstrip('/')}")
        assert got.headers["content-type"] == type_
        assert got.headers["content-disposition"].startswith("attachment; ")
        assert got.headers["x-content-type-options"] == "nosniff"
        missing = await http.get(f"{srv.http_url}{body['url'].lstrip('/')}/thumb")
        assert missing.status_code == 404 and missing.json()["code"] == "unknown_file"


async def test_the_same_bytes_are_stored_once(servers, store_url, http):
    srv = await servers(http_port=0, db=store_url)
    data = image("JPEG")
    first = (await upload(http, srv.http_url, data, name="a.jpg")).json()
    second = (await upload(http, srv.http_url, data, name="b.jpg", room="other")).json()
    assert first["id"] == second["id"]
    assert (first["name"], second["name"]) == ("a.jpg", "b.jpg")  # each upload keeps its own name
    assert await srv.store.file_count() == 1
    await upload(http, srv.http_url, image("JPEG", color="navy"), name="c.jpg")
    assert await srv.store.file_count() == 2


async def test_too_large_is_413_before_and_while_reading(servers, http):
    srv = await servers(http_port=0)  # the default limit: 5 MiB
    limit = Limits().max_upload_bytes
    big = image("PNG", (64, 64)) + b"\0" * limit
    page = f"http://127.0.0.1:{srv.port}"  # the page, on the other port, must be able to read the code
    response = await upload(http, srv.http_url, big, Origin=page)  # Content-Length says it: refused at once
    assert response.status_code == 413
    assert response.headers["access-control-allow-origin"] == page
    assert response.json() == {
        "type": "error",
        "code": "too_large",
        "message": f"request body of {len(big)} bytes; the limit is {limit}",
        "max": limit,
    }

    async def chunks():  # no Content-Length: refused once the body passes the limit
        for _ in range(6):
            yield b"\0" * (1024 * 1024)

    response = await http.post(
        f"{srv.http_url}files?room=room",
        content=chunks(),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 413 and response.json()["code"] == "too_large"
    assert response.json()["max"] == limit
    assert await srv.store.file_count() == 0
    # The server is still up and accepts a file within the limit.
    assert (await upload(http, srv.http_url, image("PNG"))).status_code == 201


@pytest.mark.parametrize(
    "data, name, content_type",
    [
        (HTML, "cat.png", "image/png"),  # a lying name and a lying Content-Type
        (HTML, "page.html", "text/html"),
        (SVG, "logo.svg", "image/svg+xml"),
        (SVG, "logo.png", "image/png"),
        (b"plain words", "notes.pdf", "application/pdf"),
    ],
    ids=["html-as-png", "html", "svg", "svg-as-png", "text-as-pdf"],
)
async def test_wrong_content_is_415_whatever_the_name_and_type_say(servers, http, data, name, content_type):
    srv = await servers(http_port=0)
    response = await upload(http, srv.http_url, data, name=name, content_type=content_type)
    assert response.status_code == 415 and response.json()["code"] == "unsupported_type"
    assert await srv.store.file_count() == 0


@pytest.mark.parametrize(
    "content_type",
    ["multipart/form-data; boundary=x", "text/plain", "application/x-www-form-urlencoded", None],
)
async def test_simple_request_types_are_refused(servers, http, content_type):
    """What a cross-site form could send without a CORS preflight never reaches the store."""
    srv = await servers(http_port=0)
    response = await upload(http, srv.http_url, image("PNG"), content_type=content_type)
    assert response.status_code == 415 and response.json()["code"] == "unsupported_media_type"


async def test_broken_images_and_bombs_are_refused(servers, http):
    srv = await servers(http_port=0)
    broken = image("PNG")[:200]  # a PNG cut short: sniffed as PNG, fails to decode
    response = await upload(http, srv.http_url, broken, name="x.png")
    assert response.status_code == 415 and response.json()["code"] == "bad_image"
    bomb = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(bomb, "PNG")  # ~50 KB that would decode to 400 MP
    assert len(bomb.getvalue()) < 100_000
    response = await upload(http, srv.http_url, bomb.getvalue(), name="bomb.png")
    assert response.status_code == 413 and response.json()["code"] == "image_too_large"
    response = await upload(http, srv.http_url, b"", name="x.png")
    assert response.status_code == 400 and response.json()["code"] == "empty_file"
    response = await http.post(
        f"{srv.http_url}files", content=image("PNG"), headers={"Content-Type": "image/png"}
    )
    assert response.status_code == 400 and response.json()["code"] == "missing_field"
    for path in ("files/" + "0" * 64, "files/nothex", "files/" + "0" * 64 + "/thumb"):
        got = await http.get(f"{srv.http_url}{path}")
        assert got.status_code == 404 and got.json()["code"] == "unknown_file"
    assert await srv.store.file_count() == 0


async def test_uploads_follow_the_origin_policy_and_sign_in(servers, http):
    srv = await servers(http_port=0, auth=Authenticator.from_options(join_code="blue-42"))
    data = image("PNG")
    response = await upload(http, srv.http_url, data, Origin="http://evil.example")
    assert response.status_code == 403 and response.json()["code"] == "origin_not_allowed"
    response = await upload(http, srv.http_url, data)
    assert response.status_code == 401 and response.json()["code"] == "auth_required"
    login = await http.post(f"{srv.http_url}auth/login", json={"name": "ann", "code": "blue-42"})
    token = login.json()["token"]
    response = await upload(http, srv.http_url, data, Authorization=f"Bearer {token}")
    assert response.status_code == 201
    url = f"{srv.http_url}files/{response.json()['id']}"
    async with httpx.AsyncClient(trust_env=False, timeout=TIMEOUT) as stranger:
        got = await stranger.get(url)
        assert got.status_code == 401
    got = await http.get(url)  # the sign-in cookie, as an <img> in the page sends it
    assert got.status_code == 200 and got.content == data
    preflight = await http.options(
        f"{srv.http_url}files",
        headers={
            "Origin": f"http://127.0.0.1:{srv.port}",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, x-filename",
        },
    )
    assert "X-Filename" in preflight.headers["access-control-allow-headers"]
    assert preflight.headers["access-control-allow-origin"] == f"http://127.0.0.1:{srv.port}"


async def test_the_page_may_show_files_from_the_http_port(servers, http):
    srv = await servers(http_port=0)
    page = await http.get(srv.url)
    csp = dict(part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";"))
    origin = f"http://127.0.0.1:{srv.http_port}"
    assert origin in csp["img-src"].split() and origin in csp["media-src"].split()
    assert not any(s.startswith("ws") for s in csp["img-src"].split())
    config = (await http.get(f"{srv.url}config.json")).json()
    assert config["max_upload_bytes"] == Limits().max_upload_bytes


# -- files in messages ------------------------------------------------------------------------


async def test_an_image_message_between_two_clients(servers, store_url, http):
    srv = await servers(http_port=0, db=store_url)
    stored = (await upload(http, srv.http_url, image("PNG"), name="cat.png", room="pics")).json()
    async with peer(srv.ws_url("pics", user="ann")) as ann, peer(srv.ws_url("pics", user="bob")) as bob:
        await ann.until("connection")
        await bob.until("connection")
        await ann.send({"type": "message", "attachment": {"id": stored["id"]}, "client_id": "p1"})
        for p in (ann, bob):
            frame = await p.until("message", user="ann")
            assert frame["message"] == "" and frame["client_id"] == "p1"
            assert frame["attachment"] == stored
        # A file without a caption asks the AI nothing; with a caption the AI answers the caption.
        assert [f["type"] for f in await bob.settle()] == []
        await bob.send(
            {
                "message": "my cat",
                "attachment": {"id": stored["id"], "name": "../mine.png"},
                "client_id": "p2",
            }
        )
        frame = await ann.until("message", user="bob")
        assert frame["attachment"]["name"] == "mine.png" and frame["attachment"]["id"] == stored["id"]
        reply = await ann.until("ai_complete")
        assert "my cat" in reply["message"]
        await bob.until("ai_complete")
        await ann.send({"message": "x", "attachment": {"id": "0" * 64}, "client_id": "p3"})
        error = await ann.until("error")
        assert (error["code"], error["client_id"]) == ("bad_attachment", "p3")
        await ann.send({"message": "x", "attachment": {"id": "../../etc/passwd"}, "client_id": "p4"})
        error = await ann.until("error")
        assert (error["code"], error["client_id"]) == ("bad_attachment", "p4")
        assert [f["type"] for f in await bob.settle()] == []  # refused: nothing broadcast


async def test_attachments_are_replayed_after_a_restart_in_history_and_over_sse(servers, store_url, http):
    srv = await servers(http_port=0, db=store_url)
    port = srv.port
    voice = (await upload(http, srv.http_url, webm(), name="voice.webm", content_type="audio/webm")).json()
    async with peer(srv.ws_url("keep", user="ann")) as ann:
        await ann.until("connection")
        await ann.send({"attachment": {"id": voice["id"]}})
        sent = await ann.until("message", user="ann")
    await srv.stop()
    srv2 = await servers(port=port, http_port=0, db=store_url)
    async with peer(srv2.ws_url("keep", user="bob", after=0)) as bob:
        replayed = await bob.until("message", id=sent["id"])
        assert replayed["attachment"] == voice and replayed["attachment"]["type"] == "audio/webm"
    page = (await http.get(f"{srv2.url}api/chat/keep/messages")).json()
    assert [m["attachment"] for m in page["messages"]] == [voice]
    got = await http.get(f"{srv2.http_url}files/{voice['id']}")
    assert got.status_code == 200 and got.content == webm()
    # The SSE page posts the same object to its POST route.
    posted = await http.post(
        f"{srv2.http_url}sse/chat/keep/messages",
        json={"message": "again", "attachment": {"id": voice["id"]}, "user": "cat"},
    )
    assert posted.status_code == 201 and posted.json()["attachment"] == voice
    refused = await http.post(
        f"{srv2.http_url}sse/chat/keep/messages", json={"message": "x", "attachment": {"id": "1" * 64}}
    )
    assert refused.status_code == 400 and refused.json()["code"] == "bad_attachment"


async def test_store_keeps_files_content_addressed(store_url):
    store = await open_store(store_url)
    try:
        upload_ = files.inspect_upload(image("GIF"), "a.gif", encoded_name=False)
        a = upload_.attachment
        assert await store.put_file("r", a, upload_.data, upload_.thumb) is True
        assert await store.put_file("r", a, upload_.data, upload_.thumb) is False
        assert await store.file_info(a.id) == a
        assert (await store.file_data(a.id)).data == upload_.data
        assert (await store.file_data(a.id, thumb=True)).data == upload_.thumb
        assert await store.file_info("f" * 64) is None
        msg = (await store.append("r", "ann", "", attachment=a)).message
        assert msg.attachment == a
        assert (await store.messages_after("r", 0))[0].attachment == a
        assert (await store.get(msg.id)).attachment == a
        assert await store.delete_message("r", msg.id)
        assert (await store.get(msg.id)).attachment is None  # a deleted message shows no file
        assert (await store.get(msg.id)).to_frame().get("attachment") is None
    finally:
        await store.close()


async def test_a_file_sent_on_one_process_is_shown_and_served_by_another(redis_service, store_url, http):
    """Two processes of a cluster share the database (no disk): the file uploaded to one is
    relayed in the message frame to the other's members and downloaded from the other."""
    one = ChatServer(port=0, http_port=0, db=store_url, broker=redis_service.url, streamer=EchoStreamer())
    try:
        await one.start()
        two = await ChatServer(
            port=0, http_port=0, db=store_url, broker=redis_service.url, streamer=EchoStreamer()
        ).start()
        try:
            pic = (await upload(http, one.http_url, image("WEBP"), name="p.webp", room="c")).json()
            async with peer(one.ws_url("c", user="ann")) as ann, peer(two.ws_url("c", user="bob")) as bob:
                await ann.until("connection")
                await bob.until("connection")
                await ann.send({"message": "", "attachment": {"id": pic["id"]}})
                relayed = await bob.until("message", user="ann")
                assert relayed["attachment"] == pic
            got = await http.get(f"{two.http_url}files/{pic['id']}/thumb")
            assert got.status_code == 200 and got.headers["content-type"] == "image/webp"
        finally:
            await two.stop()
    finally:
        await one.stop()


async def test_clients_send_files(servers, tmp_path):
    """ChatClient finds the HTTP port in /config.json; SSEClient posts files too; refusals are coded."""
    from chatkit.client import ChatClient
    from chatkit.errors import MessageRefused
    from chatkit.sse import SSEClient

    srv = await servers(http_port=0)
    path = tmp_path / "그림.gif"
    path.write_bytes(image("GIF", (100, 50)))
    async with ChatClient(srv.ws_url("send"), user="ann") as ann:
        assert ann.http_url is None
        stored = await ann.send_file(path, text="a *picture*")
        assert ann.http_url == srv.http_url
        assert stored["message"] == "a *picture*" and stored["user"] == "ann"
        assert stored["attachment"]["name"] == "그림.gif" and stored["attachment"]["type"] == "image/gif"
        assert (stored["attachment"]["width"], stored["attachment"]["height"]) == (100, 50)
        with pytest.raises(MessageRefused) as info:
            await ann.send_file(HTML, name="x.png", content_type="image/png")
        assert info.value.code == "unsupported_type"
        with pytest.raises(MessageRefused) as info:
            await ann.send("", attachment=protocol.AttachmentRef("e" * 64))
        assert info.value.code == "bad_attachment"
    async with SSEClient(srv.http_url, "send", user="bob") as bob:
        posted = await bob.post_file(ogg(), name="hi.ogg")
        assert posted["attachment"]["type"] == "audio/ogg" and posted["message"] == ""
