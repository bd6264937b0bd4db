"""TLS for both ports: ``--certfile``/``--keyfile`` → an ``ssl.SSLContext``.

With a context the WebSocket port serves ``wss://`` (and the page over
``https://``) and the HTTP port serves ``https://``. Clients trust the
certificate through their own context (``ssl=`` for ``ChatClient``,
``verify=`` for ``SSEClient``); the tests and notebook 08 use a throw-away CA
made by ``trustme``.
"""

from __future__ import annotations

import os
import ssl

__all__ = ["server_context", "client_context"]


def server_context(certfile: str | os.PathLike, keyfile: str | os.PathLike | None = None) -> ssl.SSLContext:
    """A server context with Python's secure defaults (TLS 1.2+) and the given certificate chain."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    return context


def client_context(cafile: str | os.PathLike | None = None) -> ssl.SSLContext:
    """A client context trusting ``cafile`` (or the system's CAs), hostname checked."""
    return ssl.create_default_context(cafile=cafile)
