"""Sign-in: signed tokens, the secret and the join code, user-name rules.

A token is a name, a role (``teacher`` or ``student``) and an expiry, signed
with the server's secret by ``itsdangerous`` (HMAC-SHA1 over a URL-safe
payload; no hand-rolled crypto). Whoever holds the secret can mint tokens:
``chatkit token NAME`` does it for scripts and notebooks, and the page gets one
from ``POST /auth/login`` with a name and the class's join code.

Sans-I/O, like :mod:`chatkit.protocol`: nothing here touches a socket. The
servers call :meth:`Authenticator.authenticate` with a request's headers and
query and get an :class:`Identity` (or ``None`` when sign-in is off), or an
:class:`AuthError` whose ``code`` goes into the ``401`` body:

- ``auth_required``: no token at all;
- ``bad_token``: a token that is not ours (bad signature, garbage, bad name);
- ``expired_token``: ours, but past its expiry.

User names are validated here too (:func:`validate_name`), with or without
sign-in: NFC-normalized, 1 to 32 characters, no control, format (bidi
overrides, zero-width characters) or separator characters, and reserved names
(``AI``, ...) refused in any case or width.
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Literal

from itsdangerous import BadSignature, URLSafeSerializer

from .errors import ChatkitError
from .protocol import RESERVED_NAMES, validate_user

__all__ = [
    "AuthError",
    "Authenticator",
    "Identity",
    "Role",
    "ROLES",
    "RESERVED_NAMES",
    "MAX_NAME",
    "COOKIE_NAME",
    "SECRET_ENV",
    "JOIN_CODE_ENV",
    "TEACHER_CODE_ENV",
    "TokenSigner",
    "load_secret",
    "load_join_code",
    "parse_ttl",
    "validate_name",
    "token_from_request",
    "is_loopback",
    "exposure_problem",
]

Role = Literal["teacher", "student"]
ROLES: tuple[str, ...] = ("teacher", "student")
MAX_NAME = 32
"""Longest user name, in characters after NFC normalization."""
COOKIE_NAME = "chatkit_token"
SECRET_ENV = "CHATKIT_SECRET"
JOIN_CODE_ENV = "CHATKIT_JOIN_CODE"
TEACHER_CODE_ENV = "CHATKIT_TEACHER_CODE"
DEFAULT_TTL_S = 8 * 3600
_SALT = "chatkit-token-v1"


class AuthError(ChatkitError):
    """A request without a valid token; ``code`` is the ``401`` body's code."""

    code = "auth_required"
    status = 401


# ---------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------


def validate_name(name: object) -> str:
    """Return the NFC form of a user name, or raise ``ProtocolError`` (``bad_user``, ``reserved_name``).

    The wire's rule (:func:`chatkit.protocol.validate_user`): not blank, at most
    :data:`MAX_NAME` characters, no leading or trailing spaces, no control,
    format or separator characters (bidi overrides, zero-width characters), and
    none of :data:`RESERVED_NAMES` in any case or width.
    """
    return validate_user(name)


# ---------------------------------------------------------------------------
# Tokens
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a valid token says the bearer is."""

    name: str
    role: Role
    expires: float
    """Unix time after which the token is refused (``expired_token``)."""

    @property
    def is_teacher(self) -> bool:
        return self.role == "teacher"


def parse_ttl(text: str | int | float) -> int:
    """``"8h"``, ``"30m"``, ``"45s"``, ``"2d"`` or a number of seconds → seconds (> 0)."""
    if isinstance(text, (int, float)):
        seconds = int(text)
    else:
        match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
        if match is None:
            raise ValueError(f"bad duration {text!r}: use e.g. 45s, 30m, 8h or 2d")
        seconds = int(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


class TokenSigner:
    """Issue and verify tokens with one secret (``itsdangerous.URLSafeSerializer``)."""

    def __init__(self, secret: str | bytes, *, clock: Callable[[], float] = time.time) -> None:
        if not secret:
            raise ValueError("the secret must not be empty")
        self._serializer = URLSafeSerializer(secret, salt=_SALT)
        self.clock = clock

    def issue(self, name: str, role: Role = "student", ttl: str | int | float = DEFAULT_TTL_S) -> str:
        """A token for ``name`` (validated) with ``role``, valid for ``ttl``."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        name = validate_name(name)
        expires = int(self.clock()) + parse_ttl(ttl)
        return self._serializer.dumps({"n": name, "r": role, "e": expires})

    def verify(self, token: str) -> Identity:
        """The token's identity, or :class:`AuthError` ``bad_token`` / ``expired_token``."""
        try:
            data = self._serializer.loads(token)
            name, role, expires = data["n"], data["r"], data["e"]
            if role not in ROLES or not isinstance(expires, int):
                raise ValueError
            name = validate_name(name)
        except (BadSignature, ValueError, KeyError, TypeError, ChatkitError):
            raise AuthError("the token is not valid for this server", code="bad_token") from None
        if expires <= self.clock():
            raise AuthError("the token has expired; sign in again", code="expired_token")
        return Identity(name, role, float(expires))


# ---------------------------------------------------------------------------
# Secret and join code
# ---------------------------------------------------------------------------


