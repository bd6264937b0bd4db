"""The origin policy: one allow-list for every route on both ports.

Browsers attach an ``Origin`` header to WebSocket handshakes, to
``EventSource`` and ``fetch`` requests across origins, and to every ``POST``.
A page from another origin (another site, or another port on the same
machine) must not read a room, post into it, or spend the teacher's model
through ``/v1``; :class:`OriginPolicy` decides, the same way for the
WebSocket handshake, SSE, POST, history and ``/v1``.

Allowed by default:

- requests **without** ``Origin`` (non-browser clients: ``ChatClient``,
  ``SSEClient``, ``curl``, ``openai``);
- the server's own page origins: ``http``/``https`` on both of its ports, with
  the ``localhost``, ``127.0.0.1`` and ``[::1]`` spellings (and the host it
  was bound to, when that is a name or address);
- a request that is same-origin with its own ``Host`` header when that host is
  one of the names above: this is how a page reached through
  jupyter-server-proxy (``http://127.0.0.1:8888/chatkit/``) looks to chatkit.
  A DNS-rebinding page cannot use it: its ``Host`` is its own domain name.

``--allowed-origins`` adds origins; ``self`` there accepts any request
same-origin with its ``Host`` (Binder, where the public host name is not known
in advance); ``*`` allows every origin and must be asked for explicitly.

Sans-I/O: the servers call :meth:`OriginPolicy.check` and turn
:class:`OriginRefused` into a ``403`` with ``{"code": "origin_not_allowed"}``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .errors import ChatkitError

__all__ = ["OriginPolicy", "OriginRefused", "LOOPBACK_NAMES", "ANY", "SELF"]

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]")
ANY = "*"
SELF = "self"


class OriginRefused(ChatkitError):
    """A browser request from an origin the policy does not allow (``403``)."""

    code = "origin_not_allowed"
    status = 403


def _norm(origin: str) -> str:
    """Origins compare in lower case, without a trailing slash."""
    return origin.strip().rstrip("/").lower()


def _host_of(host_header: str) -> str:
    """``127.0.0.1:8888`` → ``127.0.0.1``; ``[::1]:80`` → ``[::1]``."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if ":" in host else host


@dataclass
class OriginPolicy:
    """Which browser origins may use the server (see the module docstring)."""

    extra: list[str] = field(default_factory=list)
    """Origins allowed besides the server's own (``--allowed-origins``), or ``*``/``self``."""
    bind_host: str = "127.0.0.1"
    ports: tuple[int, ...] = ()
    """The server's ports (WebSocket and HTTP), set once they are bound."""

    def __post_init__(self) -> None:
        self.extra = [_norm(o) if o not in (ANY, SELF) else o for o in self.extra if o.strip()]
        self._own: frozenset[str] = frozenset()
        self.set_ports(self.ports)

    @classmethod
    def parse(cls, text: str | Iterable[str] | None, bind_host: str = "127.0.0.1") -> OriginPolicy:
        """From ``--allowed-origins`` (comma-separated, or a list; ``None`` = the default)."""
        if text is None:
            items: list[str] = []
        elif isinstance(text, str):
            items = [o for o in text.split(",")]
        else:
            items = list(text)
        return cls([o.strip() for o in items if o.strip()], bind_host)

    @property
    def any_origin(self) -> bool:
        return ANY in self.extra

    @property
    def trusted_hosts(self) -> frozenset[str]:
        """Host names whose same-origin requests are the server's own pages."""
        names = set(LOOPBACK_NAMES)
        host = self.bind_host.lower()
        if host not in WILDCARD_HOSTS:
            names.add(f"[{host}]" if ":" in host and not host.startswith("[") else host)
        return frozenset(names)

    def set_ports(self, ports: Iterable[int | None]) -> None:
        """Record the server's bound ports; its own page origins follow from them."""
        self.ports = tuple(p for p in ports if p)
        self._own = frozenset(
            f"{scheme}://{host}:{port}"
            for scheme in ("http", "https")
            for host in self.trusted_hosts
            for port in self.ports
        )

    def allows(self, origin: str | None, host: str | None = None) -> bool:
        """Is a request with this ``Origin`` (and ``Host`` header) allowed?"""
        if origin is None:
            return True  # not a browser (or a same-origin GET, which browsers send without Origin)
        if self.any_origin:
            return True
        origin = _norm(origin)
        if origin in self._own or origin in self.extra:
            return True
        if host:
            parts = urlsplit(origin)
            same = parts.scheme in ("http", "https") and parts.netloc == host.strip().lower()
            if same and (SELF in self.extra or _host_of(host) in self.trusted_hosts):
                return True
        return False

    def check(self, origin: str | None, host: str | None = None) -> None:
        """Raise :class:`OriginRefused` unless :meth:`allows`."""
        if not self.allows(origin, host):
            shown = origin if origin is not None and len(origin) <= 100 else f"{(origin or '')[:100]}..."
            raise OriginRefused(f"origin {shown!r} is not allowed; see --allowed-origins")

    def cors_headers(self, origin: str | None, host: str | None = None) -> list[tuple[str, str]]:
        """CORS response headers for an allowed cross-origin request (none otherwise).

        The allowed origin is echoed (never ``*`` with credentials), so the page on
        the WebSocket port can call the HTTP port with its sign-in cookie.
        """
        if origin is None:
            return []
        if not self.allows(origin, host):
            return [("Vary", "Origin")]
        return [
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Allow-Credentials", "true"),
            ("Vary", "Origin"),
        ]

    def connect_sources(self, host: str | None = None) -> list[str]:
        """``connect-src`` entries of the page's Content-Security-Policy: its own WS/SSE origins."""
        out = ["'self'"]
        hostname = _host_of(host) if host else None
        for port in self.ports:
            if hostname:
                for scheme in ("http", "https", "ws", "wss"):
                    out.append(f"{scheme}://{hostname}:{port}")
        return out
