"""Drive real pg-boss (Node, the version pinned in deploy/pgboss) from pytest.

The Python job-queue code must behave exactly like pg-boss on the same tables, so tests pit it
against the real thing:

    with NodeBoss(url, supervise=False, schedule=False, migrate=False) as boss:
        boss.call("createQueue", "q")
        job_id = boss.call("send", "q", {"x": 1})
        worker = boss.work("q", {"behavior": "complete", "output": {"ok": True}}, pollingIntervalSeconds=0.5)
        ...
        jobs = boss.received("q")

``migrate(url, schema)`` installs or upgrades the pg-boss schema with pg-boss's own CLI.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from tests.support import runtime

REPO_ROOT = runtime.REPO_ROOT
PGBOSS_DIR = REPO_ROOT / "deploy" / "pgboss"
NODE = runtime.node()
PGBOSS_CLI = PGBOSS_DIR / "pgboss"
DRIVER = Path(__file__).resolve().parent / "node_driver.mjs"

DEFAULT_TIMEOUT = 30.0
# The first start on a fresh machine installs the pinned Node and pg-boss with npm.
DEFAULT_START_TIMEOUT = 180.0
_STDERR_TAIL_LINES = 200

__all__ = [
    "NodeBoss",
    "NodeBossError",
    "NodeBossProcessError",
    "NodeBossTimeout",
    "PgBossMigrateError",
    "migrate",
]


class NodeBossError(Exception):
    """pg-boss (or the driver) rejected a request; mirrors the JS error's name, message and code."""

    def __init__(self, name: str, message: str, code: str | None = None, stack: str | None = None):
        super().__init__(f"{name}: {message}" + (f" [{code}]" if code else ""))
        self.name = name
        self.message = message
        self.code = code
        self.stack = stack


def _error_from(err: dict | None, default_message: str = "") -> NodeBossError:
    err = err or {}
    return NodeBossError(
        err.get("name", "Error"), err.get("message", default_message), err.get("code"), err.get("stack")
    )


class NodeBossProcessError(RuntimeError):
    """The driver process failed to start, died, or stopped answering."""


class NodeBossTimeout(NodeBossProcessError, TimeoutError):
    """No response within the timeout."""


class PgBossMigrateError(RuntimeError):
    """``pgboss migrate`` exited non-zero."""


def _clean_env() -> dict[str, str]:
    # The CLI and pg-boss read PGBOSS_* variables; never let the caller's environment steer a test.
    return {k: v for k, v in os.environ.items() if not k.startswith("PGBOSS_")}


