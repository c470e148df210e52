"""The drain loop: claim due pg-boss jobs, run their Python handlers, settle every one.

One call of ``drain`` is one ``Drainer.run``. Its shape:

* **Prepare.** Check pg-boss's schema version; create each handler's queue once per
  instance (pg-boss's idempotent ``create_queue``); run pg-boss's expiry and heartbeat
  sweep (``fail_expired``) on the call's queues, so a crashed earlier call never leaves
  jobs active for ever even when no Node supervisor runs. A database that cannot be
  reached here ends the call before anything is claimed.
* **Loop**, on this (the request's) thread, which alone talks to the database through
  the instance's one connection. Handlers run on a pool of threads started as needed,
  at most ``concurrency`` at once, and report back through one event queue; the loop fetches
  only as many jobs as there are free handler slots, so nothing claimed sits waiting
  while its expiry clock runs. Queues take turns, each fetch round starting one queue
  further on and giving each queue with due jobs an equal share of the free slots, so
  one busy queue cannot starve the others. Finished jobs are settled in batches per
  queue (``complete`` / ``fail``, fenced on the fetched attempt, with pg-boss's retry,
  backoff and dead-letter bookkeeping). A handler that outlives its job's
  ``expire_seconds`` is failed as timed out; a job with ``heartbeat_seconds`` is
  touched every half heartbeat while its handler runs.
* **Watch.** With a budget, a call that runs out of due jobs keeps watching until its
  budget ends, so calls made every minute give continuous coverage. It wakes on
  pg-boss's own NOTIFY (a listener thread on a connection of its own, LISTENing on the
  schema's channel; the payload is the queue name) and still looks every
  ``listen_poll_seconds`` for jobs pg-boss does not announce (delayed, retried); or,
  where LISTEN is impossible, polls every ``poll_seconds``. With a budget of 0 it
  drains what is due and returns.
* **End.** Fetching stops ``stop_fetching_seconds`` before the budget ends (a handler's
  ``expected_seconds`` instead, for its queue) and when ``max_jobs`` were fetched. At
  the budget's end a handler still running is failed with a clear error, so pg-boss's
  retry rules apply; the job is not un-claimed, so the attempt fence discards whatever
  that handler settles late. Nothing claimed is left active with nobody working on it,
  unless the database itself is gone: then the call answers 503 and pg-boss's expiry
  (the next call's sweep) retries those jobs.

A connection that breaks under a statement is retried once on a fresh connection
(killed backend, pooler restart); a database that stays away pauses fetching, keeps
the held jobs running, and retries their settling with backoff until the budget ends.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import queue as queues_
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from shared.db import ConnectionParams, Database
from shared.errors import AppError, DatabaseError, DatabaseUnavailable
from shared.handlers import Attempt, Handler, Registry
from shared.handlers.registry import run_attempt
from shared.pgboss.client import PgBoss
from shared.pgboss.models import FailOutcome, Job, Queue, QueueOptions

log = logging.getLogger(__name__)

# Supabase's transaction-mode pooler (Supavisor) listens here; LISTEN cannot work
# through it, because each transaction may run on a different server connection.
_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 2.0


class HandlerTimedOut(Exception):
    """The handler ran longer than its job's ``expire_seconds``."""


class DrainStopped(Exception):
    """The drain call's budget ended while the handler was still running."""


class HandlerOutputInvalid(Exception):
    """The handler returned something that cannot be stored as JSON."""


# -- limits and results ------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """What bounds one call."""

    budget_seconds: float  # 0: drain what is due now, then return
    ceiling_seconds: float  # the hard end of a call whatever its budget
    max_jobs: int
    batch_size: int
    concurrency: int
    stop_fetching_seconds: float
    poll_seconds: float
    listen_poll_seconds: float
    settle_seconds: float  # after the hard end: how long to keep trying to settle

    @classmethod
    def from_settings(
        cls, settings: Any, *, budget_seconds: float | None = None, max_jobs: int | None = None
    ) -> Limits:
        return cls(
            budget_seconds=settings.drain_default_budget_seconds if budget_seconds is None else budget_seconds,
            ceiling_seconds=settings.drain_ceiling_seconds,
            max_jobs=settings.drain_max_jobs if max_jobs is None else max_jobs,
            batch_size=settings.drain_batch_size,
            concurrency=settings.drain_concurrency,
            stop_fetching_seconds=settings.drain_stop_fetching_seconds,
            poll_seconds=settings.drain_poll_seconds,
            listen_poll_seconds=settings.drain_listen_poll_seconds,
            settle_seconds=settings.drain_margin_seconds / 2,
        )

    @property
    def end_seconds(self) -> float:
        """When the call ends at the latest, counted from its start."""
        return self.budget_seconds if self.budget_seconds > 0 else self.ceiling_seconds


