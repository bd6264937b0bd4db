"""The front door of both ports: origin, content type, sign-in and limits — no I/O.

Every request, on the WebSocket port and on the HTTP port, passes one
:class:`Guard` before it reaches a route:

1. the :class:`~chatkit.origins.OriginPolicy` (``403 origin_not_allowed``);
2. state-changing routes need ``Content-Type: application/json`` (``415
   unsupported_media_type``), so a cross-site "simple" form or ``text/plain``
   POST never reaches them;
3. the :class:`~chatkit.auth.Authenticator` when sign-in is on (``401
   auth_required | bad_token | expired_token``);
4. the caller's rate-limit key: the token's name, else the client address —
   never a name the client declares.

The servers turn a :class:`Refused` (or :class:`~chatkit.auth.AuthError`,
:class:`~chatkit.origins.OriginRefused`) into a coded JSON answer with
:func:`refusal_response`. Connection caps (:class:`~chatkit.limits.ConnectionLimiter`)
are counted here too, one per port, plus SSE streams per address.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from . import protocol
from .auth import Authenticator, AuthError, Identity, validate_name
from .endpoints import Headers, HTTPResponse, json_response
from .errors import ChatkitError, ProtocolError
from .limits import ConnectionLimiter, ConnectionSlots, KeyedRateLimiter, Limits, RoomQuota
from .origins import OriginPolicy, OriginRefused

__all__ = ["Guard", "Admitted", "Refused", "refusal_response", "redact", "SECURITY_HEADERS"]

logger = logging.getLogger("chatkit.guard")

SECURITY_HEADERS: Headers = [
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
]
"""Sent with every answer of both ports."""

_TOKEN_IN_QUERY = re.compile(r"(?i)([?&]token=)[^&#]*")


def redact(target: str) -> str:
    """A request target fit for a log line: ``?token=`` values replaced by ``***``."""
    return _TOKEN_IN_QUERY.sub(r"\1***", target)


class Refused(ChatkitError):
    """A request the guard refuses: ``status`` and ``code`` go into the coded answer."""

    def __init__(self, status: int, code: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(
            message,
            code=code,
            retry_after_ms=None if retry_after is None else max(1, int(retry_after * 1000 + 0.999)),
        )
        self.status = status
        self.retry_after = retry_after


def refusal_response(exc: ChatkitError, extra: Headers | None = None) -> HTTPResponse:
    """The coded JSON answer to a refusal (401 with ``WWW-Authenticate``, 429/503 with ``Retry-After``)."""
    status = getattr(exc, "status", 400)
    headers = list(extra or []) + SECURITY_HEADERS
    if status == 401:
        headers.append(("WWW-Authenticate", f'Bearer error="{exc.code}"'))
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers.append(("Retry-After", str(max(1, int(retry_after + 0.999)))))
    # refusal_frame: the refused message's client_id (set by the POST route) and retry_after_ms
    return json_response(status, protocol.refusal_frame(exc), headers)


@dataclass(frozen=True, slots=True)
class Admitted:
    """A request the guard let through: who it is (``None`` without sign-in) and its rate-limit key."""

    identity: Identity | None
    key: str
    address: str

    @property
    def is_teacher(self) -> bool:
        """Teachers moderate; without sign-in everybody may (the classroom on one laptop)."""
        return self.identity is None or self.identity.is_teacher


def _is_json(content_type: str | None) -> bool:
    return (content_type or "").split(";", 1)[0].strip().lower() == "application/json"


@dataclass
class Guard:
    """Sign-in, origins and limits of one server (both ports)."""

    auth: Authenticator = field(default_factory=Authenticator)
    origins: OriginPolicy = field(default_factory=OriginPolicy)
    limits: Limits = field(default_factory=Limits)
    message_rate: float = 5.0
    """Chat messages per second per token, WebSocket and POST together (``--rate-limit``)."""
    message_burst: int = 10

    def __post_init__(self) -> None:
        lim = self.limits
        self.connections = {
            port: ConnectionSlots(lim.max_connections, lim.max_connections_per_ip) for port in ("ws", "http")
        }
        self.streams = ConnectionLimiter(None, lim.max_streams_per_ip)
        self.messages = _Limiters(self.message_rate, self.message_burst, lim.per_ip_factor)
        self.completions = _Limiters(lim.v1_rate, lim.v1_burst, lim.per_ip_factor)
        self.handshakes = _Limiters(lim.handshake_rate, lim.handshake_burst, lim.per_ip_factor)
        self.rooms = RoomQuota(lim.rooms_per_ip)

    @property
    def sign_in(self) -> bool:
        return self.auth.enabled

    # -- requests --------------------------------------------------------------

    def admit(
        self,
        headers: Mapping[str, str],
        query: Mapping[str, list[str]] | None,
        address: str,
        *,
        state_changing: bool = False,
        signed: bool = True,
    ) -> Admitted:
        """Check one request (``headers`` keyed in lower case). Raises a coded refusal.

        ``signed=False`` for routes anyone may use (the page, ``/health``, sign-in itself).
        """
        self.origins.check(headers.get("origin"), headers.get("host"))
        if state_changing and not _is_json(headers.get("content-type")):
            raise Refused(415, "unsupported_media_type", "send the body as Content-Type: application/json")
        identity = self.auth.authenticate(headers, query) if signed else None
        key = f"user:{identity.name}" if identity is not None else f"ip:{address}"
        return Admitted(identity, key, address)

    def name(self, admitted: Admitted, claimed: object) -> str | None:
        """The name a request acts under: the token's; a different claimed name is refused.

        Without sign-in the claimed name is validated (NFC, no invisible
        characters, not reserved) and used; ``None`` means "give me a guest name".
        """
        if admitted.identity is not None:
            if claimed not in (None, "") and (
                not isinstance(claimed, str) or _same_name(claimed) != admitted.identity.name
            ):
                raise Refused(
                    403,
                    "name_mismatch",
                    f"you are signed in as {admitted.identity.name!r}; the name comes from your token",
                )
            return admitted.identity.name
        if claimed in (None, ""):
            return None
        if not isinstance(claimed, str):
            raise ProtocolError("field 'user' must be a string", code="bad_field")
        return validate_name(claimed)

    def rate(self, limiters: _Limiters, admitted: Admitted, what: str) -> None:
        """Spend one token of ``admitted``'s bucket or raise ``429 rate_limited``."""
        limiter = limiters.per_token if admitted.identity is not None else limiters.per_ip
        if not limiter.take(admitted.key):
            raise Refused(
                429,
                "rate_limited",
                f"too many {what}; slow down",
                retry_after=limiter.retry_after(admitted.key),
            )

    def new_room(self, admitted: Admitted, exists: bool) -> None:
        """Count a room ``admitted`` creates (``exists=False``), or raise ``429 too_many_rooms``."""
        if not exists and not self.rooms.allow(admitted.address):
            raise Refused(
                429,
                "too_many_rooms",
                f"more than {self.limits.rooms_per_ip} new rooms per hour from your address",
                retry_after=60,
            )

    # -- the page --------------------------------------------------------------

    def page_headers(self, host: str | None) -> Headers:
        """Content-Security-Policy and friends for the chat page's files."""
        sources = self.origins.connect_sources(host)
        connect = " ".join(sources)
        # Attachments (pictures, voice messages) are downloaded from the HTTP port's /files.
        files = " ".join(s for s in sources if not s.startswith(("ws:", "wss:")))
        csp = (
            f"default-src 'self'; script-src 'self'; style-src 'self'; img-src {files} data: blob:; "
            f"media-src {files} blob:; connect-src {connect}; frame-ancestors 'self'; "
            "base-uri 'none'; form-action 'self'; object-src 'none'"
        )
        return [("Content-Security-Policy", csp), ("X-Frame-Options", "SAMEORIGIN")]


class _Limiters:
    """One rate, kept per token (signed in) or per address (``factor`` times it, for a shared address)."""

    def __init__(self, rate: float, burst: int, factor: float) -> None:
        self.per_token = KeyedRateLimiter(rate, burst)
        self.per_ip = KeyedRateLimiter(rate * factor, max(1, int(burst * factor)))


def _same_name(name: str) -> str | None:
    try:
        return validate_name(name)
    except ChatkitError:
        return None


# Re-exported for the servers: every refusal they may meet.
REFUSALS = (Refused, AuthError, OriginRefused)