def load_secret(
    secret_file: str | os.PathLike | None = None, env: Mapping[str, str] | None = None
) -> str | None:
    """The signing secret: ``$CHATKIT_SECRET``, else the file's content.

    A secret file that does not exist is created with a fresh random secret,
    mode 0600 (readable by its owner only), so that ``chatkit serve`` and
    ``chatkit token`` given the same file agree. Returns ``None`` when neither
    is given.
    """
    env = os.environ if env is None else env
    if env.get(SECRET_ENV):
        return env[SECRET_ENV]
    if secret_file is None:
        return None
    path = Path(secret_file)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        secret = path.read_text(encoding="utf-8").strip()
        if not secret:
            raise ValueError(f"secret file {path} is empty") from None
        return secret
    secret = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(secret + "\n")
    return secret


def load_join_code(
    join_code: str | None = None,
    join_code_file: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
) -> str | None:
    """The class's join code: the option, else ``$CHATKIT_JOIN_CODE``, else the file's first line."""
    env = os.environ if env is None else env
    if join_code:
        return join_code
    if env.get(JOIN_CODE_ENV):
        return env[JOIN_CODE_ENV]
    if join_code_file is not None:
        code = Path(join_code_file).read_text(encoding="utf-8").strip()
        if not code:
            raise ValueError(f"join code file {join_code_file} is empty")
        return code
    return None


# ---------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------


def token_from_request(
    headers: Mapping[str, str], query: Mapping[str, list[str]] | None = None
) -> str | None:
    """The token a request presents: ``Authorization: Bearer``, else the cookie, else ``?token=``.

    ``headers`` must be case-insensitive or lower-case keyed.
    """
    auth = headers.get("authorization") or headers.get("Authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    cookie = headers.get("cookie") or headers.get("Cookie")
    if cookie:
        jar = SimpleCookie()
        try:
            jar.load(cookie)
        except CookieError:
            jar = SimpleCookie()
        if COOKIE_NAME in jar and jar[COOKIE_NAME].value:
            return jar[COOKIE_NAME].value
    if query:
        values = query.get("token")
        if values and values[-1]:
            return values[-1]
    return None


class Authenticator:
    """The server's sign-in policy: off (no signer) or on (every request needs a token).

    ``join_code`` lets ``POST /auth/login`` hand students a token;
    ``teacher_code`` (optional) hands out teacher tokens the same way.
    """

    def __init__(
        self,
        signer: TokenSigner | None = None,
        *,
        join_code: str | None = None,
        teacher_code: str | None = None,
        ttl: str | int | float = DEFAULT_TTL_S,
    ) -> None:
        if (join_code or teacher_code) and signer is None:
            raise ValueError("a join code needs a secret to sign tokens with")
        self.signer = signer
        self.join_code = join_code
        self.teacher_code = teacher_code
        self.ttl = parse_ttl(ttl)

    @classmethod
    def from_options(
        cls,
        *,
        secret: str | None = None,
        join_code: str | None = None,
        teacher_code: str | None = None,
        ttl: str | int | float = DEFAULT_TTL_S,
    ) -> Authenticator:
        """Sign-in on when a secret or a join code is given (a join code alone gets a random secret)."""
        if secret is None and (join_code or teacher_code):
            secret = secrets.token_urlsafe(32)  # tokens then last as long as the process
        return cls(
            TokenSigner(secret) if secret else None, join_code=join_code, teacher_code=teacher_code, ttl=ttl
        )

    @property
    def enabled(self) -> bool:
        return self.signer is not None

    def authenticate(
        self, headers: Mapping[str, str], query: Mapping[str, list[str]] | None = None
    ) -> Identity | None:
        """The request's identity; ``None`` when sign-in is off; :class:`AuthError` when refused."""
        if self.signer is None:
            return None
        token = token_from_request(headers, query)
        if token is None:
            raise AuthError("sign in first: this server needs a token", code="auth_required")
        return self.signer.verify(token)

    def login(self, name: object, code: object) -> tuple[str, Identity]:
        """Check a join code and answer ``(token, identity)`` for ``name``.

        A wrong code raises ``AuthError("bad_join_code")``; a bad name raises
        ``ProtocolError("bad_user" | "reserved_name")``.
        """
        if self.signer is None or not (self.join_code or self.teacher_code):
            raise AuthError("this server has no join code; ask for a token", code="login_disabled")
        name = validate_name(name)
        role: Role | None = None
        if isinstance(code, str):
            given = code.encode("utf-8")
            if self.teacher_code and hmac.compare_digest(given, self.teacher_code.encode("utf-8")):
                role = "teacher"
            elif self.join_code and hmac.compare_digest(given, self.join_code.encode("utf-8")):
                role = "student"
        if role is None:
            raise AuthError("wrong join code", code="bad_join_code")
        token = self.signer.issue(name, role, self.ttl)
        return token, self.signer.verify(token)


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def is_loopback(host: str) -> bool:
    """Is ``--host`` reachable from this machine only?"""
    host = host.strip().lower()
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def exposure_problem(host: str, *, sign_in: bool, auth: str = "auto") -> str | None:
    """The one line ``chatkit serve`` refuses to start with, or ``None`` when it may start.

    Secure by default, like Jupyter: a server reachable from the network needs
    sign-in (``--join-code`` or a secret) unless ``--auth none`` accepts the risk.
    """
    if sign_in or auth == "none" or is_loopback(host):
        return None
    return (
        f"refusing to serve on {host} without sign-in: anyone on the network could post as anyone; "
        "set --join-code (or CHATKIT_JOIN_CODE / --join-code-file) or --secret-file, "
        "or pass --auth none to accept the risk"
    )
