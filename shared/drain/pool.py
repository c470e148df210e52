"""The handler threads: run handlers off the loop's thread and report each result as an event."""

from __future__ import annotations

import contextvars
import json
import threading
from queue import SimpleQueue
from typing import Any

from shared.drain.events import Finished, Key
from shared.drain.failures import HandlerOutputInvalid
from shared.handlers import Attempt, Handler
from shared.handlers.registry import run_attempt


class HandlerPool:
    """Threads that run handlers, reused within a call and started only when none is idle.

    The loop never runs more than its concurrency at once, so at most that many threads
    are busy with live jobs; a thread whose handler drain gave up on (timed out, budget
    over) cannot be stopped and simply never comes back idle, so the next job gets a new
    one and the call keeps its concurrency. Starting a thread costs far more than a
    quick handler, hence reuse first. Threads are daemons, so a handler that never
    returns cannot keep the process from exiting.
    """

    def __init__(self, events: SimpleQueue[Any]) -> None:
        self._events = events
        self._tasks: SimpleQueue[Any] = SimpleQueue()
        self._threads = 0
        self._idle = 0  # threads waiting for a task no submit has claimed yet
        self._lock = threading.Lock()

    def submit(self, key: Key, handler: Handler, attempt: Attempt) -> None:
        # Each job runs in a copy of the request's context, so handler logs keep its trace.
        self._tasks.put((key, handler, attempt, contextvars.copy_context()))
        with self._lock:
            if self._idle:
                self._idle -= 1  # that thread takes this task
                return
        self._threads += 1
        threading.Thread(target=self._serve, name=f"drain-handler-{self._threads}", daemon=True).start()

    def close(self) -> None:
        for _ in range(self._threads):
            self._tasks.put(None)

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
            event = Finished(key, False, exc)
        else:
            event = Finished(key, True, output)
        with self._lock:
            self._idle += 1  # before the event, so the job the loop starts on it can reuse this thread
        self._events.put(event)
