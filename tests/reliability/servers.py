"""functions-framework processes on 127.0.0.1 that the suite can kill with SIGKILL and start again.

Each runs in a process group of its own (gunicorn's master and worker), so one
``killpg`` ends the whole instance at once, as a crashed Cloud Run instance ends. Every
line a server prints goes to a log file in the run's log directory, where the secrets
test searches for secrets.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests

from tests.conftest import ROOT

APP = str(Path(__file__).resolve().parent / "app.py")
_starts = iter(range(1, 1_000_000))
_starts_lock = threading.Lock()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Function:
    """One function instance: ``functions-framework --target T`` on a free loopback port."""

    def __init__(self, target: str, env: dict[str, str], log_dir: Path, *, threads: int = 8) -> None:
        self.target = target
        self.env = {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/tmp"),
            "PYTHONPATH": str(ROOT),
            "THREADS": str(threads),
            **env,
        }
        self.log_dir = log_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.killed_pgids: list[int] = []  # killed from outside
        self.died_pgids: list[int] = []  # killed by one of their own handlers
        self.lock = threading.RLock()
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> None:
        with _starts_lock:
            number = next(_starts)
        self.port = free_port()
        log = (self.log_dir / f"{self.target}-{number}.log").open("wb")
        framework = str(Path(sys.executable).parent / "functions-framework")
        self.process = subprocess.Popen(
            [framework, "--source", APP, "--target", self.target, "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.target} exited at start with {self.process.returncode}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.target} did not listen within 60 s")

    @property
    def pgid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> int | None:
        """SIGKILL the whole instance; returns its process group id (None if it was down)."""
        with self.lock:
            if self.process is None or self.reap() is not None:
                return None
            pgid = self.pgid
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            self.process.wait()
            self.process = None
            self.killed_pgids.append(pgid)
            return pgid

    def ensure_running(self) -> None:
        """Start the instance again if it was killed or killed itself."""
        with self.lock:
            self.reap()
            if self.process is None:
                self.start()

    def reap(self) -> int | None:
        """If the instance died by itself (a handler killed it), note it and return its process group id."""
        if self.process is not None and self.process.poll() is not None:
            pgid = self.pgid
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)  # a gunicorn worker left behind
            self.died_pgids.append(pgid)
            self.process = None
            return pgid
        return None

    def post(
        self,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> requests.Response:
        data = raw if raw is not None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **(headers or {})}
        return requests.post(self.url, data=data, headers=headers, timeout=timeout)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.pgid, signal.SIGKILL)
                self.process.wait()
