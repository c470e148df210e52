"""./test.sh's throwaway PostgreSQL (scripts/with_test_postgres.py) goes away however the run ends.

Each run here wraps a small command that reports the server it was given and waits; the
wrapper is started as CI and ``nohup`` start a background job, with SIGINT ignored.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import ROOT

WRAPPER = ROOT / "scripts" / "with_test_postgres.py"
# Says which server and directory it got, then waits for a Ctrl-C, as pytest would.
COMMAND = """
import os, sys, time
print(os.environ["TEST_ADMIN_DATABASE_URL"], flush=True)
try:
    time.sleep(120)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(2)
"""


def start() -> tuple[subprocess.Popen[str], int, Path]:
    """The wrapper around COMMAND; returns it, its server's port and its temporary directory."""
    env = {key: value for key, value in os.environ.items() if key != "TEST_ADMIN_DATABASE_URL"}
    wrapper = subprocess.Popen(
        [sys.executable, str(WRAPPER), sys.executable, "-c", COMMAND],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # a background job's
    )
    assert wrapper.stdout is not None
    url = wrapper.stdout.readline().strip()
    assert url.startswith("postgresql://postgres@127.0.0.1:"), url
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    [server] = [p for p in psutil.process_iter(["cmdline"]) if f"-p {port} " in " ".join(p.info["cmdline"] or [])]
    data_dir = Path(server.info["cmdline"][server.info["cmdline"].index("-D") + 1])
    return wrapper, port, data_dir.parent


def server_answers(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_every_stop_signal_interrupts_the_tests_and_removes_the_server(signum: int) -> None:
    wrapper, port, directory = start()
    assert server_answers(port) and directory.exists()
    wrapper.send_signal(signum)
    assert wrapper.wait(timeout=60) != 0
    assert wrapper.stdout is not None
    assert wrapper.stdout.read().splitlines()[0] == "interrupted"  # pytest's clean-ups would run
    wrapper.stdout.close()
    assert not server_answers(port)
    assert not directory.exists()


def test_the_next_run_removes_the_server_of_a_killed_run() -> None:
    wrapper, port, directory = start()
    [command] = [child for child in psutil.Process(wrapper.pid).children() if "-c" in child.cmdline()[1:2]]
    wrapper.kill()  # nothing can clean up after SIGKILL
    wrapper.wait(timeout=10)
    command.kill()
    assert wrapper.stdout is not None
    wrapper.stdout.close()
    time.sleep(0.5)
    assert server_answers(port) and directory.exists()
    env = {key: value for key, value in os.environ.items() if key != "TEST_ADMIN_DATABASE_URL"}
    subprocess.run([sys.executable, str(WRAPPER), "true"], env=env, check=True, timeout=120)
    assert not server_answers(port)
    assert not directory.exists()
