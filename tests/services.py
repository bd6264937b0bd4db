"""Real Redis, PostgreSQL and nginx for the tests, each on a free port in a temporary directory.

Nothing here mocks an engine: every service is the Debian binary, started by
the fixture and stopped in its teardown. Without the binary a test skips —
unless ``CI=true``, where a missing engine fails the test (``.ci/run``
installs ``redis-server``, ``postgresql`` and ``nginx``).

PostgreSQL refuses to run as root: as root the cluster's directory is chowned
to the ``postgres`` user and the binaries run through ``runuser``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "STARTUP_TIMEOUT",
    "free_port",
    "require",
    "wait_for_port",
    "die_with_parent",
    "ChatkitProcess",
    "RedisService",
    "PostgresService",
    "NginxService",
]

STARTUP_TIMEOUT = 20.0
"""Seconds a service may take to accept connections (the machine is shared and busy)."""

PG_BIN = Path(os.environ.get("CHATKIT_PG_BIN", "/usr/lib/postgresql/15/bin"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require(binary: str | Path, what: str) -> str:
    """The binary's path; skip the test without it (fail in CI)."""
    path = str(binary) if Path(binary).is_file() else shutil.which(str(binary))
    if path is None:
        import pytest  # (benchmarks import this module without pytest)

        message = f"{what} is not installed ({binary} not found; apt-get install {what})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = STARTUP_TIMEOUT) -> None:
    """Block until something accepts on 127.0.0.1:``port`` (or the process died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


def die_with_parent(argv: list[str]) -> list[str]:
    """``argv`` run so that the kernel SIGKILLs it when the process that started it dies
    (``setpriv --pdeathsig``, util-linux): a test run killed from outside (a timeout, ^C
    twice, ``kill -9`` of pytest) leaves no server behind, even though no finalizer ran.
    Start it from the test's main thread: the signal follows the *thread* that forked."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *argv] if setpriv else argv


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class RedisService:
    """``redis-server`` without persistence: a restart loses every key, as an outage would."""

    port: int = field(default_factory=free_port)
    dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="chatkit-redis-"))
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisService:
        binary = require("redis-server", "redis-server")
        self.proc = subprocess.Popen(
            die_with_parent(
                [
                    binary,
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    self.dir,
                    "--loglevel",
                    "warning",
                ]
            ),
            stdout=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.proc)
        return self

    def kill(self) -> None:
        """SIGKILL: an outage (clients see their connections drop)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        """Kill and start again on the same port: every key and subscription is gone."""
        self.kill()
        self.start()

    def stop(self) -> None:
        _stop(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class PostgresService:
    """A throw-away PostgreSQL 15 cluster (trust auth on loopback); one database per test."""

    port: int = field(default_factory=free_port)
    dir: str = ""
    _databases: int = 0

    def _run(self, *cmd: str) -> None:
        argv = [str(PG_BIN / cmd[0]), *cmd[1:]]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def start(self) -> PostgresService:
        require(PG_BIN / "initdb", "postgresql")
        if os.geteuid() == 0 and shutil.which("runuser") is None:
            import pytest

            pytest.fail("running as root needs runuser to start PostgreSQL as 'postgres'")
        # A directory in /tmp itself: pytest's tmp_path is private to root, and the
        # server runs as 'postgres'.
        self.dir = tempfile.mkdtemp(prefix="chatkit-pg-")
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
        self._run(
            "initdb",
            "-D",
            f"{self.dir}/data",
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale",
            "C",
        )
        self._run(
            "pg_ctl",
            "-D",
            f"{self.dir}/data",
            "-w",
            "-t",
            str(int(STARTUP_TIMEOUT)),
            "-l",
            f"{self.dir}/log",
            "-o",
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            "start",
        )
        return self

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    async def new_database(self) -> str:
        """A fresh, empty database on this cluster; returns its DSN."""
        import asyncpg

        self._databases += 1
        name = f"t{os.getpid()}_{self._databases}"
        con = await asyncpg.connect(self.dsn())
        try:
            await con.execute(f'CREATE DATABASE "{name}"')
        finally:
            await con.close()
        return self.dsn(name)

    def stop(self) -> None:
        if self.dir:
            try:
                self._run("pg_ctl", "-D", f"{self.dir}/data", "-m", "immediate", "-w", "stop")
            except subprocess.CalledProcessError:
                pass
            shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class NginxService:
    """nginx running ``conf`` (a full configuration) from a temporary prefix directory."""

    conf: str
    port: int
    dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="chatkit-nginx-"))
    proc: subprocess.Popen | None = None

    def start(self) -> NginxService:
        binary = require("nginx", "nginx")
        path = Path(self.dir) / "nginx.conf"
        path.write_text(self.conf)
        self.proc = subprocess.Popen(
            die_with_parent([binary, "-c", str(path), "-p", self.dir, "-e", f"{self.dir}/error.log"]),
            stdout=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.proc)
        return self

    def stop(self) -> None:
        _stop(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


READY_LINE = "Press Ctrl+C"
"""The last line of ``chatkit serve``'s banner, printed once it serves."""


