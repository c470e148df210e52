"""What the handlers, worker processes and the listener report to the loop, through its one event queue.

Only the loop's thread touches the database and the loop's state; other threads speak
to it solely through these events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Key = tuple[str, str, int]  # queue, job id, attempt (retry_count): unique within a call


@dataclass(frozen=True)
class Finished:
    """A handler returned (``ok``, its output) or raised (its exception)."""

    key: Key
    ok: bool
    value: Any


@dataclass(frozen=True)
class BatchFinished:
    """A batch handler returned or raised: per job of the batch, ``(ok, output or error)``."""

    keys: list[Key]
    results: list[tuple[bool, Any]]


@dataclass(frozen=True)
class WorkerFree:
    """A worker process is idle again after drain gave up on its job: there is room to fetch."""


@dataclass(frozen=True)
class Woken:
    """pg-boss announced new jobs."""

    queue: str | None  # None: look at every queue


@dataclass(frozen=True)
class ListenerLost:
    """The listener cannot LISTEN any more; the loop polls instead."""

    reason: str
