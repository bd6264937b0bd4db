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
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = [
    "STARTUP_TIMEOUT",
    "free_port",
    "require",
    "wait_for_port",
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
            ],
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
            [binary, "-c", str(path), "-p", self.dir, "-e", f"{self.dir}/error.log"],
            stdout=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.proc)
        return self

    def stop(self) -> None:
        _stop(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)
