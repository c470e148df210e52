"""Which Python function handles which pg-boss queue, and how that queue is configured.

A handler is a plain function of one ``Job`` (``shared.pgboss.models.Job``: id, name,
data, retry_count, ...) that returns the job's output or raises. ``drain`` completes
the job with the returned value, or fails it with pg-boss's error shape so pg-boss's
retry, backoff and dead-letter rules apply. Registering declares the queue's options;
``drain`` creates the queue with them (idempotently, pg-boss's ``create_queue``), so
deploying a handler creates its queue.

While a handler runs, ``stopping()`` / ``sleep()`` tell it whether drain has given up
on this attempt (the job timed out or the call's budget ended): Python cannot stop a
thread, so a long handler should look now and then and return early.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from shared.errors import ConfigError, describe, field_errors
from shared.pgboss.models import INTERNAL_QUEUE_PREFIX, Job, QueueOptions, check_queue_name

HandlerFunction = Callable[[Job], Any]

# What a queue gets unless its handler says otherwise: 3 retries with exponential
# backoff (pg-boss's own default is 2 retries without backoff).
DEFAULT_QUEUE_OPTIONS: Mapping[str, Any] = {"retry_limit": 3, "retry_backoff": True}


@dataclass(frozen=True)
class Handler:
    """A registered handler: its queue, its function, and the queue options it needs."""

    queue: str
    function: HandlerFunction
    options: QueueOptions
    # Roughly how long one job takes. A call stops fetching this queue when less than
    # this is left of its budget, so a job is not claimed only to be cut off.
    expected_seconds: float | None = None

    def __call__(self, job: Job) -> Any:
        return self.function(job)


def queue_options(queue: str = "", **options: Any) -> QueueOptions:
    """A handler's queue options: the defaults, then its own; ``notify`` is always on."""
    where = f"handler of queue {queue!r}: " if queue else ""
    if options.get("notify") is False:
        raise ConfigError(f"{where}queues served by drain always have notify on; do not pass notify=False")
    try:
        return QueueOptions(**{**DEFAULT_QUEUE_OPTIONS, **options, "notify": True})
    except ValidationError as exc:
        problems = describe(field_errors(exc), whole="options")
        raise ConfigError(f"{where}invalid queue options: {problems}") from None


class Registry:
    """Queue name → handler. Registering a queue twice is an error."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._lock = threading.Lock()

    def handler(
        self, queue: str, *, expected_seconds: float | None = None, **options: Any
    ) -> Callable[[HandlerFunction], HandlerFunction]:
        """Register the decorated function as the handler of ``queue``.

        ``options`` are pg-boss queue options by their Python names (``retry_limit``,
        ``retry_delay``, ``retry_backoff``, ``retry_delay_max``, ``expire_in_seconds``,
        ``heartbeat_seconds``, ``dead_letter``, ``policy``, ...), validated as pg-boss
        validates them.
        """

        def register(function: HandlerFunction) -> HandlerFunction:
            self.add(Handler(queue, function, queue_options(queue, **options), expected_seconds))
            return function

        return register

    def add(self, handler: Handler) -> None:
        try:
            check_queue_name(handler.queue)
        except ValueError as exc:
            raise ConfigError(f"handler queue {handler.queue!r}: {exc}") from None
        if handler.queue.startswith(INTERNAL_QUEUE_PREFIX):
            raise ConfigError(f"handler queue {handler.queue!r}: {INTERNAL_QUEUE_PREFIX} queues belong to pg-boss")
        if handler.expected_seconds is not None and handler.expected_seconds < 0:
            raise ConfigError(f"handler queue {handler.queue!r}: expected_seconds must be >= 0")
        with self._lock:
            existing = self._handlers.get(handler.queue)
            if existing is not None:
                raise ConfigError(
                    f"queue {handler.queue!r} already has a handler "
                    f"({_where(existing.function)}); cannot also register {_where(handler.function)}"
                )
            self._handlers[handler.queue] = handler

    def get(self, queue: str) -> Handler:
        return self._handlers[queue]

    def names(self) -> tuple[str, ...]:
        """Registered queue names, sorted."""
        return tuple(sorted(self._handlers))

    def __contains__(self, queue: object) -> bool:
        return queue in self._handlers

    def __iter__(self) -> Iterator[Handler]:
        return iter([self._handlers[name] for name in self.names()])

    def __len__(self) -> int:
        return len(self._handlers)


def _where(function: Callable[..., Any]) -> str:
    return f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', function)}"


# -- what a running handler can ask --------------------------------------------------


class Attempt:
    """One run of a handler on one job; drain sets ``stop`` when it gives up on it."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.stop = threading.Event()


_attempt: contextvars.ContextVar[Attempt | None] = contextvars.ContextVar("attempt", default=None)


def run_attempt(handler: Handler, attempt: Attempt) -> Any:
    """Call ``handler`` on the attempt's job with the attempt visible to ``stopping``."""
    token = _attempt.set(attempt)
    try:
        return handler(attempt.job)
    finally:
        _attempt.reset(token)


def stopping() -> bool:
    """Inside a handler: whether drain has given up on this attempt (timed out, budget over)."""
    attempt = _attempt.get()
    return attempt is not None and attempt.stop.is_set()


def sleep(seconds: float) -> bool:
    """Inside a handler: wait ``seconds``, or less if drain gives up; True when it gave up."""
    attempt = _attempt.get()
    if attempt is None:
        threading.Event().wait(seconds)
        return False
    return attempt.stop.wait(seconds)
