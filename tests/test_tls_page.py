"""The chat page over TLS in headless Chromium: the page from ``https://``, chat over ``wss://``
and over an ``https://`` event stream, signed in with the join code — a throw-away CA (trustme).

How the browser trusts the certificate: Chromium is told the SHA-256 of exactly this server
certificate's public key (``--ignore-certificate-errors-spki-list``; Chromium honours it only
with a user data directory, which Playwright always passes). Every other certificate is still
checked, and a browser launched without the flag refuses the page — checked below, so the
test shows the page really is served over TLS that the browser verifies.
"""

from __future__ import annotations

import base64
import hashlib
import ssl

import pytest

from chatkit.auth import Authenticator
from chatkit.llm import EchoStreamer

from .browser import CHROMIUM_ARGS, chromium_path, screenshot_path
from .test_browser_security import T, say, sign_in

pytestmark = pytest.mark.timeout(120)


def spki_sha256(cert_pem: bytes) -> str:
    """Base64 of the SHA-256 of a certificate's SubjectPublicKeyInfo (what Chromium's flag takes)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    key = x509.load_pem_x509_certificate(cert_pem).public_key()
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode("ascii")


async def test_the_page_signs_in_and_chats_over_https_and_wss(servers):
    trustme = pytest.importorskip("trustme")
    executable = chromium_path()
    from playwright.async_api import Error, async_playwright

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    srv = await servers(
        http_port=0,
        streamer=EchoStreamer(),
        auth=Authenticator.from_options(join_code="blue-42"),
        ssl=server_ctx,
    )
    assert srv.url.startswith("https://") and srv.http_url.startswith("https://")
    trust = f"--ignore-certificate-errors-spki-list={spki_sha256(cert.cert_chain_pems[0].bytes())}"
    async with async_playwright() as p:
        # Without being told about the certificate, Chromium refuses the page.
        strict = await p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            page = await strict.new_page()
            with pytest.raises(Error, match="ERR_CERT_AUTHORITY_INVALID"):
                await page.goto(srv.url)
        finally:
            await strict.close()
        browser = await p.chromium.launch(
            executable_path=executable, headless=True, args=[*CHROMIUM_ARGS, trust]
        )
        try:
            errors: list[str] = []
            ann = await (await browser.new_context()).new_page()
            bob = await (await browser.new_context()).new_page()
            for page in (ann, bob):
                page.on("pageerror", lambda exc: errors.append(str(exc)))
            await sign_in(ann, srv.url, "ann", "blue-42", transport="ws")
            await sign_in(bob, srv.url, "bob", "blue-42", transport="sse")
            assert (await ann.evaluate("window.chatkit.service.socket.url")).startswith(
                f"wss://127.0.0.1:{srv.port}/ws/chat/demo/"
            )
            assert (await bob.evaluate("window.chatkit.service.source.url")).startswith(
                f"https://127.0.0.1:{srv.http_port}/sse/chat/demo/"
            )
            await say(ann, "hello over wss")
            await say(bob, "hello over https")
            for page in (ann, bob):
                for text in ("hello over wss", "hello over https"):
                    await page.wait_for_selector(f"#list .message.user .text >> text={text}", timeout=T)
                    await page.wait_for_selector(f"#list .message.ai .text >> text={text}", timeout=T)
            await bob.screenshot(path=screenshot_path("tls_page_sse"))
            assert errors == [], errors
        finally:
            await browser.close()
    stored = await srv.store.history_page("demo", before=None, limit=50)
    assert sorted((m.user, m.content) for m in stored.messages if m.is_user) == [
        ("ann", "hello over wss"),
        ("bob", "hello over https"),
    ]