@dataclass
class QueueStats:
    fetched: int = 0
    completed: int = 0
    failed: int = 0  # attempts that failed for good (state failed)
    retried: int = 0  # attempts that failed and went back to retry
    expired: int = 0  # jobs the start-of-call sweep failed (expiry or lost heartbeat)
    timed_out: int = 0  # handlers that outlived their job's expire_seconds
    interrupted: int = 0  # handlers still running when the budget ended
    dead_lettered: int = 0
    superseded: int = 0  # settles the attempt fence discarded (the job moved on meanwhile)

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


@dataclass
class Summary:
    queues: dict[str, QueueStats]
    stopped: str = "empty"  # budget | max_jobs | empty
    wake: str = "poll"  # listen | poll: how the call learnt of new jobs at the end
    duration_ms: float = 0.0
    unsettled: int = 0

    def total(self, name: str) -> int:
        return sum(getattr(stats, name) for stats in self.queues.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "fetched": self.total("fetched"),
            "completed": self.total("completed"),
            "failed": self.total("failed"),
            "retried": self.total("retried"),
            "expired": self.total("expired"),
            "queues": {name: stats.as_dict() for name, stats in self.queues.items()},
            "duration_ms": self.duration_ms,
            "stopped": self.stopped,
            "wake": self.wake,
        }


# -- events from handler and listener threads ---------------------------------------------

_Key = tuple[str, str, int]  # queue, job id, attempt (retry_count): unique within a call


@dataclass(frozen=True)
class _Finished:
    key: _Key
    ok: bool
    value: Any


@dataclass(frozen=True)
class _Woken:
    queue: str | None  # None: look at every queue


@dataclass(frozen=True)
class _ListenerLost:
    reason: str


@dataclass
class _Running:
    job: Job
    attempt: Attempt
    expire_at: float
    next_touch: float | None


@dataclass
class _QueueState:
    name: str
    handler: Handler
    stats: QueueStats
    fetch_until: float
    notify: bool = True
    dry: bool = False  # the last fetch found fewer due jobs than it asked for
    broken: bool = False  # the database refused to fetch from it; skipped for the call
    next_poll: float = 0.0
    completes: list[tuple[Job, Any]] = field(default_factory=list)
    fails: list[tuple[Job, BaseException]] = field(default_factory=list)
    touches: list[Job] = field(default_factory=list)


# -- preparing queues ------------------------------------------------------------------------

# Queues created so far, per client (so per instance, and afresh after instance.reset()).
_ensured: weakref.WeakKeyDictionary[PgBoss, set[str]] = weakref.WeakKeyDictionary()
_ensured_lock = threading.Lock()

# QueueOptions wire names → Queue attributes, to spot a queue configured differently.
_QUEUE_ATTRIBUTES = {
    "policy": "policy",
    "retryLimit": "retry_limit",
    "retryDelay": "retry_delay",
    "retryBackoff": "retry_backoff",
    "retryDelayMax": "retry_delay_max",
    "expireInSeconds": "expire_seconds",
    "retentionSeconds": "retention_seconds",
    "deleteAfterSeconds": "deletion_seconds",
    "deadLetter": "dead_letter",
    "heartbeatSeconds": "heartbeat_seconds",
    "notify": "notify",
}


def ensure_queues(boss: PgBoss, handlers: Iterable[Handler]) -> None:
    """Create each handler's queue (and its dead-letter queue) once per client."""
    with _ensured_lock:
        done = _ensured.setdefault(boss, set())
        pending = [h for h in handlers if h.queue not in done]
        own = {h.queue for h in pending}
        # A dead-letter queue must exist before a queue that names it: create the ones
        # no handler configures with pg-boss's defaults, and configured ones first.
        for handler in pending:
            dead_letter = handler.options.dead_letter
            if dead_letter and dead_letter not in own and dead_letter not in done:
                boss.create_queue(dead_letter, QueueOptions())
                done.add(dead_letter)
        dead_letters = {h.options.dead_letter for h in pending}
        for handler in sorted(pending, key=lambda h: h.queue not in dead_letters):
            _warn_if_configured_differently(handler, boss.create_queue(handler.queue, handler.options))
            done.add(handler.queue)


