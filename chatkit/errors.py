"""One exception tree for chatkit.

Every error chatkit raises on purpose derives from :class:`ChatkitError`, so an
application can catch them all at once, and each carries a stable ``code``
string that also travels on the wire in ``error`` frames.
"""

from __future__ import annotations

__all__ = [
    "ChatkitError",
    "ProtocolError",
    "StoreError",
    "LLMError",
    "ClientError",
    "HandshakeRefused",
    "ClientClosed",
    "MessageRefused",
    "SendTimeout",
]


class ChatkitError(Exception):
    """Base class of every chatkit error; ``code`` is a stable machine-readable tag."""

    code: str = "internal_error"
    retry_after_ms: int | None = None
    """For a refusal that may pass later: when to try again (sent as ``retry_after_ms``)."""

    def __init__(self, message: str, *, code: str | None = None, retry_after_ms: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        if retry_after_ms is not None:
            self.retry_after_ms = retry_after_ms
        self.message = message

    def __str__(self) -> str:  # pragma: no cover - trivial
        return f"{self.code}: {self.message}"


class ProtocolError(ChatkitError):
    """A frame that cannot be accepted: bad JSON, unknown type, missing field...

    Raised by :func:`chatkit.protocol.decode`; the server answers it with an
    ``error`` frame carrying the same ``code`` and keeps the connection open.
    ``client_id`` is the refused chat message's, when it had a usable one.
    """

    code = "protocol_error"
    client_id: str | None = None


class StoreError(ChatkitError):
    """The SQLite store refused an operation (unknown message, bad argument)."""

    code = "store_error"


class LLMError(ChatkitError):
    """A language-model backend failed: refused, rate-limited, timed out, dropped.

    ``code`` is one of ``llm_auth``, ``llm_rate_limited``, ``llm_timeout``,
    ``llm_unreachable``, ``llm_stream_dropped``, ``llm_error``. The message is safe
    to show to users: it never contains a traceback or a secret.
    """

    code = "llm_error"


class ClientError(ChatkitError):
    """Base class of errors raised by :class:`chatkit.client.ChatClient`."""

    code = "client_error"


class HandshakeRefused(ClientError):
    """The server refused the WebSocket handshake with a non-retryable status."""

    code = "handshake_refused"

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ClientClosed(ClientError):
    """The client was closed before the operation could complete."""

    code = "client_closed"


class MessageRefused(ClientError):
    """The server refused a message for good (``too_long``, ``bad_field``, ``empty_message``…),
    or the client refused to send one the server would refuse; ``code`` is the server's.

    Sending the same message again cannot succeed. ``retry_after_ms`` is set when
    the refusal was a retryable one that the client gave up on.
    """

    code = "refused"

    def __init__(self, message: str, *, code: str, retry_after_ms: int | None = None) -> None:
        super().__init__(message, code=code, retry_after_ms=retry_after_ms)


class SendTimeout(ClientError):
    """A message was not acknowledged by the server within its deadline.

    It may still have been stored (the acknowledgement can be what got lost):
    sending it again with the same ``client_id`` is safe, the server keeps one copy.
    """

    code = "send_timeout"
