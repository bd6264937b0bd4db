"""``chatkit serve``: run the chat server from the command line.

Every option maps to a :class:`~chatkit.server.ServerConfig` field. SIGINT and
SIGTERM shut the server down gracefully: it stops accepting, ends in-flight
replies (storing what was generated, status ``interrupted``), closes sockets
with 1001 and closes the database.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import math
import os
import signal
import sys
from collections.abc import Sequence

from . import __version__, auth, tls
from .errors import ChatkitError, StoreError
from .hub import HubConfig
from .limits import Limits
from .llm import BACKENDS
from .server import ChatServer, ServerConfig

__all__ = ["main", "build_parser"]


def _milliseconds(text: str) -> float:
    """An argparse type: a finite number of milliseconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of milliseconds >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatkit", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"chatkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the chat server", description="Run the chat server.")
    d = ServerConfig()
    h = HubConfig()
    s.add_argument("--host", default=d.host, help="interface to bind (default %(default)s)")
    s.add_argument(
        "--port", type=int, default=d.port, help="WebSocket port; 0 picks a free one (default %(default)s)"
    )
    s.add_argument(
        "--http-port",
        type=int,
        default=None,
        help="SSE/HTTP port (default: WebSocket port + 1; 0 picks a free one; -1 disables)",
    )
    s.add_argument(
        "--db",
        default=d.db,
        help="SQLite file, :memory:, or a postgresql://USER@HOST:PORT/DB URL (default %(default)s)",
    )
    s.add_argument(
        "--store-writer",
        choices=("auto", "thread", "loop"),
        default=d.store_writer,
        help="SQLite statements on the event loop (about half the CPU per store call) or on the "
        "store's own thread; auto: the loop, or the thread with --broker (default %(default)s)",
    )
    s.add_argument(
        "--llm",
        choices=BACKENDS,
        default=d.llm,
        help="reply backend; auto = openai when OPENAI_API_KEY or OPENAI_BASE_URL is set, else offline",
    )
    s.add_argument(
        "--first-token-ms",
        type=float,
        default=d.first_token_ms,
        help="offline tutor: delay before the first piece",
    )
    s.add_argument(
        "--tokens-per-s",
        type=float,
        default=d.tokens_per_s,
        help="offline tutor: pace (0 = as fast as possible)",
    )
    s.add_argument(
        "--echo-delay-ms", type=float, default=d.echo_delay_ms, help="echo backend: delay between pieces"
    )
    s.add_argument(
        "--echo-chunks", type=int, default=None, help="echo backend: a fixed number of pieces per reply"
    )
    s.add_argument(
        "--echo-stamp", action="store_true", help="echo backend: pieces carry time.monotonic() (benchmarks)"
    )
    s.add_argument(
        "--echo-schedule",
        action="store_true",
        help="echo backend: pieces keep a timetable; a late loop gets those due at once (benchmarks)",
    )
    s.add_argument(
        "--pace-tick-ms",
        type=_milliseconds,
        default=d.pace_tick_ms,
        help="paced streamers (tutor, echo with a delay) wake on a shared tick of this many ms; 0 = a timer per piece",
    )
    s.add_argument(
        "--reply-queue", type=int, default=h.reply_queue, help="replies waiting per room before 'busy'"
    )
    s.add_argument(
        "--allowed-origins",
        default=None,
        help="comma-separated browser origins allowed besides the server's own pages; "
        "'self' = same origin as the request's Host (Binder), '*' = any (default: own pages only)",
    )
    s.add_argument(
        "--max-message-bytes",
        type=int,
        default=d.max_message_bytes,
        help="largest frame; bigger ones close with 1009",
    )
    s.add_argument("--max-text", type=int, default=h.max_text, help="longest chat message in characters")
    s.add_argument(
        "--rate-limit", type=float, default=h.rate_limit, help="chat messages per second per connection"
    )
    s.add_argument(
        "--ai-replies",
        choices=("room", "sender"),
        default=h.ai_replies,
        help="stream AI replies to the whole room, or to the sender only as the seed does",
    )
    s.add_argument(
        "--context-messages",
        type=int,
        default=h.context_messages,
        help="messages of history sent to the model",
    )
    s.add_argument(
        "--llm-idle-timeout",
        type=float,
        default=h.llm_idle_timeout,
        help="cut a stream silent for this many seconds",
    )
    s.add_argument(
        "--presence-tick",
        type=float,
        default=h.presence_tick,
        help="seconds a room collects joins/leaves for ?presence=batch members (default %(default)s)",
    )
    s.add_argument(
        "--gc",
        choices=("tuned", "default"),
        default="tuned",
        help="Python's cyclic garbage collector once the server is up: 'tuned' freezes the objects of "
        "start-up and collects less often (see tune_gc); 'default' leaves Python's settings "
        "(default %(default)s)",
    )
    s.add_argument(
        "--coalesce-chunks",
        action="store_true",
        help="merge the deltas a stream yields within one event-loop iteration into one ai_chunk frame",
    )
    s.add_argument(
        "--presence-rate",
        type=float,
        default=h.presence_rate,
        help="presence frames per second one room sends at most: a big room's tick grows "
        "to members/rate (default %(default)s)",
    )
    s.add_argument(
        "--online-list-max",
        type=int,
        default=h.online_list_max,
        help="names in a ?presence=batch member's connection frame, with online_count for all; "
        "0: no limit (default %(default)s)",
    )
    s.add_argument(
        "--broker",
        default=None,
        help="redis://HOST:PORT/DB: one chat across every process on this broker (default: none)",
    )
    s.add_argument(
        "--broker-heartbeat",
        type=float,
        default=d.broker_heartbeat,
        help="presence refresh period in seconds; a dead process's members leave after 3 (default %(default)s)",
    )
    s.add_argument("--log-level", default="INFO", help="logging level (default %(default)s)")
    _add_security_options(s)

    t = sub.add_parser(
        "token",
        help="print a sign-in token for scripts and notebooks",
        description=f"Print a token signed with the server's secret (--secret-file or ${auth.SECRET_ENV}).",
    )
    t.add_argument("name", help="the user name the token is bound to")
    t.add_argument("--role", choices=auth.ROLES, default="student", help="(default %(default)s)")
    t.add_argument("--ttl", default="8h", help="lifetime, e.g. 45m, 8h, 2d (default %(default)s)")
    t.add_argument(
        "--secret-file",
        default=None,
        help="file holding the signing secret (created, mode 0600, on first use)",
    )
    return parser


