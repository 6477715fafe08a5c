"""A throwaway redis-server for the tests: loopback port and Unix socket in a temp dir."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

REDIS_SERVER = shutil.which("redis-server")
ROOT = Path(__file__).resolve().parents[2]
WORKER_ENV = {**os.environ, "PYTHONPATH": f"{ROOT / 'python'}{os.pathsep}{ROOT}"}


def require_redis_server() -> str:
    """The binary's path; skips (or fails, with TETHER_REQUIRE_REDIS=1) when it is absent."""
    if REDIS_SERVER is None:
        if os.environ.get("TETHER_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server not found on PATH and TETHER_REQUIRE_REDIS=1")
        pytest.skip("redis-server not installed: Redis store tests skipped")
    return REDIS_SERVER


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """Start, kill and restart one redis-server; ``persistent`` fsyncs every write (AOF)."""

    def __init__(self, workdir: Path, *, persistent: bool = False) -> None:
        self.binary = require_redis_server()
        self.workdir = workdir
        self.persistent = persistent
        self.port = free_port()
        self.socket_path = workdir / "redis.sock"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def unix_url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self) -> None:
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.workdir),
            "--save", "",
            "--appendonly", "yes" if self.persistent else "no",
            "--appendfsync", "always",
            "--logfile", str(self.workdir / "redis.log"),
        ]  # fmt: skip
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 20
        while True:  # readiness of the fixture, not a test's synchronisation
            try:
                if client.ping():
                    break
            except redis.exceptions.RedisError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    log = (self.workdir / "redis.log").read_text(errors="replace")
                    raise RuntimeError(f"redis-server did not start:\n{log[-2000:]}") from None
                time.sleep(0.02)
        client.close()

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait()
        self._proc = None


def read_line(proc: subprocess.Popen[str], limit: float = 90.0) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], limit)
    if not ready:
        proc.kill()
        raise AssertionError("worker process did not answer")
    return proc.stdout.readline().strip()


def start_worker(*args: str, module: str = "tests.store.worker") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=WORKER_ENV,
        cwd=ROOT,
    )


def ask(proc: subprocess.Popen[str], command: dict[str, str]) -> Any:
    """Send one JSON command line to a worker and decode its answer line."""
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(command) + "\n")
    proc.stdin.flush()
    return answer(proc)


def answer(proc: subprocess.Popen[str]) -> Any:
    return json.loads(read_line(proc))


def stop_workers(procs: list[subprocess.Popen[str]]) -> None:
    """Close each worker's stdin (its signal to exit) and reap it."""
    for p in procs:
        assert p.stdin is not None
        p.stdin.close()
        p.wait(30)
