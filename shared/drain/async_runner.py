"""Async handlers: one event loop per drain call, one task per job, cancelled when drain gives up.

The loop runs on a thread of its own, started with the call's first async job; the
drain loop's thread hands it jobs and cancellations through ``call_soon_threadsafe``,
and it reports each result through the call's event queue like the handler threads.
Hundreds of jobs awaiting I/O cost one thread, not one each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from queue import SimpleQueue
from typing import Any

from shared.drain.events import Finished, Key
from shared.drain.pool import checked_output
from shared.handlers import Attempt, Handler
from shared.handlers.registry import attempt_context

log = logging.getLogger(__name__)

_CLOSE_SECONDS = 2.0  # how long closing waits for cancelled tasks to unwind


class AsyncRunner:
    """The call's event loop and its tasks, by job key."""

    def __init__(self, events: SimpleQueue[Any]) -> None:
        self._events = events
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks: dict[Key, asyncio.Task[None]] = {}  # touched only on the event loop's thread

    def submit(self, key: Key, handler: Handler, attempt: Attempt) -> None:
        """Start a task of ``handler`` on the attempt's job."""
        loop = self._started()
        context = attempt_context(attempt)  # the request's context (trace) with the attempt
        loop.call_soon_threadsafe(self._start, key, handler, attempt, context)

    def cancel(self, key: Key) -> None:
        """Cancel the job's task (drain gave up on it); nothing is reported for it."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._cancel, key)

    def close(self) -> None:
        """Cancel what still runs, let it unwind briefly, and stop the loop."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop already stopped
            loop.call_soon_threadsafe(self._shut_down)
        thread.join(_CLOSE_SECONDS + 1)

    # -- on the drain loop's thread ------------------------------------------------------

    def _started(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._run_loop, name="drain-async", daemon=True)
            self._thread.start()
        return self._loop

    def _run_loop(self) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    # -- on the event loop's thread ------------------------------------------------------

    def _start(self, key: Key, handler: Handler, attempt: Attempt, context: Any) -> None:
        assert self._loop is not None
        if attempt.stop.is_set():  # given up on before it started
            return
        self._tasks[key] = self._loop.create_task(self._run(key, handler, attempt), context=context)

    async def _run(self, key: Key, handler: Handler, attempt: Attempt) -> None:
        try:
            output = checked_output(await handler.function(attempt.work))
        except asyncio.CancelledError as exc:
            if self._tasks.pop(key, None) is None:
                return  # drain gave up on it (``_cancel``) and fails the job itself
            event = Finished(key, False, exc)  # cancelled by something else: the job failed
        except BaseException as exc:  # a handler's failure, whatever it is, is the job's failure
            self._tasks.pop(key, None)
            event = Finished(key, False, exc)
        else:
            self._tasks.pop(key, None)
            event = Finished(key, True, output)
        self._events.put(event)

    def _cancel(self, key: Key) -> None:
        task = self._tasks.pop(key, None)
        if task is not None:
            task.cancel()

    def _shut_down(self) -> None:
        assert self._loop is not None
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        loop = self._loop

        async def unwind() -> None:
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=_CLOSE_SECONDS)
                if pending:
                    log.warning(f"{len(pending)} async handlers did not stop when cancelled")
            loop.stop()

        loop.create_task(unwind())
