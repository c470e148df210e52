"""The README's first command on a fresh machine: a new clone, a PATH without any PostgreSQL or
Node tools, and ``./dev.sh``. Every function answers, a job sent through enqueue is completed
by the stand-in scheduler's drain calls, and every way of stopping the run (Ctrl-C, SIGTERM,
a closed terminal, SIGKILL followed by the next start) leaves nothing behind.

The clone carries the working tree's uncommitted changes, so the test checks what is about to
be committed; nothing ignored (.venv, .local, node_modules) comes along.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import termios
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from shared.db import Database
from tests.conftest import ROOT, require_tool

sys.path.insert(0, str(ROOT / "scripts"))
from without_system_tools import HIDDEN, stripped_path

FIRST_START_TIMEOUT = 900.0  # installs everything (from pip's and npm's caches when warm)
START_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0
API_KEY = "local-api-key"
DRAIN_TOKEN = "local-drain-token"
WEBHOOK_SECRET = "local-webhook-secret"


def free_port_block(size: int) -> int:
    """The first of ``size`` consecutive free ports on 127.0.0.1."""
    for _ in range(100):
        # Below Linux's ephemeral range (32768+), so outgoing connections do not take them meanwhile.
        first = random.randrange(20000, 32000)
        if all(port_is_free(port) for port in range(first, first + size)):
            return first
    raise AssertionError(f"no {size} consecutive free ports found")


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def fresh_clone(destination: Path) -> None:
    """``git clone`` of this checkout plus its uncommitted changes (tracked or new, never ignored)."""
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(destination)], check=True)
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--modified", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (entry.decode() for entry in listed)):
        source, target = ROOT / name, destination / name
        if source.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        else:
            target.unlink(missing_ok=True)


def processes_of(clone: Path) -> list[str]:
    """Every process started from the clone: its command line or working directory is inside it."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline", "cwd"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        cwd = process.info["cwd"] or ""
        if process.pid != os.getpid() and (str(clone) in cmdline or cwd.startswith(str(clone))):
            found.append(f"{process.pid}: {cmdline}")
    return found


class DevRun:
    """One ``./dev.sh`` in the clone; its output is read as it comes, the URLs taken from it.

    With ``terminal=True`` it runs on a pseudo-terminal of its own, so that closing the
    terminal can be tried for real.
    """

    def __init__(self, clone: Path, env: dict[str, str], ports: list[str], *, terminal: bool = False) -> None:
        self.output: list[str] = []
        self.urls: dict[str, str] = {}
        self.ready = threading.Event()
        self.master: int | None = None
        self._stop_reading = threading.Event()
        command = ["./dev.sh", "--schedule-seconds", "1", *ports]
        if terminal:
            self.master, slave = pty.openpty()
            self.process = subprocess.Popen(
                command,
                cwd=clone,
                env=env,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                start_new_session=True,
                preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),  # the pty becomes its terminal
            )
            os.close(slave)
            reader = self._read_terminal
        else:
            self.process = subprocess.Popen(
                command, cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
            reader = self._read_pipe
        self._reader = threading.Thread(target=reader, daemon=True)
        self._reader.start()

    def _take(self, line: str) -> None:
        self.output.append(line)
        match = re.match(r"^  (\w+)\s+(\S+)$", line)
        if match:
            self.urls[match.group(1)] = match.group(2)
        if line.startswith("Ctrl-C stops everything"):
            self.ready.set()

    def _read_pipe(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self._take(raw.decode(errors="replace").rstrip("\r\n"))

    def _read_terminal(self) -> None:
        assert self.master is not None
        pending = b""
        while not self._stop_reading.is_set():
            if not select.select([self.master], [], [], 0.2)[0]:
                continue
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            *lines, pending = (pending + chunk).split(b"\n")
            for raw in lines:
                self._take(raw.decode(errors="replace").rstrip("\r"))

    def wait_ready(self, timeout: float) -> float:
        started = time.monotonic()
        while not self.ready.wait(0.5):
            assert self.process.poll() is None, "./dev.sh exited:\n" + "\n".join(self.output[-40:])
            assert time.monotonic() - started < timeout, "./dev.sh not ready:\n" + "\n".join(self.output[-40:])
        return time.monotonic() - started

    def close_terminal(self) -> None:
        """What closing a terminal window does: the kernel hangs up the session (SIGHUP)."""
        assert self.master is not None
        self._stop_reading.set()
        self._reader.join(timeout=5)
        os.close(self.master)
        self.master = None

    def wait_stopped(self) -> int:
        code = self.process.wait(timeout=STOP_TIMEOUT)
        self._stop_reading.set()
        self._reader.join(timeout=5)
        if self.master is not None:
            os.close(self.master)
        if not self._reader.is_alive():
            self.close_output()
        return code

    def close_output(self) -> None:
        """Close the output pipe once its reader is done (after SIGKILL: once the leftovers are gone)."""
        self._reader.join(timeout=30)
        if self.process.stdout is not None:
            self.process.stdout.close()

    @property
    def database_url(self) -> str:
        return self.urls["database"]


def http(url: str, body: object = None, headers: dict[str, str] | None = None) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **(headers or {})}
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as refused:
        with refused:
            return refused.code, json.load(refused)


def post(url: str, body: object, headers: dict[str, str], expected: int) -> dict[str, object]:
    status, answer = http(url, body, headers)
    assert status == expected and isinstance(answer, dict), f"{url} answered {status}: {answer}"
    return answer


def wait_for_completion(database_url: str, job_id: str) -> object:
    db = Database(database_url)
    try:
        deadline = time.monotonic() + 30
        rows: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            rows = db.run("SELECT state, output FROM pgboss.job WHERE id = :id", {"id": job_id})
            if rows and rows[0]["state"] == "completed":
                return rows[0]["output"]
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} was not completed by the scheduled drain calls: {rows}")
    finally:
        db.close()