def _add_security_options(s: argparse.ArgumentParser) -> None:
    lim = Limits()
    g = s.add_argument_group("sign-in and TLS")
    g.add_argument(
        "--join-code",
        default=None,
        help=f"turn sign-in on: the page asks for a name and this code (also ${auth.JOIN_CODE_ENV})",
    )
    g.add_argument(
        "--join-code-file", default=None, help="read the join code from a file (stays out of shell history)"
    )
    g.add_argument(
        "--teacher-code",
        default=None,
        help=f"a second code that signs in with the teacher role (also ${auth.TEACHER_CODE_ENV})",
    )
    g.add_argument(
        "--secret-file",
        default=None,
        help=f"signing secret for tokens, created (mode 0600) on first use (also ${auth.SECRET_ENV}); "
        "turns sign-in on",
    )
    g.add_argument(
        "--auth",
        choices=("auto", "none"),
        default="auto",
        help="auto: sign-in when a join code or secret is set, and required off loopback; "
        "none: accept a network-reachable server without sign-in",
    )
    g.add_argument(
        "--token-ttl", default="8h", help="lifetime of tokens the page gets at sign-in (default %(default)s)"
    )
    g.add_argument(
        "--certfile",
        default=None,
        help="TLS certificate chain (PEM): serve https:// and wss:// on both ports",
    )
    g.add_argument("--keyfile", default=None, help="TLS private key (PEM), if not in --certfile")
    g = s.add_argument_group("limits")
    g.add_argument(
        "--max-connections",
        type=int,
        default=lim.max_connections,
        help="open connections per port (default from the descriptor limit: %(default)s); "
        "past it: 503 + Retry-After",
    )
    g.add_argument(
        "--max-connections-per-ip",
        type=int,
        default=0,
        help="open connections per port and client address (default: a quarter of --max-connections)",
    )
    g.add_argument(
        "--max-streams-per-ip",
        type=int,
        default=lim.max_streams_per_ip,
        help="open SSE streams per client address (default %(default)s)",
    )
    g.add_argument(
        "--backlog",
        type=int,
        default=0,
        help="listen backlog per port (default: derived from the descriptor limit, 8-100)",
    )
    g.add_argument(
        "--head-timeout",
        type=float,
        default=lim.head_timeout,
        help="seconds to send a whole request head (default %(default)s)",
    )
    g.add_argument(
        "--body-timeout",
        type=float,
        default=lim.body_timeout,
        help="seconds to send a whole request body (default %(default)s)",
    )
    g.add_argument(
        "--v1-rate",
        type=float,
        default=lim.v1_rate,
        help="/v1 completions per second per token or address (default %(default)s)",
    )
    g.add_argument(
        "--v1-max-tokens",
        type=int,
        default=lim.v1_max_tokens,
        help="ceiling of a /v1 completion's max_tokens (default %(default)s)",
    )
    g.add_argument(
        "--handshake-rate",
        type=float,
        default=lim.handshake_rate,
        help="WebSocket handshakes and SSE streams per second per token or address (default %(default)s)",
    )
    g.add_argument(
        "--max-upload-bytes",
        type=int,
        default=lim.max_upload_bytes,
        help="largest file upload (POST /files) in bytes (default %(default)s); past it: 413",
    )
    g.add_argument(
        "--rooms-per-ip",
        type=int,
        default=lim.rooms_per_ip,
        help="new rooms a client address may create per hour (default %(default)s)",
    )


