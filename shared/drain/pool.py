"""The handler threads: run thread and batch handlers off the loop's thread, report each result."""

from __future__ import annotations

import contextvars
import json
import threading
from collections.abc import Callable
from functools import partial
from queue import SimpleQueue
from typing import Any

from shared.drain.events import BatchFinished, Finished, Key
from shared.drain.failures import BatchJobFailed, HandlerOutputInvalid
from shared.handlers import Attempt, Failed, Handler
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
        """Run a thread handler on one job."""
        self._put(partial(self._work, key, handler, attempt))

    def submit_batch(self, keys: list[Key], handler: Handler, attempt: Attempt) -> None:
        """Run a batch handler on the attempt's jobs (``keys`` in the same order)."""
        self._put(partial(self._work_batch, keys, handler, attempt))

    def close(self) -> None:
        for _ in range(self._threads):
            self._tasks.put(None)

    def _put(self, work: Callable[[], None]) -> None:
        # Each task runs in a copy of the request's context, so handler logs keep its trace.
        self._tasks.put((work, contextvars.copy_context()))
        with self._lock:
            if self._idle:
                self._idle -= 1  # that thread takes this task
                return
        self._threads += 1
        threading.Thread(target=self._serve, name=f"drain-handler-{self._threads}", daemon=True).start()

    def _serve(self) -> None:
        while (task := self._tasks.get()) is not None:
            work, context = task
            context.run(work)

    def _report(self, event: Any) -> None:
        with self._lock:
            self._idle += 1  # before the event, so the job the loop starts on it can reuse this thread
        self._events.put(event)

    def _work(self, key: Key, handler: Handler, attempt: Attempt) -> None:
        try:
            output = checked_output(run_attempt(handler, attempt))
        except BaseException as exc:  # a handler's failure, whatever it is, is the job's failure
            event = Finished(key, False, exc)
        else:
            event = Finished(key, True, output)
        self._report(event)

    def _work_batch(self, keys: list[Key], handler: Handler, attempt: Attempt) -> None:
        try:
            outputs = run_attempt(handler, attempt)
            if not isinstance(outputs, list | tuple) or len(outputs) != len(keys):
                got = f"{len(outputs)} outputs" if isinstance(outputs, list | tuple) else type(outputs).__name__
                raise HandlerOutputInvalid(f"a batch handler must return one output per job: {len(keys)} jobs, {got}")
        except BaseException as exc:  # the batch failed: every job of it did
            self._report(BatchFinished(keys, [(False, exc)] * len(keys)))
            return
        self._report(BatchFinished(keys, [batch_result(output) for output in outputs]))


def checked_output(output: Any) -> Any:
    """``output`` when JSON can hold it; otherwise HandlerOutputInvalid, so the job fails."""
    try:
        json.dumps(output, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise HandlerOutputInvalid(f"handler output cannot be stored as JSON: {exc}") from None
    return output


def batch_result(output: Any) -> tuple[bool, Any]:
    """One job's ``(ok, output or error)`` from its place in a batch handler's outputs."""
    if isinstance(output, Failed):
        error = output.error
        return False, error if isinstance(error, BaseException) else BatchJobFailed(str(error))
    try:
        return True, checked_output(output)
    except HandlerOutputInvalid as exc:
        return False, exc
