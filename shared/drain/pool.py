"""The handler threads: run handlers off the loop's thread and report each result as an event."""

from __future__ import annotations

import contextvars
import json
import queue as queues_
import threading
from typing import Any

from shared.drain.events import Finished, Key
from shared.drain.failures import HandlerOutputInvalid
from shared.handlers import Attempt, Handler
from shared.handlers.registry import run_attempt


class HandlerPool:
    """Threads that run handlers, started as needed up to ``size`` and reused within a call.

    A thread whose handler drain gave up on (timed out, budget over) cannot be stopped;
    ``replace`` starts another so the call keeps its concurrency. Threads are daemons, so
    a handler that never returns cannot keep the process from exiting.
    """

    def __init__(self, events: queues_.SimpleQueue[Any], size: int) -> None:
        self._events = events
        self._size = size
        self._tasks: queues_.SimpleQueue[Any] = queues_.SimpleQueue()
        self._threads = 0

    def submit(self, key: Key, handler: Handler, attempt: Attempt) -> None:
        # Each job runs in a copy of the request's context, so handler logs keep its trace.
        self._tasks.put((key, handler, attempt, contextvars.copy_context()))
        if self._threads < self._size:
            self._start_thread()

    def replace(self) -> None:
        self._start_thread()

    def close(self) -> None:
        for _ in range(self._threads):
            self._tasks.put(None)

    def _start_thread(self) -> None:
        self._threads += 1
        threading.Thread(target=self._serve, name=f"drain-handler-{self._threads}", daemon=True).start()

    def _serve(self) -> None:
        while (task := self._tasks.get()) is not None:
            key, handler, attempt, context = task
            context.run(self._work, key, handler, attempt)

    def _work(self, key: Key, handler: Handler, attempt: Attempt) -> None:
        try:
            output = run_attempt(handler, attempt)
            try:
                json.dumps(output, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise HandlerOutputInvalid(f"handler output cannot be stored as JSON: {exc}") from None
        except BaseException as exc:  # a handler's failure, whatever it is, is the job's failure
            self._events.put(Finished(key, False, exc))
        else:
            self._events.put(Finished(key, True, output))