def forget_ensured_queue(boss: PgBoss, name: str) -> None:
    """Make the next ``ensure_queues`` create this queue again (it was deleted)."""
    with _ensured_lock:
        _ensured.get(boss, set()).discard(name)


def _warn_if_configured_differently(handler: Handler, queue: Queue) -> None:
    differences = []
    for option, wanted in handler.options.wire().items():
        attribute = _QUEUE_ATTRIBUTES.get(option)
        if attribute is None:
            continue
        actual = getattr(queue, attribute)
        actual = getattr(actual, "value", actual)
        if actual != wanted:
            differences.append(f"{option} is {actual!r}, the handler asks for {wanted!r}")
    if differences:
        log.warning(
            f"queue {handler.queue!r} already exists configured differently from its handler "
            f"({'; '.join(differences)}); create_queue leaves an existing queue as it is, so "
            "change it with pg-boss's updateQueue",
            extra={"fields": {"queue": handler.queue}},
        )


def listen_url(settings: Any) -> str | None:
    """The URL drain LISTENs through, or None when it should poll."""
    chosen = settings.drain_listen_database_url or settings.database_url
    if settings.drain_listen == "off" or chosen is None:
        return None
    url = chosen.get_secret_value()
    behind_pooler = ConnectionParams.from_url(url).through_transaction_pooler
    if settings.drain_listen == "auto" and settings.drain_listen_database_url is None and behind_pooler:
        return None
    return url


# -- the listener thread ---------------------------------------------------------------------


class Listener:
    """LISTEN on pg-boss's channel on a connection of its own; posts each queue name woken."""

    def __init__(
        self, open_database: Callable[[], Database], channel: str, events: queues_.SimpleQueue[Any], interval: float
    ) -> None:
        self._open = open_database
        self._channel = channel
        self._events = events
        self._interval = interval
        self._stop = threading.Event()
        self._wake_read, self._wake_write = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name="drain-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_write.send(b"\0")

    def _run(self) -> None:
        database: Database | None = None
        try:
            database = self._open()
            database.listen(self._channel)
            self._events.put(_Woken(None))  # listening now: anything sent before may be due
            while not self._stop.is_set():
                for channel, payload in database.notifications(self._interval, wake=self._wake_read):
                    if channel == self._channel:
                        self._events.put(_Woken(payload))
                self._wake_read.setblocking(False)
                with contextlib.suppress(OSError):
                    self._wake_read.recv(64)
                self._wake_read.setblocking(True)
        except (AppError, OSError, ValueError) as exc:
            if not self._stop.is_set():
                self._events.put(_ListenerLost(str(exc)))
        finally:
            if database is not None:
                database.close()
            self._wake_read.close()
            self._wake_write.close()


# -- the handler threads ----------------------------------------------------------------------


