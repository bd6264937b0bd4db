"""chatkit — a teaching toolkit for real-time chat with streamed AI replies.

The package re-creates the seed document's Django Channels chat on the
``websockets`` asyncio API with a SQLite store, keeps its wire protocol, and
adds what real chat needs: resume by id, idempotent sends, presence, typing,
read receipts, Server-Sent Events and an offline AI tutor.
"""

from __future__ import annotations

from .errors import ChatkitError, LLMError, ProtocolError, StoreError
from .hub import HubConfig
from .server import ChatServer, ServerConfig

__version__ = "0.1.0"

__all__ = [
    "ChatServer",
    "ServerConfig",
    "HubConfig",
    "ChatkitError",
    "ProtocolError",
    "StoreError",
    "LLMError",
    "__version__",
]
