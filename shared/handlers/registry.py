"""Which Python function handles which pg-boss queue, how it runs, and how that queue is configured.

A handler is a function of a ``Job`` (``shared.pgboss.models.Job``: id, name, data,
retry_count, ...) that returns the job's output or raises. ``drain`` completes the job
with the returned value, or fails it with pg-boss's error shape so pg-boss's retry,
backoff and dead-letter rules apply. Registering declares the queue's options; ``drain``
creates the queue with them (idempotently, pg-boss's ``create_queue``), so deploying a
handler creates its queue.

Registering also picks how the handler runs (``model``), because the work decides it:

* ``thread`` (the default): a plain function of one job on a thread of its own; simple I/O.
* ``batch``: a function of a list of jobs (as pg-boss's ``work()`` with ``batchSize``),
  returning one output per job, or ``Failed(error)`` in a job's place; raising fails them all.
* ``async``: an ``async def`` of one job; every async job of a call shares one event
  loop, so hundreds of I/O-bound jobs wait at once, and giving up on one cancels its task.
* ``process``: a plain function of one job run in a worker process, so CPU-bound work
  uses every core and a handler that never returns can be killed. It is found in the
  worker by module and name, so it must be defined at a module's top level.

While a handler runs, ``stopping()`` / ``sleep()`` (``sleep_async()`` in async handlers)
tell it whether drain has given up on this attempt (the job timed out or the call's
budget ended): Python cannot stop a thread, so a long handler should look now and then
and return early.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import inspect
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from pydantic import ValidationError

from shared.errors import ConfigError, describe, field_errors
from shared.pgboss.models import INTERNAL_QUEUE_PREFIX, Job, QueueOptions, check_queue_name

HandlerFunction = Callable[[Any], Any]  # of a Job; of a list of jobs for a batch handler
Model = Literal["thread", "batch", "async", "process"]
MODELS: tuple[str, ...] = get_args(Model)

# How many jobs a batch handler gets at once unless it says otherwise; a call gives it
# fewer when its DRAIN_CONCURRENCY or maxJobs leave less room.
DEFAULT_BATCH_SIZE = 100

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
    model: Model = "thread"
    batch_size: int = 1  # jobs per call of the function: above 1 only for batch handlers

    def __call__(self, work: Any) -> Any:
        return self.function(work)


@dataclass(frozen=True)
class Failed:
    """In a batch handler's outputs, in place of a job's output: this job failed with ``error``.

    The other jobs of the batch complete with their outputs, all in one settle.
    """

    error: BaseException | str


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
        self,
        queue: str,
        *,
        model: Model = "thread",
        batch_size: int | None = None,
        expected_seconds: float | None = None,
        **options: Any,
    ) -> Callable[[HandlerFunction], HandlerFunction]:
        """Register the decorated function as the handler of ``queue``, run as ``model``.

        ``batch_size`` (batch handlers only) is the most jobs one call of the function
        gets. ``options`` are pg-boss queue options by their Python names
        (``retry_limit``, ``retry_delay``, ``retry_backoff``, ``retry_delay_max``,
        ``expire_in_seconds``, ``heartbeat_seconds``, ``dead_letter``, ``policy``, ...),
        validated as pg-boss validates them.
        """
        if batch_size is None:
            batch_size = DEFAULT_BATCH_SIZE if model == "batch" else 1

        def register(function: HandlerFunction) -> HandlerFunction:
            settings = queue_options(queue, **options)
            self.add(Handler(queue, function, settings, expected_seconds, model, batch_size))
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
        _check_model(handler)
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


def _check_model(handler: Handler) -> None:
    """Refuse a handler its model cannot run, at registration rather than at its first job."""
    where = f"handler of queue {handler.queue!r} ({_where(handler.function)})"
    if handler.model not in MODELS:
        raise ConfigError(f"{where}: model must be one of {', '.join(MODELS)}, not {handler.model!r}")
    if isinstance(handler.batch_size, bool) or not isinstance(handler.batch_size, int) or handler.batch_size < 1:
        raise ConfigError(f"{where}: batch_size must be a whole number >= 1")
    if handler.batch_size > 1 and handler.model != "batch":
        raise ConfigError(f"{where}: batch_size is for batch handlers (model='batch')")
    is_coroutine = inspect.iscoroutinefunction(handler.function)
    if handler.model == "async" and not is_coroutine:
        raise ConfigError(f"{where}: model='async' needs an async def function")
    if handler.model != "async" and is_coroutine:
        raise ConfigError(f"{where}: an async def function needs model='async'")
    if handler.model == "process":
        check_importable(handler.function, where, bound=False)


def check_importable(function: Callable[..., Any], where: str, *, bound: bool = True) -> tuple[str, str]:
    """The module and name a worker process finds ``function`` by, checked here.

    A worker process imports the function's module and looks the name up: a lambda, a
    nested function or one a decorator replaced cannot be found that way. While its
    module is still being imported (``bound=False``, at registration) the name is not
    there yet, so only what the name itself tells is checked.
    """
    module = getattr(function, "__module__", None)
    name = getattr(function, "__qualname__", "")
    if module is None or module in ("__main__", "__mp_main__"):
        raise ConfigError(f"{where}: a process handler must live in an importable module, not {module!r}")
    if "<" in name:
        raise ConfigError(
            f"{where}: a worker process cannot find {name} by its module and name; "
            "define process handlers at the top level of a module"
        )
    if bound:
        try:
            found = locate(module, name)
        except Exception as exc:
            raise ConfigError(f"{where}: {module}.{name} cannot be found by its module and name ({exc})") from None
        if found is not function:
            raise ConfigError(
                f"{where}: {module}.{name} is not this function (a decorator replaced it?); "
                "define process handlers at the top level of a module"
            )
    return module, name


def locate(module: str, name: str) -> Any:
    """The object called ``name`` (a qualified name, maybe dotted) in ``module``, importing it."""
    found: Any = importlib.import_module(module)
    for part in name.split("."):
        found = getattr(found, part)
    return found


# -- what a running handler can ask --------------------------------------------------


class Attempt:
    """One run of a handler on its work (a job, or a batch handler's list of jobs).

    drain sets ``stop`` when it gives up on it.
    """

    def __init__(self, work: Job | list[Job]) -> None:
        self.work = work
        self.stop = threading.Event()


_attempt: contextvars.ContextVar[Attempt | None] = contextvars.ContextVar("attempt", default=None)


def run_attempt(handler: Handler, attempt: Attempt) -> Any:
    """Call ``handler`` on the attempt's work with the attempt visible to ``stopping``."""
    token = _attempt.set(attempt)
    try:
        return handler(attempt.work)
    finally:
        _attempt.reset(token)


def attempt_context(attempt: Attempt) -> contextvars.Context:
    """A copy of the current context in which ``stopping`` sees ``attempt`` (for an async task)."""
    context = contextvars.copy_context()
    context.run(_attempt.set, attempt)
    return context


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


async def sleep_async(seconds: float) -> bool:
    """Inside an async handler: wait ``seconds`` without holding the event loop.

    When drain gives up on the attempt it cancels the task, so this raises
    ``asyncio.CancelledError`` then (clean up in ``finally``); True when drain had
    already given up before the wait.
    """
    if stopping():
        return True
    await asyncio.sleep(seconds)
    return stopping()