class _Pool:
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

    def submit(self, key: _Key, handler: Handler, attempt: Attempt) -> None:
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

    def _work(self, key: _Key, handler: Handler, attempt: Attempt) -> None:
        try:
            output = run_attempt(handler, attempt)
            try:
                json.dumps(output, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise HandlerOutputInvalid(f"handler output cannot be stored as JSON: {exc}") from None
        except BaseException as exc:  # a handler's failure, whatever it is, is the job's failure
            self._events.put(_Finished(key, False, exc))
        else:
            self._events.put(_Finished(key, True, output))


# -- the loop ----------------------------------------------------------------------------------


class Drainer:
    """One drain call over ``queues`` of ``registry``; use once."""

    def __init__(
        self,
        boss: PgBoss,
        registry: Registry,
        limits: Limits,
        *,
        listen: Callable[[], Database] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._boss = boss
        self._registry = registry
        self._limits = limits
        self._open_listener_db = listen
        self._clock = clock
        self._events: queues_.SimpleQueue[Any] = queues_.SimpleQueue()
        self._running: dict[_Key, _Running] = {}
        self._queues: dict[str, _QueueState] = {}
        self._order: list[str] = []
        self._fetched = 0
        self._listener: Listener | None = None
        self._listening = False
        self._pool = _Pool(self._events, limits.concurrency)
        self._db_down: DatabaseUnavailable | None = None
        self._db_retry_at = 0.0
        self._db_backoff = _BACKOFF_FIRST

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
            self._queues[handler.queue] = _QueueState(
                handler.queue, handler, QueueStats(), fetch_until=hard_end - cutoff
            )
        self._order = [handler.queue for handler in handlers]
        summary = Summary({name: state.stats for name, state in self._queues.items()})

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
        ensure_queues(boss, list(self._registry))  # every handler's queue, not only this call's
        for name, state in self._queues.items():
            queue = boss.get_queue(name)
            if queue is None:  # deleted since this instance created it
                forget_ensured_queue(boss, name)
                ensure_queues(boss, [state.handler])
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
            self._settle(now)
            now = self._clock()
            if now >= hard_end:
                return "budget"
            if watching:
                for state in self._queues.values():
                    if state.dry and now >= state.next_poll:
                        state.dry = False
            self._fetch_round()
            now = self._clock()
            if not self._running and not self._holding():
                if self._db_down is not None:
                    raise self._db_down
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
        for key in list(self._running):
            run = self._running.pop(key)
            run.attempt.stop.set()
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
            time.sleep(min(self._db_backoff, max(0.0, deadline - self._clock())))

    # -- events -----------------------------------------------------------------------------

    def _take_events(self, block_for: float | None) -> None:
        try:
            event = self._events.get(timeout=block_for) if block_for else self._events.get_nowait()
        except queues_.Empty:
            return
        while True:
            self._handle(event)
            try:
                event = self._events.get_nowait()
            except queues_.Empty:
                return

    def _handle(self, event: Any) -> None:
        if isinstance(event, _Finished):
            run = self._running.pop(event.key, None)
            if run is None:
                return  # given up on already (timed out, or the job left us); the fence drops it
            state = self._queues[event.key[0]]
            if event.ok:
                state.completes.append((run.job, event.value))
            else:
                log.warning(
                    f"handler of {state.name!r} failed job {run.job.id}: {type(event.value).__name__}: {event.value}",
                    extra={"fields": {"queue": state.name, "job_id": run.job.id}},
                )
                state.fails.append((run.job, event.value))
        elif isinstance(event, _Woken):
            targets = self._queues.values() if event.queue is None else [self._queues.get(event.queue)]
            for target in targets:
                if target is not None:
                    target.dry = False
            if event.queue is None:
                self._listening = True
        elif isinstance(event, _ListenerLost):
            log.warning(f"drain cannot listen for NOTIFY and polls instead: {event.reason}")
            self._listening = False
            for state in self._queues.values():
                state.dry = False

    # -- fetching ---------------------------------------------------------------------------

    def _fetch_round(self) -> None:
        limits = self._limits
        while True:
            if self._db_down is not None and self._clock() < self._db_retry_at:
                return
            now = self._clock()
            eligible = [
                self._queues[name]
                for name in self._order
                if not (self._queues[name].dry or self._queues[name].broken) and now < self._queues[name].fetch_until
            ]
            room = min(limits.concurrency - len(self._running), limits.max_jobs - self._fetched)
            if room <= 0 or not eligible:
                return
            share = max(1, room // len(eligible))
            self._order.append(self._order.pop(0))  # the next round starts one queue further on
            for state in eligible:
                room = min(limits.concurrency - len(self._running), limits.max_jobs - self._fetched)
                wanted = min(limits.batch_size, share, room)
                if wanted <= 0:
                    return
                fetched_at = self._clock()
                try:
                    jobs = self._db(partial(self._boss.fetch, state.name, wanted))
                except DatabaseError as exc:
                    log.error(
                        f"fetching from {state.name!r} was refused ({exc}); skipping it in this call",
                        extra={"fields": {"queue": state.name}},
                    )
                    state.broken = True
                    continue
                if jobs is None:
                    return
                for job in jobs:
                    self._start(state, job, fetched_at)
                if len(jobs) < wanted:
                    state.dry = True
                    state.next_poll = self._clock() + self._poll_interval(state)

    def _poll_interval(self, state: _QueueState) -> float:
        if self._listening and state.notify:
            return self._limits.listen_poll_seconds
        return self._limits.poll_seconds

    def _start(self, state: _QueueState, job: Job, fetched_at: float) -> None:
        self._fetched += 1
        state.stats.fetched += 1
        key = (state.name, job.id, job.retry_count)
        attempt = Attempt(job)
        heartbeat = job.heartbeat_seconds
        self._running[key] = _Running(
            job,
            attempt,
            expire_at=fetched_at + job.expire_seconds,
            next_touch=fetched_at + heartbeat / 2 if heartbeat else None,
        )
        self._pool.submit(key, state.handler, attempt)

    # -- timers -----------------------------------------------------------------------------

    def _time_out_and_touch(self, now: float) -> None:
        for key, run in list(self._running.items()):
            state = self._queues[key[0]]
            if now >= run.expire_at:
                del self._running[key]
                run.attempt.stop.set()
                self._pool.replace()
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
            wake = min(wake, self._db_retry_at)
        fetching = self._fetched < self._limits.max_jobs and len(self._running) < self._limits.concurrency
        if fetching and self._limits.budget_seconds > 0:
            for state in self._queues.values():
                if now < state.fetch_until and not state.broken:
                    due = state.next_poll if state.dry else now
                    if self._db_down is not None:
                        due = max(due, self._db_retry_at)
                    wake = min(wake, due)
        return wake

    # -- settling ---------------------------------------------------------------------------

    def _holding(self) -> bool:
        return any(s.completes or s.fails or s.touches for s in self._queues.values())

    def _settle(self, now: float, *, final: bool = False) -> None:
        if self._db_down is not None and now < self._db_retry_at and not final:
            return
        for state in self._queues.values():
            if state.completes and not self._complete(state):
                return
            if state.fails and not self._fail(state):
                return
            if state.touches:
                jobs = list(state.touches)
                touched = self._db(partial(self._boss.touch, state.name, jobs))
                if touched is None:
                    return
                del state.touches[: len(jobs)]
                if touched < len(jobs):
                    log.warning(
                        f"{len(jobs) - touched} running jobs of {state.name!r} are no longer active "
                        "(expired or cancelled elsewhere); their results will be discarded"
                    )

    def _complete(self, state: _QueueState) -> bool:
        """Complete what finished; False when the database is away."""
        items = list(state.completes)
        try:
            done = self._db(lambda: self._boss.complete(state.name, items))
        except DatabaseError as exc:
            # One output the database refuses (a \u0000 in a string, say) must not hold
            # back the others: settle one by one and fail the job whose output is refused.
            log.warning(f"completing {len(items)} jobs of {state.name!r} was refused ({exc}); one by one")
            return self._complete_one_by_one(state, items)
        if done is None:
            return False
        del state.completes[: len(items)]
        state.stats.completed += len(done)
        state.stats.superseded += len(items) - len(done)
        return True

    def _complete_one_by_one(self, state: _QueueState, items: list[tuple[Job, Any]]) -> bool:
        for job, output in items:
            try:
                done = self._db(partial(self._boss.complete, state.name, [(job, output)]))
            except DatabaseError as refused:
                state.completes.pop(0)
                state.fails.append((job, HandlerOutputInvalid(f"the database refused the output: {refused}")))
                continue
            if done is None:
                return False
            state.completes.pop(0)
            state.stats.completed += len(done)
            state.stats.superseded += 1 - len(done)
        return True

    def _fail(self, state: _QueueState) -> bool:
        """Fail what failed; False when the database is away."""
        items = list(state.fails)
        try:
            outcome = self._db(lambda: self._boss.fail(state.name, items))
        except DatabaseError as exc:
            log.error(
                f"failing {len(items)} jobs of {state.name!r} was refused ({exc}); they stay active "
                "until pg-boss's expiry retries them",
                extra={"fields": {"queue": state.name, "job_ids": [job.id for job, _ in items]}},
            )
            state.stats.superseded += len(items)
            del state.fails[: len(items)]
            return True
        if outcome is None:
            return False
        del state.fails[: len(items)]
        self._count_failures(state, len(items), outcome)
        return True

    @staticmethod
    def _count_failures(state: _QueueState, attempted: int, outcome: FailOutcome) -> None:
        state.stats.retried += len(outcome.retried)
        state.stats.failed += len(outcome.failed)
        state.stats.dead_lettered += len(outcome.dead_lettered)
        state.stats.superseded += attempted - len(outcome.retried) - len(outcome.failed)

    # -- the database -----------------------------------------------------------------------

    def _db(self, operation: Callable[[], Any]) -> Any:
        """``operation()``, tried again once on a fresh connection; None when the database is away.

        Every operation here is safe to repeat: settling is fenced on the attempt, a
        touch is idempotent, and a fetch whose answer was lost claimed jobs nobody
        will run either way (pg-boss's expiry retries them).
        """
        for tries_left in (1, 0):
            try:
                result = operation()
            except DatabaseUnavailable as exc:
                if tries_left:
                    continue
                if self._db_down is None:
                    log.warning(f"drain lost the database: {exc}")
                self._db_down = exc
                self._db_retry_at = self._clock() + self._db_backoff
                self._db_backoff = min(self._db_backoff * 2, _BACKOFF_MAX)
                return None
            if self._db_down is not None:
                log.info("drain has the database back")
            self._db_down = None
            self._db_backoff = _BACKOFF_FIRST
            return result
        return None  # pragma: no cover - the loop always returns
