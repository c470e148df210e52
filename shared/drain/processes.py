"""Process handlers: a pool of worker processes, one per CPU, kept for the instance's life.

Each worker runs one job at a time (``shared.drain.worker``), so CPU-bound handlers use
every core instead of taking turns on the GIL. A thread of the pool talks to each
worker and posts its answer to the event queue of the call that submitted the job.
When drain gives up on a job (its expiry, the call's budget) the worker running it is
killed, whatever the handler is doing, and a fresh one takes its place; a worker that
dies on its own (a crash, ``os._exit``) fails its job and is replaced the same way.

A worker is a fresh interpreter started on the instance's code, never a fork of a
process that holds threads and a database connection; it speaks JSON lines over its
stdin and stdout, so nothing but JSON crosses the boundary.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from queue import SimpleQueue
from typing import IO, Any

from shared.drain import worker
from shared.drain.events import Finished, Key, WorkerFree
from shared.drain.failures import WorkerDied
from shared.errors import ConfigError
from shared.handlers import Handler
from shared.handlers.registry import check_importable
from shared.pgboss.models import Job

log = logging.getLogger(__name__)

_CHECK_SECONDS = 120.0  # a worker's first answer waits for its start-up (imports)
_KILL_SECONDS = 5.0


@dataclass
class _Task:
    key: Key
    request: str  # one JSON line
    events: SimpleQueue[Any]


class _Worker:
    """One worker process and the thread that talks to it."""

    def __init__(self, pool: ProcessPool, number: int) -> None:
        self._pool = pool
        self._number = number
        self._lock = threading.Lock()
        self._requests: SimpleQueue[Any] = SimpleQueue()
        self.task: _Task | None = None  # assigned to it (under the pool's lock), sent or not
        self._sent: Key | None = None
        self._given_up: set[Key] = set()
        self._closed = False
        self.process = self._spawn()
        threading.Thread(target=self._serve, name=f"drain-worker-{number}", daemon=True).start()

    @property
    def pid(self) -> int:
        return self.process.pid

    @staticmethod
    def _spawn() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", worker.BOOT, json.dumps(list(dict.fromkeys(sys.path)))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            bufsize=1,
        )

    def _replace(self) -> None:
        """Kill the process (if it still lives) and start another; called under ``_lock``."""
        old = self.process
        old.kill()
        old.wait(_KILL_SECONDS)
        for stream in (old.stdin, old.stdout):
            if stream is not None:
                stream.close()
        if not self._closed:
            self.process = self._spawn()

    def run(self, task: _Task) -> None:
        self._requests.put(task)

    def check(self, request: str) -> Future[dict[str, Any] | None]:
        answer: Future[dict[str, Any] | None] = Future()
        self._requests.put((request, answer))
        return answer

    def give_up(self, key: Key) -> bool:
        """Stop working on ``key``: kill the process if it runs it. False if it is not ours."""
        with self._lock:
            if self.task is None or self.task.key != key:
                return False
            self._given_up.add(key)
            if self._sent == key:
                log.warning(f"killing worker process {self.process.pid}: drain gave up on job {key[1]}")
                self._replace()
            return True

    def close(self) -> None:
        self._requests.put(None)
        with self._lock:
            self._closed = True
            self._replace()

    def _exchange(self, request: str) -> dict[str, Any] | None:
        """Send one request and wait for its answer; None when the process died meanwhile."""
        with self._lock:
            if self._closed:
                return None
            if self.process.poll() is not None:  # died while idle (out of memory, say)
                self._replace()
            process = self.process
        stdin: IO[str] | None = process.stdin
        stdout: IO[str] | None = process.stdout
        assert stdin is not None and stdout is not None
        try:
            stdin.write(request + "\n")
            stdin.flush()
            line = stdout.readline()
        except (OSError, ValueError):  # a pipe broken or closed by a kill
            return None
        if not line:
            return None
        answer: dict[str, Any] = json.loads(line)
        return answer

    def _serve(self) -> None:
        while (request := self._requests.get()) is not None:
            if isinstance(request, tuple):
                line, future = request
                future.set_result(self._exchange(line))
            else:
                self._work(request)

    def _work(self, task: _Task) -> None:
        with self._lock:
            skip = task.key in self._given_up
            self._sent = None if skip else task.key
        answer = None if skip else self._exchange(task.request)
        with self._lock:
            given_up = task.key in self._given_up
            self._given_up.discard(task.key)
            self._sent = None
            exit_code = None
            if answer is None and not given_up:  # it died on its own: a crash, os._exit
                with contextlib.suppress(subprocess.TimeoutExpired):
                    exit_code = self.process.wait(_KILL_SECONDS)
                self._replace()
        self._pool.release(self)
        if given_up:  # drain has failed the job already; tell it only that this worker is free
            task.events.put(WorkerFree())
            return
        if answer is None:
            event = Finished(task.key, False, WorkerDied(f"the worker process exited (exit code {exit_code})"))
        elif "ok" in answer:
            event = Finished(task.key, True, answer["ok"])
        else:
            event = Finished(task.key, False, answer.get("failed") or answer.get("refused"))
        task.events.put(event)


class ProcessPool:
    """The instance's worker processes; the loop submits only as many jobs as ``free()`` says."""

    def __init__(self, size: int) -> None:
        self._lock = threading.Lock()
        self._checked: dict[Any, tuple[str, str]] = {}  # handler function -> its module and name
        self._waiting: collections.deque[_Task] = collections.deque()
        self._workers = [_Worker(self, number) for number in range(1, size + 1)]

    @property
    def size(self) -> int:
        return len(self._workers)

    def pids(self) -> list[int]:
        return [w.pid for w in self._workers]

    def free(self) -> int:
        with self._lock:
            return max(0, sum(1 for w in self._workers if w.task is None) - len(self._waiting))

    def check(self, handlers: Iterable[Handler]) -> None:
        """Refuse (ConfigError) a process handler a worker process cannot load, before its first job."""
        for handler in handlers:
            if handler.function in self._checked:
                continue
            where = f"handler of queue {handler.queue!r}"
            module, name = check_importable(handler.function, where)
            request = json.dumps({"kind": "check", "module": module, "name": name})
            answer = self._workers[0].check(request).result(timeout=_CHECK_SECONDS)
            if answer is None or "ok" not in answer:
                why = "the worker process exited" if answer is None else answer.get("refused")
                raise ConfigError(f"{where}: a worker process cannot load {module}.{name}: {why}")
            self._checked[handler.function] = (module, name)

    def submit(self, key: Key, handler: Handler, job: Job, events: SimpleQueue[Any]) -> None:
        """Run ``handler`` (``check``-ed first) on ``job`` in an idle worker."""
        module, name = self._checked[handler.function]
        request = json.dumps({"kind": "run", "module": module, "name": name, "job": worker.encode_job(job)})
        task = _Task(key, request, events)
        with self._lock:
            idle = next((w for w in self._workers if w.task is None), None)
            if idle is None:  # another call took the last idle worker meanwhile: wait for one
                self._waiting.append(task)
                return
            idle.task = task
        idle.run(task)

    def give_up(self, key: Key) -> None:
        """Drain gave up on ``key``: drop it if it still waits, kill its worker if it runs."""
        with self._lock:
            for task in self._waiting:
                if task.key == key:
                    self._waiting.remove(task)
                    return
        for w in self._workers:
            if w.give_up(key):
                return

    def release(self, finished: _Worker) -> None:
        """``finished`` is idle again: give it the next waiting task, if any."""
        with self._lock:
            task = finished.task = self._waiting.popleft() if self._waiting else None
        if task is not None:
            finished.run(task)

    def close(self) -> None:
        for w in self._workers:
            w.close()


_pool: ProcessPool | None = None
_pool_lock = threading.Lock()


def process_pool() -> ProcessPool:
    """The instance's pool, started on first use with one worker per CPU it may use."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ProcessPool(len(os.sched_getaffinity(0)))
            atexit.register(_pool.close)
        return _pool
