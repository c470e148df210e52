"""Run every function locally, each on its own port, against a real PostgreSQL.

Started by ``./dev.sh``. Uses ``DATABASE_URL`` when it is set; otherwise it runs a
private PostgreSQL from the machine's own binaries, with its data under ``.local/``,
on a free port, and installs pg-boss's schema there with pg-boss's own CLI. When the
package exposes ``drain``, a stand-in for Cloud Scheduler calls it every few seconds.
Ctrl-C stops everything this started.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / ".local"
PYTHON = sys.executable

# Credentials for local runs only; a real deployment takes them from Secret Manager.
LOCAL_ENV = {
    "API_KEYS": "local-api-key",
    "WEBHOOK_SECRET": "local-webhook-secret",
    "DRAIN_TOKEN": "local-drain-token",
    "LOG_LEVEL": "INFO",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a .env file; comments and blank lines skipped."""
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.split("  #", 1)[0].strip()
            if line and not line.startswith("#") and "=" in line:
                key, value = line.split("=", 1)
                values[key.strip()] = value.strip()
    return values


class LocalPostgres:
    """A private PostgreSQL server for local runs, from the machine's binaries."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.bindir = self._find_bindir()
        self.process: subprocess.Popen[bytes] | None = None
        self.log: BinaryIO | None = None
        # PostgreSQL refuses to run as root; run it as the postgres user then.
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @staticmethod
    def _find_bindir() -> Path:
        candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[4]))
        for directory in [*reversed(candidates), os.path.dirname(shutil.which("initdb") or "")]:
            if directory and (Path(directory) / "initdb").exists():
                return Path(directory)
        sys.exit("No PostgreSQL binaries found (initdb); install postgresql or set DATABASE_URL.")

    def start(self) -> str:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(self.data_dir.parent / "postgres.log", "ab")  # noqa: SIM115 - open while the server runs
        if self.as_user:
            shutil.chown(self.data_dir.parent, "postgres")
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run(
                [
                    *self.as_user,
                    str(self.bindir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-instructions",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        self.process = subprocess.Popen(
            [
                *self.as_user,
                str(self.bindir / "postgres"),
                "-D",
                str(self.data_dir),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={self.data_dir}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            start_new_session=True,
        )
        for _ in range(100):
            ready = subprocess.run(
                [str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)], check=False
            )
            if ready.returncode == 0:
                break
            time.sleep(0.1)
        else:
            sys.exit(f"local PostgreSQL did not start; see {self.data_dir.parent / 'postgres.log'}")
        subprocess.run(
            [str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "manda"],
            check=False,
            stderr=subprocess.DEVNULL,
        )
        return f"postgresql://postgres@127.0.0.1:{self.port}/manda"

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)  # "fast" shutdown
            self.process.wait(timeout=30)
        if self.log is not None:
            self.log.close()


def exported_targets(env: dict[str, str]) -> list[str]:
    """The function names main.py exposes, asked of main.py itself."""
    result = subprocess.run(
        [PYTHON, "-c", "import json, main; print(json.dumps(main.__all__))"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        sys.exit(f"main.py does not load:\n{result.stderr}")
    return list(json.loads(result.stdout.strip().splitlines()[-1]))


def wait_until_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"a function exited during startup (port {port})")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    sys.exit(f"a function did not start listening on port {port}")


def schedule_drain(url: str, token: str, every: float, stop: threading.Event) -> None:
    """What Cloud Scheduler does in production: call drain on a timer, with a budget."""
    body = json.dumps({"budgetSeconds": max(every - 1, 0)}).encode()
    while not stop.wait(every):
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=every + 30) as response:
                response.read()
        except (urllib.error.URLError, OSError) as exc:
            print(f"scheduler: drain call failed: {exc}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-port", type=int, default=0, help="first port (default: free ports)")
    parser.add_argument("--schedule-seconds", type=float, default=5.0, help="how often to call drain")
    parser.add_argument("--data-dir", type=Path, default=LOCAL / "pgdata", help="local PostgreSQL data")
    args = parser.parse_args()

    LOCAL.mkdir(exist_ok=True)
    env = {**os.environ, **LOCAL_ENV, **read_env_file(ROOT / ".env")}
    postgres = None
    if not env.get("DATABASE_URL"):
        postgres = LocalPostgres(args.data_dir.resolve())
        env["DATABASE_URL"] = postgres.start()
        subprocess.run(
            [
                str(ROOT / "deploy/pgboss/pgboss"),
                "migrate",
                "--connection-string",
                env["DATABASE_URL"],
                "--schema",
                env.get("PGBOSS_SCHEMA", "pgboss"),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )

    children: list[subprocess.Popen[bytes]] = []
    stop = threading.Event()
    try:
        urls: dict[str, str] = {}
        for index, target in enumerate(exported_targets(env)):
            port = args.base_port + index if args.base_port else free_port()
            process = subprocess.Popen(
                [
                    PYTHON,
                    "-m",
                    "functions_framework",
                    "--source",
                    "main.py",
                    "--target",
                    target,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                cwd=ROOT,
                env=env,
            )
            children.append(process)
            wait_until_listening(port, process)
            urls[target] = f"http://127.0.0.1:{port}/"
        if "drain" in urls:
            threading.Thread(
                target=schedule_drain,
                args=(urls["drain"], env["DRAIN_TOKEN"], args.schedule_seconds, stop),
                daemon=True,
            ).start()
        print("\nmanda-processing is running:", flush=True)
        for target, url in urls.items():
            print(f"  {target:<8} {url}", flush=True)
        print(f"  database {env['DATABASE_URL']}", flush=True)
        print("Ctrl-C stops everything.", flush=True)
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        sys.exit("a function exited; stopping everything")
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
        if postgres:
            postgres.stop()
        print("stopped.", flush=True)


if __name__ == "__main__":
    main()