def migrate(database_url: str, schema: str = "pgboss", timeout: float = 300.0) -> None:
    """Install (or upgrade) pg-boss's schema in ``schema`` using pg-boss's own CLI."""
    cmd = [str(PGBOSS_CLI), "migrate", "--connection-string", database_url, "--schema", schema]
    try:
        # cwd=PGBOSS_DIR: the CLI also loads pgboss.json/.pgbossrc from its working directory.
        subprocess.run(
            cmd, check=True, capture_output=True, text=True, timeout=timeout, cwd=PGBOSS_DIR, env=_clean_env()
        )
    except subprocess.CalledProcessError as exc:
        raise PgBossMigrateError(
            f"pgboss migrate failed (exit {exc.returncode}) for schema {schema!r}:\n"
            f"{(exc.stderr or '').strip()}\n{(exc.stdout or '').strip()}".rstrip()
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise PgBossMigrateError(f"pgboss migrate timed out after {timeout}s for schema {schema!r}") from exc


class _Driver:
    """The driver subprocess and its two reader threads.

    Kept apart from :class:`NodeBoss` so the threads hold no reference to the NodeBoss: a NodeBoss
    that is dropped without ``close()`` is then collected and its finalizer kills the process.
    """

    def __init__(self, argv: list[str], echo_stderr: bool):
        self.echo_stderr = echo_stderr
        self.cond = threading.Condition()
        self.write_lock = threading.Lock()
        self.responses: dict[int, dict] = {}
        self.abandoned: set[int] = set()
        self.ready: dict | None = None
        self.eof = False
        self.tail: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL_LINES)
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            bufsize=1,
            cwd=PGBOSS_DIR,
            env=_clean_env(),
        )
        self.readers = [
            threading.Thread(target=self._read_stdout, name="node-boss-stdout", daemon=True),
            threading.Thread(target=self._read_stderr, name="node-boss-stderr", daemon=True),
        ]
        for reader in self.readers:
            reader.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        try:
            for line in self.proc.stdout:
                line = line.strip()
                if not line:
                    continue
                try:
                    msg = json.loads(line)
                except ValueError:
                    self.tail.append(f"[stdout, not protocol] {line}")
                    continue
                with self.cond:
                    if "ready" in msg and "id" not in msg:
                        self.ready = msg
                    else:
                        rid = msg.get("id")
                        if rid in self.abandoned:
                            self.abandoned.discard(rid)
                        else:
                            self.responses[rid] = msg
                    self.cond.notify_all()
        except (OSError, ValueError):
            pass
        finally:
            with self.cond:
                self.eof = True
                self.cond.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        try:
            for line in self.proc.stderr:
                self.tail.append(line.rstrip("\n"))
                if self.echo_stderr:
                    sys.stderr.write(line)
        except (OSError, ValueError):
            pass

    def stderr_tail(self, lines: int = 50) -> str:
        return "\n".join(list(self.tail)[-lines:])

    def send(self, payload: dict) -> None:
        line = json.dumps(payload) + "\n"
        with self.write_lock:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(line)
                self.proc.stdin.flush()
            except (OSError, ValueError) as exc:
                raise NodeBossProcessError(
                    f"pg-boss driver is gone (exit {self.proc.poll()})\n--- driver stderr ---\n{self.stderr_tail()}"
                ) from exc

    def kill(self, wait: float = 0.0) -> None:
        """Let the process exit by itself for up to ``wait`` seconds, then kill it; close the pipes."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=wait)
        if self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        # The process is gone, so the readers reach EOF; close their pipes only once they have.
        for reader in self.readers:
            if reader is not threading.current_thread():
                reader.join(timeout=5)
        streams = [self.proc.stdin] + [
            stream
            for stream, reader in zip((self.proc.stdout, self.proc.stderr), self.readers, strict=True)
            if not reader.is_alive()
        ]
        for stream in streams:
            try:
                if stream is not None:
                    stream.close()
            except (OSError, ValueError):
                pass


class NodeBoss:
    """A real pg-boss instance in a Node subprocess, started (``boss.start()``) on construction.

    ``options`` are PgBoss constructor options with their camelCase names (``supervise=False``,
    ``schedule=False``, ``migrate=False``, ...), passed through unchanged; nothing is defaulted here.
    ``package_dir`` runs another pg-boss release than the pinned one (see ``tests.support.releases``).
    Requests are handled by the driver one at a time, in order.
    """

    def __init__(
        self,
        database_url: str,
        schema: str = "pgboss",
        *,
        timeout: float = DEFAULT_TIMEOUT,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        echo_stderr: bool = False,
        package_dir: Path | None = None,
        **options: Any,
    ):
        self.database_url = database_url
        self.schema = schema
        self.options = options
        self.timeout = timeout
        self.info: dict[str, Any] = {}
        self._ids = itertools.count(1)
        self._closed = False
        self._driver = _Driver(
            [
                str(NODE),
                str(DRIVER),
                "--connection-string",
                database_url,
                "--schema",
                schema,
                "--options",
                json.dumps(options),
                *(["--pgboss-dir", str(package_dir)] if package_dir else []),
            ],
            echo_stderr,
        )
        self._finalizer = weakref.finalize(self, self._driver.kill)
        try:
            self._wait_ready(start_timeout)
        except BaseException:
            self._closed = True
            self._finalizer()
            raise

    # -- plumbing ---------------------------------------------------------------------------------

    def stderr_tail(self, lines: int = 50) -> str:
        """The driver's last stderr lines (pg-boss errors/warnings, start-up failures)."""
        return self._driver.stderr_tail(lines)

    def _wait_ready(self, timeout: float) -> None:
        d = self._driver
        deadline = time.monotonic() + timeout
        with d.cond:
            while d.ready is None and not d.eof:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise NodeBossTimeout(
                        f"pg-boss driver not ready after {timeout}s\n--- driver stderr ---\n{d.stderr_tail()}"
                    )
                d.cond.wait(remaining)
            ready = d.ready
        if ready is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                d.proc.wait(timeout=5)
            raise NodeBossProcessError(
                f"pg-boss driver exited (code {d.proc.poll()}) before it was ready\n"
                f"--- driver stderr ---\n{d.stderr_tail()}"
            )
        if not ready.get("ready"):
            raise _error_from(ready.get("error"), "pg-boss failed to start")
        self.info = ready

    def _request(self, op: str, timeout: float | None = None, **fields: Any) -> Any:
        if self._closed:
            raise NodeBossProcessError("NodeBoss is closed")
        d = self._driver
        timeout = self.timeout if timeout is None else timeout
        rid = next(self._ids)
        d.send({"id": rid, "op": op, **fields})
        deadline = time.monotonic() + timeout
        with d.cond:
            while rid not in d.responses:
                if d.eof:
                    raise NodeBossProcessError(
                        f"pg-boss driver exited (code {d.proc.poll()}) while handling {op!r}\n"
                        f"--- driver stderr ---\n{d.stderr_tail()}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    d.abandoned.add(rid)
                    raise NodeBossTimeout(f"no answer to {op!r} {fields!r} within {timeout}s")
                d.cond.wait(remaining)
            msg = d.responses.pop(rid)
        if "error" in msg:
            raise _error_from(msg["error"])
        return msg.get("result")

    # -- API --------------------------------------------------------------------------------------

    def ping(self, timeout: float | None = None) -> bool:
        return self._request("ping", timeout=timeout) == "pong"

    def call(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        """``await boss[method](*args)``, JSON in and out. Dates come back as ISO-8601 strings;
        pass ``{"$date": "<iso>"}`` where pg-boss wants a Date object."""
        return self._request("call", timeout=timeout, method=method, args=list(args))

    def work(
        self, queue: str, behavior: dict | None = None, *, timeout: float | None = None, **work_options: Any
    ) -> str:
        """``boss.work(queue, work_options, handler)``; returns the worker id.

        ``behavior``: ``{"behavior": "complete" | "fail" | "sleep_then_complete" | "sleep_then_fail",
        "output": <returned by the handler>, "error_message": str, "sleep_ms": int,
        "honor_abort": bool}``. Every job the handler gets is recorded; see :meth:`received`.
        """
        return self._request("work", timeout=timeout, queue=queue, options=work_options, behavior=behavior or {})

    def received(
        self,
        queue: str | None = None,
        clear: bool = True,
        *,
        worker: str | None = None,
        timeout: float | None = None,
    ) -> list[dict]:
        """Jobs handed to handlers so far (optionally for one queue/worker), oldest first.

        Each is the job as pg-boss gave it (``id``, ``name``, ``data``, ``retryCount``, ...) plus
        ``queue``, ``workerId``, ``receivedAt``/``finishedAt`` (epoch ms), ``outcome`` and ``batchSize``.
        """
        return self._request("received", timeout=timeout, queue=queue, worker=worker, clear=clear)

    def wait_received(
        self, queue: str | None = None, count: int = 1, timeout: float = 10.0, *, worker: str | None = None
    ) -> list[dict]:
        """Poll :meth:`received` (without clearing) until ``count`` jobs have arrived; returns them all."""
        deadline = time.monotonic() + timeout
        while True:
            jobs = self.received(queue, clear=False, worker=worker)
            if len(jobs) >= count:
                return jobs
            if time.monotonic() >= deadline:
                raise NodeBossTimeout(f"{len(jobs)} of {count} jobs received on {queue!r} within {timeout}s")
            time.sleep(0.05)

    def off_work(
        self, queue: str, *, worker: str | None = None, wait: bool = True, timeout: float | None = None
    ) -> None:
        """``boss.offWork(queue, {id: worker, wait})``: stop the queue's workers (or one)."""
        self._request("offWork", timeout=timeout, queue=queue, worker=worker, wait=wait)

    def events(self, clear: bool = True) -> list[dict]:
        """pg-boss ``error``/``warning`` events emitted so far."""
        return self._request("events", clear=clear)

    def close(self, timeout: float = DEFAULT_TIMEOUT, **stop_options: Any) -> None:
        """Graceful ``boss.stop(stop_options)`` and wait for the process to exit; kills it if it will not."""
        if self._closed:
            return
        try:
            if self._driver.proc.poll() is None and not self._driver.eof:
                self._request("stop", timeout=timeout, options=stop_options)
        except NodeBossProcessError:
            pass
        finally:
            self._closed = True
            self._driver.kill(wait=min(timeout, 10.0))
            self._finalizer.detach()

    @property
    def pid(self) -> int:
        return self._driver.proc.pid

    def __enter__(self) -> NodeBoss:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
