"""The README's first command: every function runs locally on its own port."""

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
import urllib.request
from pathlib import Path

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
