"""Shared helpers of the benchmarks: server processes, CPU and memory readings,
percentiles, tables and JSON results.

Every benchmark starts chatkit and the baseline as **separate processes**
(``chatkit serve`` and ``baseline_server.py``) and drives them from this
process (the load generator), reading each process's CPU time from
``/proc``, so a result limited by the load generator shows as such.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = Path(os.environ.get("CHATKIT_BENCH_RESULTS") or HERE / "results")
"""Where results (and profiles) are written; ``CHATKIT_BENCH_RESULTS`` moves them (scratch runs)."""
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_nofile(target: int = 8192) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new = min(max(soft, target), hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return new


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class CpuMeter:
    """CPU of the server process and of this (load generator) process over a window.

    ``server_s`` is the server's CPU seconds (user + system, all threads) in the
    window: divided by the frames the clients received in it, that is the figure
    that travels between machines (see :func:`cpu_per_1k`), because it moves far
    less with the load generator than throughput does on a shared 2-core machine.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def __enter__(self) -> CpuMeter:
        self.t0 = time.monotonic()
        self.s0 = cpu_seconds(self.pid)
        self.l0 = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = max(1e-9, time.monotonic() - self.t0)
        self.server_s = cpu_seconds(self.pid) - self.s0
        self.wall_s = wall
        self.server_pct = 100 * self.server_s / wall
        self.loadgen_pct = 100 * (time.process_time() - self.l0) / wall


@dataclass
class ServerProcess:
    """``chatkit serve`` or the baseline, as a subprocess on a free port."""

    kind: str  # "chatkit" or "baseline"
    options: list[str] = field(default_factory=list)
    profile: str | None = None
    """Run the server under cProfile, writing this file on exit."""
    port: int = 0
    proc: subprocess.Popen | None = None
    tmp: tempfile.TemporaryDirectory | None = None
    log: Any = None

    def start(self) -> ServerProcess:
        self.port = self.port or free_port()
        if self.kind == "chatkit":
            self.tmp = tempfile.TemporaryDirectory()
            cmd = [
                sys.executable,
                "-m",
                "chatkit",
                "serve",
                "--port",
                str(self.port),
                "--http-port",
                "-1",
                "--db",
                os.path.join(self.tmp.name, "bench.db"),
                "--llm",
                "echo",
                "--rate-limit",
                "1000000",
                "--reply-queue",
                "100000",
                "--log-level",
                "WARNING",
                # the abuse limits off: the load generator is one address opening thousands of sockets
                "--max-connections",
                "1000000",
                "--max-connections-per-ip",
                "1000000",
                "--max-streams-per-ip",
                "1000000",
                "--handshake-rate",
                "1000000",
                "--rooms-per-ip",
                "1000000",
                # the baseline's listen backlog (asyncio's default): derived from the descriptor limit
                # and --max-connections above, chatkit's would be 8, and a burst of handshakes would
                # measure the kernel's SYN retries (1 s) instead of the server
                "--backlog",
                "100",
                *self.options,
            ]
        else:
            cmd = [sys.executable, str(HERE / "baseline_server.py"), "--port", str(self.port), *self.options]
        if self.profile:
            cmd[1:1] = ["-m", "cProfile", "-o", self.profile]
        # stderr goes to a file, not a pipe nobody reads: a server logging more than a pipe
        # holds would block on its next write, and measure that.
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    self.log.seek(0)
                    raise RuntimeError(self.log.read().decode(errors="replace") or "server died")
                time.sleep(0.05)
        raise RuntimeError(f"{self.kind} did not start")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def url(self, room: str, user: str = "u") -> str:
        return f"ws://127.0.0.1:{self.port}/ws/chat/{room}/?user={user}"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None
        if self.tmp is not None:
            self.tmp.cleanup()
            self.tmp = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def cpu_per_1k(cpu_s: float, frames: int) -> float:
    """Server CPU seconds per 1,000 frames delivered (= CPU milliseconds per frame)."""
    return 1000 * cpu_s / frames if frames else float("nan")


def load_average() -> str:
    """The machine's load (``/proc/loadavg``: 1, 5, 15 minutes), printed beside every result."""
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def environment() -> dict[str, Any]:
    versions = {}
    for name in ("websockets", "aiosqlite", "h11", "httpx", "chatkit"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "versions": versions,
        "load_average": load_average(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def print_table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
    if not rows:
        return
    print(f"\n{title}")
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    print("  ".join(c.rjust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).rjust(widths[c]) for c in columns))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if abs(value) >= 10:
            return f"{value:,.1f}"
        return f"{value:.2f}" if abs(value) >= 0.1 or value == 0 else f"{value:.4f}"
    return "" if value is None else str(value)


def write_results(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    env = environment()
    path.write_text(json.dumps({"environment": env, **payload}, indent=2))
    print(f"\nload average (1, 5, 15 min) at the end: {env['load_average']}; {env['cores']} cores")
    print(f"written {path}")
    return path


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


async def gather_bounded(coros, limit: int) -> list:
    """Run coroutines with at most ``limit`` in flight."""
    semaphore = asyncio.Semaphore(limit)

    async def run(coro):
        async with semaphore:
            return await coro

    return await asyncio.gather(*(run(c) for c in coros))


class CountingProxy:
    """A loopback TCP proxy that counts the bytes flowing server → client (framing and headers included)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.down = 0
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task] = set()

    async def __aenter__(self) -> CountingProxy:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self.tasks.add(task)  # type: ignore[arg-type]
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pump(reader, writer, count: bool) -> None:
            try:
                while data := await reader.read(65536):
                    if count:
                        self.down += len(data)
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.transport.abort()

        try:
            await asyncio.gather(pump(client_r, server_w, False), pump(server_r, client_w, True))
        except asyncio.CancelledError:
            pass  # closed by __aexit__ (asyncio's stream callback would print a cancelled task as an error)
        finally:
            self.tasks.discard(task)  # type: ignore[arg-type]
