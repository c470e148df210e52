"""A real PgBouncer (Debian's ``pgbouncer`` package) in transaction mode, in front of the
test PostgreSQL, standing in for Supabase's transaction pooler.

It listens on port 6543, the port by which the package recognises a transaction pooler
(``shared.db.TRANSACTION_POOLER_PORT``), on an address of its own in 127.0.0.0/8, so
several runs on one machine never compete for the port. Authentication is PgBouncer's
``any``: every client is sent on as the server user, which the test server trusts.
"""

from __future__ import annotations

import os
import pwd
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from shared.db import TRANSACTION_POOLER_PORT

# Debian installs it outside a normal user's PATH.
CANDIDATES = ["pgbouncer", "/usr/sbin/pgbouncer"]


def binary() -> str | None:
    for candidate in CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def _free_address() -> str:
    """An address in 127.0.0.0/8 whose port 6543 nobody listens on."""
    for _ in range(50):
        address = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
        with socket.socket() as probe:
            try:
                probe.bind((address, TRANSACTION_POOLER_PORT))
            except OSError:
                continue
            return address
    raise RuntimeError("no free loopback address for PgBouncer")


class PgBouncer:
    """One PgBouncer process; ``url(database)`` reaches ``database`` through it."""

    def __init__(self, server_url: str, *, pool_size: int = 4) -> None:
        self.executable = binary()
        if self.executable is None:
            raise RuntimeError("pgbouncer is not installed")
        server = urlsplit(server_url)
        self.address = _free_address()
        # Its own directory, outside pytest's (private to the user running the tests).
        self.workdir = workdir = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
        self.log = workdir / "pgbouncer.log"
        config = workdir / "pgbouncer.ini"
        config.write_text(
            "\n".join(
                [
                    "[databases]",
                    f"* = host={server.hostname} port={server.port or 5432} user={server.username or 'postgres'}",
                    "[pgbouncer]",
                    f"listen_addr = {self.address}",
                    f"listen_port = {TRANSACTION_POOLER_PORT}",
                    "unix_socket_dir =",
                    "auth_type = any",
                    "pool_mode = transaction",
                    f"default_pool_size = {pool_size}",
                    "max_client_conn = 500",
                    f"logfile = {self.log}",
                    f"pidfile = {workdir / 'pgbouncer.pid'}",
                    "",
                ]
            )
        )
        argv = [self.executable, str(config)]
        if os.geteuid() == 0:
            # PgBouncer refuses to run as root: it switches to the account Debian's
            # PostgreSQL packages create.
            user = pwd.getpwnam("postgres")
            os.chown(workdir, user.pw_uid, user.pw_gid)
            for path in workdir.iterdir():
                os.chown(path, user.pw_uid, user.pw_gid)
            argv[1:1] = ["-u", "postgres"]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_until_listening()

    def _wait_until_listening(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {self._log_tail()}")
            try:
                socket.create_connection((self.address, TRANSACTION_POOLER_PORT), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        log = self._log_tail()
        self.stop()
        raise RuntimeError(f"pgbouncer did not start listening: {log}")

    def _log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else "(no log)"

    @property
    def host_port(self) -> str:
        return f"{self.address}:{TRANSACTION_POOLER_PORT}"

    def url(self, database: str) -> str:
        return f"postgresql://postgres@{self.host_port}/{database}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)
