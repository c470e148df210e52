"""The README's first command: every function runs locally on its own port, and the
stand-in scheduler's drain calls run a job sent through enqueue."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from shared.db import Database
from tests.conftest import ROOT


def test_dev_runner_with_its_own_postgres() -> None:
    # Not pytest's tmp_path: when run as root the server runs as the postgres user,
    # which must be able to reach its data directory.
    base = Path(tempfile.mkdtemp(prefix="manda-dev-"))
    base.chmod(0o755)
    data = base / "local" / "pgdata"
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    process = subprocess.Popen(
        [sys.executable, "scripts/dev.py", "--data-dir", str(data), "--schedule-seconds", "1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    urls: dict[str, str] = {}
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 120
        for line in process.stdout:
            match = re.match(r"^  (\w+)\s+(\S+)$", line)
            if match:
                urls[match.group(1)] = match.group(2)
            if line.startswith("Ctrl-C") or time.monotonic() > deadline:
                break
        assert {"health", "ready"} <= set(urls)
        with urllib.request.urlopen(urls["health"], timeout=10) as response:
            assert json.load(response) == {"status": "healthy"}
        with urllib.request.urlopen(urls["ready"], timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "ready" and body["checks"]["pgboss_schema"]["version"] == 46
        job_id = _enqueue_test_job(urls["enqueue"])
        assert _wait_for_completion(urls["database"], job_id) == {"echo": {"hello": 1}}
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        if process.stdout is not None:
            process.stdout.close()
        shutil.rmtree(base, ignore_errors=True)
    database_port = int(urls["database"].rsplit(":", 1)[1].split("/")[0])
    for url in (urls["health"], urls["ready"], f"http://127.0.0.1:{database_port}/"):
        port = int(url.rsplit(":", 1)[1].strip("/"))
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open after Ctrl-C"


def _enqueue_test_job(url: str) -> str:
    """Send a test-job; its queue exists once the scheduler's first drain call made it."""
    body = json.dumps({"name": "test-job", "data": {"hello": 1}}).encode()
    headers = {"X-API-Key": "local-api-key", "Content-Type": "application/json"}
    deadline = time.monotonic() + 30
    while True:
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return str(json.load(response)["id"])
        except urllib.error.HTTPError as refused:
            refused.close()
            assert refused.code == 404 and time.monotonic() < deadline, f"enqueue answered {refused.code}"
            time.sleep(0.3)


def _wait_for_completion(database_url: str, job_id: str) -> object:
    db = Database(database_url)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            rows = db.run("SELECT state, output FROM pgboss.job WHERE id = :id", {"id": job_id})
            if rows and rows[0]["state"] == "completed":
                return rows[0]["output"]
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} was not completed by the scheduled drain calls: {rows}")
    finally:
        db.close()
