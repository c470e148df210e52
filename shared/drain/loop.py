"""The loop of one drain call: fetch into free handler slots, collect results, settle, watch.

It runs on the request's thread, which alone talks to the database through the
instance's one connection; handlers (on threads, on the call's event loop or in the
instance's worker processes, as each handler's model says) and the listener report
through one event queue (see ``shared.drain`` for the call's shape).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from functools import partial
from queue import Empty, SimpleQueue
from typing import Any

from shared.db import Database
from shared.drain.async_runner import AsyncRunner
from shared.drain.events import BatchFinished, Finished, Key, ListenerLost, Woken, WorkerFree
from shared.drain.failures import DrainStopped, HandlerTimedOut
from shared.drain.limits import Limits
from shared.drain.listener import Listener
from shared.drain.outage import OutageGuard
from shared.drain.pool import HandlerPool
from shared.drain.processes import ProcessPool, process_pool
from shared.drain.queues import HandlerQueues
from shared.drain.settling import Settler
from shared.drain.state import QueueState, Running
from shared.drain.summary import QueueStats, Summary
from shared.errors import DatabaseError, DatabaseUnavailable
from shared.handlers import Attempt, Registry
from shared.pgboss.client import PgBoss
from shared.pgboss.models import Job

log = logging.getLogger(__name__)


class Drainer:
    """One drain call over ``queues`` of ``registry``; use once."""

    def __init__(
        self,
        boss: PgBoss,
        registry: Registry,
        limits: Limits,
        *,
        listen: Callable[[], Database] | None = None,
        handler_queues: HandlerQueues | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._boss = boss
        # An instance passes its own, so each queue is created once per instance.
        self._handler_queues = handler_queues or HandlerQueues(boss)
        self._registry = registry
        self._limits = limits
        self._open_listener_db = listen
        self._clock = clock
        self._events: SimpleQueue[Any] = SimpleQueue()
        self._running: dict[Key, Running] = {}
        self._queues: dict[str, QueueState] = {}
        self._order: list[str] = []
        self._fetched = 0
        self._listener: Listener | None = None
        self._listening = False
        self._pool = HandlerPool(self._events)
        self._async = AsyncRunner(self._events)
        self._processes: ProcessPool | None = None  # the instance's, when a process handler is in the call
        self._outage = OutageGuard(clock)
        self._settler = Settler(boss, self._outage)

    # -- public -------------------------------------------------------------------------

    def run(self, names: Sequence[str]) -> Summary:
        started = self._clock()
        limits = self._limits
        hard_end = started + limits.end_seconds
        handlers = [self._registry.get(name) for name in names]
        for handler in handlers:
            cutoff = handler.expected_seconds
            if cutoff is None:
                cutoff = min(limits.stop_fetching_seconds, limits.end_seconds / 2)
            self._queues[handler.queue] = QueueState(
                handler.queue, handler, QueueStats(), fetch_until=hard_end - cutoff
            )
        self._order = [handler.queue for handler in handlers]
        summary = Summary({name: state.stats for name, state in self._queues.items()})

        in_processes = [handler for handler in handlers if handler.model == "process"]
        if in_processes:
            self._processes = process_pool()
            self._processes.check(in_processes)
        self._prepare()
        if limits.budget_seconds > 0 and self._open_listener_db is not None:
            self._listener = Listener(
                self._open_listener_db, self._boss.notify_channel, self._events, limits.listen_poll_seconds
            )
            self._listener.start()
        try:
            summary.stopped = self._loop(hard_end)
        finally:
            self._finish(hard_end)
            self._pool.close()
            self._async.close()
            if self._listener is not None:
                self._listener.stop()
        summary.wake = "listen" if self._listening else "poll"
        summary.unsettled = sum(len(s.completes) + len(s.fails) for s in self._queues.values())
        summary.duration_ms = round((self._clock() - started) * 1000, 1)
        if summary.unsettled:
            log.error(
                f"database unavailable: {summary.unsettled} finished jobs could not be settled; "
                "pg-boss's expiry will retry them",
                extra={"fields": {"summary": summary.as_dict()}},
            )
            raise DatabaseUnavailable(
                f"database unavailable; {summary.unsettled} jobs stay active until they expire and are retried"
            )
        return summary

    # -- phases ---------------------------------------------------------------------------

    def _prepare(self) -> None:
        boss = self._boss
        boss.check_schema()
        self._handler_queues.ensure(list(self._registry))  # every handler's queue, not only this call's
        for name, state in self._queues.items():
            queue = boss.get_queue(name)
            if queue is None:  # deleted since this instance created it
                self._handler_queues.forget(name)
                self._handler_queues.ensure([state.handler])
                queue = boss.get_queue(name)
            state.notify = bool(queue is not None and queue.notify)
            outcome = boss.fail_expired(name)
            state.stats.expired += len(outcome.retried) + len(outcome.failed)
            state.stats.dead_lettered += len(outcome.dead_lettered)

    def _loop(self, hard_end: float) -> str:
        limits = self._limits
        watching = limits.budget_seconds > 0
        while True:
            self._take_events(block_for=None)
            now = self._clock()
            self._time_out_and_touch(now)
            if now >= hard_end:
                return "budget"  # _finish settles what is held
            if watching:
                for state in self._queues.values():
                    if state.dry and now >= state.next_poll:
                        state.dry = False
            # Fetch before settling: a handler slot or worker process freed by a job that
            # just finished gets its next job one round trip sooner, and the finished job's
            # complete waits for that round trip instead of the next job waiting for it.
            self._fetch_round()
            self._settle(self._clock())
            now = self._clock()
            if not self._running and not self._holding():
                if self._outage.down is not None:
                    raise self._outage.down
                if self._fetched >= limits.max_jobs:
                    return "max_jobs"
                open_queues = [s for s in self._queues.values() if now < s.fetch_until and not s.broken]
                if not open_queues:
                    return "budget"
                if not watching and all(s.dry for s in open_queues):
                    return "empty"
            self._take_events(block_for=max(0.0, self._next_wake(now, hard_end) - now))

    def _finish(self, hard_end: float) -> None:
        """Fail what still runs, then settle everything held, retrying for a little while."""
        self._take_events(block_for=None)  # what finished in time is settled as it ended
        for key, run in list(self._running.items()):
            self._give_up(key, run)
            state = self._queues[key[0]]
            state.stats.interrupted += 1
            state.fails.append(
                (run.job, DrainStopped("the drain call's budget ended while the handler was still running"))
            )
        for state in self._queues.values():
            state.touches.clear()
        deadline = max(self._clock(), hard_end) + self._limits.settle_seconds
        while self._holding():
            self._settle(self._clock(), final=True)
            if not self._holding() or self._clock() >= deadline:
                return
            time.sleep(min(self._outage.backoff, max(0.0, deadline - self._clock())))

    # -- events -----------------------------------------------------------------------------

    def _take_events(self, block_for: float | None) -> None:
        try:
            event = self._events.get(timeout=block_for) if block_for else self._events.get_nowait()
        except Empty:
            return
        while True:
            self._handle(event)
            try:
                event = self._events.get_nowait()
            except Empty:
                return

    def _handle(self, event: Any) -> None:
        if isinstance(event, Finished):
            self._finished(event.key, event.ok, event.value)
        elif isinstance(event, BatchFinished):
            for key, (ok, value) in zip(event.keys, event.results, strict=True):
                self._finished(key, ok, value)
        elif isinstance(event, WorkerFree):
            pass  # taking the event was the point: the loop goes round and fetches
        elif isinstance(event, Woken):
            targets = self._queues.values() if event.queue is None else [self._queues.get(event.queue)]
            for target in targets:
                if target is not None:
                    target.dry = False
            if event.queue is None:
                self._listening = True
        elif isinstance(event, ListenerLost):
            log.warning(f"drain cannot listen for NOTIFY and polls instead: {event.reason}")
            self._listening = False
            for state in self._queues.values():
                state.dry = False

    def _finished(self, key: Key, ok: bool, value: Any) -> None:
        run = self._running.pop(key, None)
        if run is None:
            return  # given up on already (timed out, or the job left us); the fence drops it
        state = self._queues[key[0]]
        if ok:
            state.completes.append((run.job, value))
            return
        if isinstance(value, dict):  # a worker process's {name, message, stack}
            why = f"{value.get('name')}: {value.get('message')}"
        else:
            why = f"{type(value).__name__}: {value}"
        log.warning(
            f"handler of {state.name!r} failed job {run.job.id}: {why}",
            extra={"fields": {"queue": state.name, "job_id": run.job.id}},
        )
        state.fails.append((run.job, value))

    # -- fetching ---------------------------------------------------------------------------

    def _fetch_round(self) -> None:
        limits = self._limits
        while True:
            if self._outage.paused(self._clock()):
                return
            now = self._clock()
            in_turn = (self._queues[name] for name in self._order)
            eligible = [s for s in in_turn if not (s.dry or s.broken) and now < s.fetch_until and self._free(s)]
            room = min(limits.concurrency - len(self._running), limits.max_jobs - self._fetched)
            if room <= 0 or not eligible:
                return
            share = max(1, room // len(eligible))
            self._order.append(self._order.pop(0))  # the next round starts one queue further on
            for state in eligible:
                room = min(limits.concurrency - len(self._running), limits.max_jobs - self._fetched)
                if room <= 0:
                    return
                wanted = min(self._fetch_size(state), share, room)
                if wanted <= 0:
                    continue
                fetched_at = self._clock()
                try:
                    jobs = self._outage.run(partial(self._boss.fetch, state.name, wanted))
                except DatabaseError as exc:
                    log.error(
                        f"fetching from {state.name!r} was refused ({exc}); skipping it in this call",
                        extra={"fields": {"queue": state.name}},
                    )
                    state.broken = True
                    continue
                if jobs is None:
                    return
                if state.handler.model != "batch":
                    for job in jobs:
                        self._start(state, job, fetched_at)
                elif jobs:
                    self._start_batch(state, jobs, fetched_at)
                if len(jobs) < wanted:
                    state.dry = True
                    state.next_poll = self._clock() + self._poll_interval(state)

    def _poll_interval(self, state: QueueState) -> float:
        if self._listening and state.notify:
            return self._limits.listen_poll_seconds
        return self._limits.poll_seconds

    def _free(self, state: QueueState) -> int:
        """How many more jobs the queue's handler can start now, whatever the call's room."""
        if state.handler.model == "process" and self._processes is not None:
            return self._processes.free()
        return self._limits.concurrency

    def _fetch_size(self, state: QueueState) -> int:
        """Most jobs one fetch of this queue claims: a batch handler's batch, else DRAIN_BATCH_SIZE."""
        handler = state.handler
        size = handler.batch_size if handler.model == "batch" else self._limits.batch_size
        return min(size, self._free(state))

    def _start(self, state: QueueState, job: Job, fetched_at: float) -> None:
        attempt = Attempt(job)
        key = self._track(state, job, attempt, fetched_at + job.expire_seconds, fetched_at)
        handler = state.handler
        if handler.model == "async":
            self._async.submit(key, handler, attempt)
        elif handler.model == "process" and self._processes is not None:
            self._processes.submit(key, handler, job, self._events)
        else:
            self._pool.submit(key, handler, attempt)

    def _start_batch(self, state: QueueState, jobs: list[Job], fetched_at: float) -> None:
        # As pg-boss's work(): a batch has until the longest expire_seconds among its jobs.
        expire_at = fetched_at + max(job.expire_seconds for job in jobs)
        attempt = Attempt(list(jobs))
        keys = [self._track(state, job, attempt, expire_at, fetched_at) for job in jobs]
        self._pool.submit_batch(keys, state.handler, attempt)

    def _track(self, state: QueueState, job: Job, attempt: Attempt, expire_at: float, fetched_at: float) -> Key:
        self._fetched += 1
        state.stats.fetched += 1
        key = (state.name, job.id, job.retry_count)
        heartbeat = job.heartbeat_seconds
        self._running[key] = Running(
            job, attempt, expire_at=expire_at, next_touch=fetched_at + heartbeat / 2 if heartbeat else None
        )
        return key

    def _give_up(self, key: Key, run: Running) -> None:
        """Stop tracking a running job: tell its handler, cancel its task, kill its worker process."""
        del self._running[key]
        run.attempt.stop.set()
        model = self._queues[key[0]].handler.model
        if model == "async":
            self._async.cancel(key)
        elif model == "process" and self._processes is not None:
            self._processes.give_up(key)

    # -- timers -----------------------------------------------------------------------------

    def _time_out_and_touch(self, now: float) -> None:
        for key, run in list(self._running.items()):
            state = self._queues[key[0]]
            if now >= run.expire_at:
                self._give_up(key, run)
                state.stats.timed_out += 1
                log.warning(
                    f"handler of {state.name!r} outlived job {run.job.id}'s expire_seconds "
                    f"({run.job.expire_seconds}); failing it as timed out",
                    extra={"fields": {"queue": state.name, "job_id": run.job.id}},
                )
                state.fails.append(
                    (
                        run.job,
                        HandlerTimedOut(
                            f"job timed out: the handler was still running after {run.job.expire_seconds}s "
                            "(the job's expire_seconds)"
                        ),
                    )
                )
            elif run.next_touch is not None and now >= run.next_touch:
                state.touches.append(run.job)
                run.next_touch = now + (run.job.heartbeat_seconds or 0) / 2

    def _next_wake(self, now: float, hard_end: float) -> float:
        wake = hard_end
        for run in self._running.values():
            wake = min(wake, run.expire_at, run.next_touch or wake)
        if self._holding():
            wake = min(wake, self._outage.retry_at)
        fetching = self._fetched < self._limits.max_jobs and len(self._running) < self._limits.concurrency
        if fetching and self._limits.budget_seconds > 0:
            for state in self._queues.values():
                if now < state.fetch_until and not state.broken:
                    due = state.next_poll if state.dry else now
                    if not self._free(state):  # its worker processes are busy with another call's jobs
                        due = max(due, now + self._limits.poll_seconds)
                    if self._outage.down is not None:
                        due = max(due, self._outage.retry_at)
                    wake = min(wake, due)
        return wake

    # -- settling ---------------------------------------------------------------------------

    def _holding(self) -> bool:
        return any(state.holding() for state in self._queues.values())

    def _settle(self, now: float, *, final: bool = False) -> None:
        if self._outage.paused(now) and not final:
            return
        for state in self._queues.values():
            if not self._settler.settle(state):
                return