def cluster_options(db: str, broker: str, *, heartbeat: float = 0.3, log_level: str = "WARNING") -> list[str]:
    """``chatkit serve`` options for one process of a cluster on ``db`` and the Redis ``broker``:
    echo replies paced at 20 ms a piece (a kill lands mid-reply), a short heartbeat (a dead
    process's members and lease expire after about three beats)."""
    return [
        "--db",
        db,
        "--broker",
        broker,
        "--broker-heartbeat",
        str(heartbeat),
        "--llm",
        "echo",
        "--echo-delay-ms",
        "20",
        "--log-level",
        log_level,
    ]


@dataclass(eq=False)
class ChatkitProcess:
    """One ``chatkit serve`` process on free ports, in a process group of its own.

    :meth:`launch` only forks (call it from the test's thread: see :func:`die_with_parent`);
    :meth:`wait_ready` blocks until it serves (run it in a thread from async code).
    :meth:`stop` ends the whole group (SIGTERM, then SIGKILL) — the ``chatkit_serve``
    fixture calls it for every process it started, whether the test passed or not.
    """

    options: list[str]
    port: int = field(default_factory=free_port)
    http_port: int | None = None
    """The SSE/HTTP port; ``None``: ``--http-port -1`` (no HTTP server)."""
    proc: subprocess.Popen | None = None
    log: str | None = None
    """Append the process's stderr (its log) to this file; ``None``: the test's stderr."""

    def launch(self) -> ChatkitProcess:
        argv = [sys.executable, "-m", "chatkit", "serve", "--port", str(self.port)]
        argv += ["--http-port", str(self.http_port if self.http_port is not None else -1), *self.options]
        stderr = open(self.log, "a") if self.log else None  # noqa: SIM115 (the child holds it)
        try:
            self.proc = subprocess.Popen(
                die_with_parent(argv),
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                start_new_session=True,
            )
        finally:
            if stderr is not None:
                stderr.close()
        return self

    def wait_ready(self) -> ChatkitProcess:
        """Block until the process printed its banner (``chatkit serve`` prints it once
        every port listens and the broker is started): an event, not a poll."""
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(READY_LINE):
                # Keep reading what it may print later, so that it never blocks on a full pipe.
                threading.Thread(target=self.proc.stdout.read, daemon=True).start()
                return self
        self.proc.wait()
        raise RuntimeError(f"chatkit serve exited with {self.proc.returncode} before listening")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def url(self, room: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/chat/{room}/"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the process (and its group): a crash, no goodbye to anyone."""
        self._signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def stop(self) -> None:
        """SIGTERM the group, SIGKILL what is left after a grace period; reap the process."""
        if self.proc is None:
            return
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(STARTUP_TIMEOUT / 4)
        except subprocess.TimeoutExpired:
            pass
        self._signal(signal.SIGKILL)  # the group: anything the process left behind, too
        self.proc.wait()

    def _signal(self, sig: int) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, sig)  # its own session: the group id is its pid
        except ProcessLookupError:
            pass