def security_from_args(args: argparse.Namespace) -> dict:
    """The sign-in, origin, TLS and limit settings of ``chatkit serve`` (ServerConfig fields).

    Raises :class:`SystemExit` with one line when the server must not start.
    """
    try:
        join_code = auth.load_join_code(args.join_code, args.join_code_file)
        teacher_code = args.teacher_code or os.environ.get(auth.TEACHER_CODE_ENV) or None
        secret = auth.load_secret(args.secret_file)
        authenticator = auth.Authenticator.from_options(
            secret=secret, join_code=join_code, teacher_code=teacher_code, ttl=args.token_ttl
        )
    except (OSError, ValueError) as exc:
        raise SystemExit(f"chatkit: {exc}") from None
    problem = auth.exposure_problem(args.host, sign_in=authenticator.enabled, auth=args.auth)
    if problem is not None:
        raise SystemExit(f"chatkit: {problem}")
    ssl_context = None
    if args.certfile:
        try:
            ssl_context = tls.server_context(args.certfile, args.keyfile)
        except (OSError, ValueError) as exc:
            raise SystemExit(f"chatkit: cannot load the TLS certificate: {exc}") from None
    elif args.keyfile:
        raise SystemExit("chatkit: --keyfile needs --certfile")
    limits = Limits(
        max_connections=args.max_connections,
        max_connections_per_ip=args.max_connections_per_ip,
        max_streams_per_ip=args.max_streams_per_ip,
        head_timeout=args.head_timeout,
        body_timeout=args.body_timeout,
        backlog=args.backlog,
        v1_rate=args.v1_rate,
        v1_max_tokens=args.v1_max_tokens,
        handshake_rate=args.handshake_rate,
        rooms_per_ip=args.rooms_per_ip,
        max_upload_bytes=args.max_upload_bytes,
    )
    return {"auth": authenticator, "ssl": ssl_context, "limits": limits}


def issue_token(args: argparse.Namespace) -> int:
    """``chatkit token NAME``: print a token (stdout), or one line why not (stderr, exit 2)."""
    try:
        secret = auth.load_secret(args.secret_file)
        if secret is None:
            raise ValueError(f"give --secret-file or set ${auth.SECRET_ENV} (the server's secret)")
        print(auth.TokenSigner(secret).issue(args.name, args.role, args.ttl))
    except (OSError, ValueError, ChatkitError) as exc:
        print(f"chatkit token: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2
    return 0


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
        presence_tick=args.presence_tick,
        online_list_max=args.online_list_max,
        presence_rate=args.presence_rate,
        coalesce_chunks=args.coalesce_chunks,
    )
    return ServerConfig(
        **security_from_args(args),
        host=args.host,
        port=args.port,
        http_port=args.http_port,
        db=args.db,
        store_writer=args.store_writer,
        llm=args.llm,
        allowed_origins=origins,
        max_message_bytes=args.max_message_bytes,
        first_token_ms=args.first_token_ms,
        tokens_per_s=args.tokens_per_s,
        echo_delay_ms=args.echo_delay_ms,
        echo_chunks=args.echo_chunks,
        echo_stamp=args.echo_stamp,
        echo_schedule=args.echo_schedule,
        pace_tick_ms=args.pace_tick_ms,
        hub=hub,
        broker=args.broker,
        broker_heartbeat=args.broker_heartbeat,
    )


GC_THRESHOLD = (20_000, 20, 20)
"""Young objects between two collections (Python's default is 700), and how many collections of
one generation trigger one of the next (10 and 10 by default)."""


def tune_gc(threshold: tuple[int, int, int] = GC_THRESHOLD) -> None:
    """Tune the cyclic garbage collector for a long-running server process (not for a kernel).

    A server holds thousands of long-lived objects per hundred connections; with Python's
    defaults a full (oldest-generation) collection walks every one of them, start-up's
    too (imports, the protocol tables), in pauses of ~90 ms at 2,000 connections —
    measured in a presence storm (``benchmarks/connections.py``), where such pauses stall
    every handshake in flight. This collects what start-up left, moves the survivors
    out of the collector's sight for good (:func:`gc.freeze`), and collects young objects
    less often: over a storm run, 58-83 ms of collection instead of 343-429 ms, and no
    full collection at all (``benchmarks/README.md``). Reference counting frees almost
    everything anyway; cycles are still collected, later.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*threshold)


async def serve_until_signalled(config: ServerConfig, *, gc_mode: str = "tuned") -> None:
    """Run a server until SIGINT or SIGTERM, then shut it down gracefully."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with ChatServer(config) as server:
        if gc_mode == "tuned":
            tune_gc()
        describe = getattr(server.streamer, "describe", None)
        print(
            f"chatkit {__version__} — replies by {server.backend}" + (f" ({describe()})" if describe else ""),
            flush=True,
        )
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
    if args.command == "token":
        return issue_token(args)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("chatkit.websockets").setLevel(logging.WARNING)
    if args.command == "serve":
        try:
            asyncio.run(serve_until_signalled(config_from_args(args), gc_mode=args.gc))
        except OSError as exc:
            print(f"chatkit: cannot start: {exc}", file=sys.stderr)
            return 1
        except StoreError as exc:  # one line naming the file, not a traceback
            print(f"chatkit: cannot start: {exc.message}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