def demo_event(note_id: int) -> dict[str, object]:
    """What Supabase sends for an insert into demo_notes (a new id is a new event)."""
    return {"type": "INSERT", "schema": "public", "table": "demo_notes", "record": {"id": note_id, "text": "hi"}}


def assert_every_function_answers(run: DevRun, note_id: int) -> None:
    assert {"drain", "enqueue", "health", "ready", "webhook"} <= set(run.urls)
    assert http(run.urls["health"]) == (200, {"status": "healthy"})
    status, body = http(run.urls["ready"])
    assert status == 200 and isinstance(body, dict) and body["status"] == "ready", body
    status, body = http(run.urls["drain"], {"budgetSeconds": 0}, {"Authorization": f"Bearer {DRAIN_TOKEN}"})
    assert status == 200, body
    # Queues exist from "running" on: the runner's first drain call made test-job's.
    created = post(run.urls["enqueue"], {"name": "test-job", "data": {"hello": 1}}, {"X-API-Key": API_KEY}, 201)
    assert wait_for_completion(run.database_url, str(created["id"])) == {"echo": {"hello": 1}}
    # The demo routes table makes a Supabase-shaped insert into demo_notes a test-job.
    status, refused = http(run.urls["webhook"], demo_event(note_id))
    assert status == 401, refused
    accepted = post(run.urls["webhook"], demo_event(note_id), {"Authorization": f"Bearer {WEBHOOK_SECRET}"}, 202)
    assert accepted["routes"] == ["demo-note-created"], accepted
    [job_id] = accepted["ids"]  # type: ignore[misc]
    assert wait_for_completion(run.database_url, str(job_id)) == {"echo": {"noteId": note_id, "text": "hi"}}


def assert_nothing_left(clone: Path, run: DevRun, ports: range) -> None:
    deadline = time.monotonic() + 10
    while processes_of(clone) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_of(clone) == [], "\n".join(run.output[-20:])
    assert [port for port in ports if not port_is_free(port)] == []


@pytest.fixture
def clone() -> Iterator[Path]:
    # Cloud Build's source upload has no .git; there the clone cannot be taken.
    require_tool((ROOT / ".git").exists() and shutil.which("git") is not None, "a git checkout (and git)")
    base = Path(tempfile.mkdtemp(prefix="manda-fresh-clone-"))
    try:
        fresh_clone(base / "repo")
        yield base / "repo"
    finally:
        for process in psutil.process_iter(["cmdline"]):
            if str(base) in " ".join(process.info["cmdline"] or []):
                process.kill()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_dev_sh_in_a_fresh_clone_without_postgres_or_node_tools(
    clone: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tools = clone.parent / "path"
    tools.mkdir()
    removed = {"DATABASE_URL", "TEST_ADMIN_DATABASE_URL", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"}
    env = {key: value for key, value in os.environ.items() if key not in removed}
    env["PATH"] = stripped_path(tools, os.environ["PATH"])
    assert not [name for name in HIDDEN if shutil.which(name, path=env["PATH"])]
    # Room for every function main.py lists, then PostgreSQL's port at the end.
    first = free_port_block(20)
    ports = ["--base-port", str(first), "--postgres-port", str(first + 19)]
    used = range(first, first + 20)
    timings = {}

    run = DevRun(clone, env, ports)
    timings["fresh clone to ready (first run, installs)"] = run.wait_ready(FIRST_START_TIMEOUT)
    assert_every_function_answers(run, note_id=1)
    run.process.send_signal(signal.SIGINT)
    assert run.wait_stopped() == 0
    assert_nothing_left(clone, run, used)

    run = DevRun(clone, env, ports)
    timings["second run to ready (everything installed)"] = run.wait_ready(START_TIMEOUT)
    assert http(run.urls["health"]) == (200, {"status": "healthy"})
    run.process.send_signal(signal.SIGTERM)
    assert run.wait_stopped() == 0
    assert_nothing_left(clone, run, used)

    run = DevRun(clone, env, ports, terminal=True)
    run.wait_ready(START_TIMEOUT)
    assert http(run.urls["health"]) == (200, {"status": "healthy"})
    run.close_terminal()
    run.wait_stopped()
    assert_nothing_left(clone, run, used)

    run = DevRun(clone, env, ports)
    run.wait_ready(START_TIMEOUT)
    run.process.send_signal(signal.SIGHUP)
    assert run.wait_stopped() == 0
    assert_nothing_left(clone, run, used)

    # Killed outright, the run cannot clean up: the next start finds and stops what it left.
    run = DevRun(clone, env, ports)
    run.wait_ready(START_TIMEOUT)
    run.process.kill()
    run.wait_stopped()
    assert processes_of(clone), "SIGKILL should have left the server and the functions running"
    killed, run = run, DevRun(clone, env, ports)
    run.wait_ready(START_TIMEOUT)
    killed.close_output()  # its functions, which held the pipe, are gone now
    assert any("left running" in line for line in run.output), run.output
    assert_every_function_answers(run, note_id=2)
    run.process.send_signal(signal.SIGINT)
    assert run.wait_stopped() == 0
    assert_nothing_left(clone, run, used)

    with capsys.disabled():
        for what, seconds in timings.items():
            print(f"\n./dev.sh {what}: {seconds:.1f}s", end="")
