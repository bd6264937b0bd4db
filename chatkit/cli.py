"""``chatkit serve``: run the chat server from the command line.

Every option maps to a :class:`~chatkit.server.ServerConfig` field. SIGINT and
SIGTERM shut the server down gracefully: it stops accepting, ends in-flight
replies (storing what was generated, status ``interrupted``), closes sockets
with 1001 and closes the database.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Sequence

from . import __version__
from .hub import HubConfig
from .llm import BACKENDS
from .server import ChatServer, ServerConfig

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatkit", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"chatkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the chat server", description="Run the chat server.")
    d = ServerConfig()
    h = HubConfig()
    s.add_argument("--host", default=d.host, help="interface to bind (default %(default)s)")
    s.add_argument("--port", type=int, default=d.port, help="WebSocket port; 0 picks a free one (default %(default)s)")
    s.add_argument("--http-port", type=int, default=None,
                   help="SSE/HTTP port (default: WebSocket port + 1; 0 picks a free one; -1 disables)")
    s.add_argument("--db", default=d.db, help="SQLite file, :memory:, or a postgresql://USER@HOST:PORT/DB URL (default %(default)s)")
    s.add_argument("--llm", choices=BACKENDS, default=d.llm,
                   help="reply backend; auto = openai when OPENAI_API_KEY or OPENAI_BASE_URL is set, else offline")
    s.add_argument("--first-token-ms", type=float, default=d.first_token_ms, help="offline tutor: delay before the first piece")
    s.add_argument("--tokens-per-s", type=float, default=d.tokens_per_s, help="offline tutor: pace (0 = as fast as possible)")
    s.add_argument("--echo-delay-ms", type=float, default=d.echo_delay_ms, help="echo backend: delay between pieces")
    s.add_argument("--echo-chunks", type=int, default=None, help="echo backend: a fixed number of pieces per reply")
    s.add_argument("--echo-stamp", action="store_true", help="echo backend: pieces carry time.monotonic() (benchmarks)")
    s.add_argument("--reply-queue", type=int, default=h.reply_queue, help="replies waiting per room before 'busy'")
    s.add_argument("--allowed-origins", default=None,
                   help="comma-separated browser origins allowed to connect (default: any)")
    s.add_argument("--max-message-bytes", type=int, default=d.max_message_bytes, help="largest frame; bigger ones close with 1009")
    s.add_argument("--max-text", type=int, default=h.max_text, help="longest chat message in characters")
    s.add_argument("--rate-limit", type=float, default=h.rate_limit, help="chat messages per second per connection")
    s.add_argument("--ai-replies", choices=("room", "sender"), default=h.ai_replies,
                   help="stream AI replies to the whole room, or to the sender only as the seed does")
    s.add_argument("--context-messages", type=int, default=h.context_messages, help="messages of history sent to the model")
    s.add_argument("--llm-idle-timeout", type=float, default=h.llm_idle_timeout, help="cut a stream silent for this many seconds")
    s.add_argument("--log-level", default="INFO", help="logging level (default %(default)s)")
    return parser


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    origins = None
    if args.allowed_origins:
        origins = [o.strip() for o in args.allowed_origins.split(",") if o.strip()]
    hub = HubConfig(
        ai_replies=args.ai_replies,
        context_messages=args.context_messages,
        llm_idle_timeout=args.llm_idle_timeout,
        rate_limit=args.rate_limit,
        rate_burst=max(1, int(args.rate_limit * 2)),
        max_text=args.max_text,
        reply_queue=args.reply_queue,
    )
    return ServerConfig(
        host=args.host,
        port=args.port,
        http_port=args.http_port,
        db=args.db,
        llm=args.llm,
        allowed_origins=origins,
        max_message_bytes=args.max_message_bytes,
        first_token_ms=args.first_token_ms,
        tokens_per_s=args.tokens_per_s,
        echo_delay_ms=args.echo_delay_ms,
        echo_chunks=args.echo_chunks,
        echo_stamp=args.echo_stamp,
        hub=hub,
    )


async def serve_until_signalled(config: ServerConfig) -> None:
    """Run a server until SIGINT or SIGTERM, then shut it down gracefully."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with ChatServer(config) as server:
        describe = getattr(server.streamer, "describe", None)
        print(f"chatkit {__version__} — replies by {server.backend}"
              + (f" ({describe()})" if describe else ""), flush=True)
        print(f"  chat page   {server.url}", flush=True)
        print(f"  WebSocket   {server.ws_url('demo')}", flush=True)
        if server.http_url:
            print(f"  SSE stream  {server.http_url}sse/chat/demo/", flush=True)
            print(f"  OpenAI API  {server.http_url}v1", flush=True)
        print(f"  health      {server.url}health", flush=True)
        print(f"  database    {config.db}", flush=True)
        print("Press Ctrl+C to stop.", flush=True)
        await stop.wait()
        print("shutting down...", flush=True)
    print("stopped.", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("chatkit.websockets").setLevel(logging.WARNING)
    if args.command == "serve":
        try:
            asyncio.run(serve_until_signalled(config_from_args(args)))
        except OSError as exc:
            print(f"chatkit: cannot start: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
