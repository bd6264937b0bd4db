"""jupyter-server-proxy entry: a "chatkit" launcher tile that starts ``chatkit serve`` on demand.

On Binder only the Jupyter port is exposed; jupyter-server-proxy forwards
``…/chatkit/`` (and ``…/proxy/<port>/``) to a local ``chatkit serve`` that it
starts on first request, probing it with an HTTP GET until it answers. The
SSE server listens on a free port that the page learns from ``config.json``
and reaches through ``…/proxy/<http_port>/``.

Registered in ``pyproject.toml`` under ``jupyter_serverproxy_servers``.
"""

from __future__ import annotations

import os
import sys
from importlib import resources

__all__ = ["server_proxy"]


def server_proxy() -> dict:
    """The jupyter-server-proxy configuration of the chatkit server."""
    db = os.environ.get("CHATKIT_DB", os.path.join(os.path.expanduser("~"), "chatkit.db"))
    return {
        # --allowed-origins self: behind the proxy the page's origin is Jupyter's own (on Binder a public
        # host chatkit cannot know in advance) and the request's Host says the same; Jupyter has already
        # checked the origin and the user's login. Locally the default policy suffices (loopback Host).
        "command": [
            sys.executable,
            "-m",
            "chatkit",
            "serve",
            "--port",
            "{port}",
            "--http-port",
            "0",
            "--db",
            db,
            "--allowed-origins",
            "self",
        ],
        "timeout": 30,
        "absolute_url": False,
        "new_browser_tab": True,
        "launcher_entry": {
            "enabled": True,
            "title": "chatkit",
            "icon_path": str(resources.files("chatkit.web").joinpath("chatkit.svg")),
        },
    }
