"""Riding out a database outage: drain pauses what needs the database and tries again later.

A database that stays away must not end the call: the loop keeps its handlers running,
stops fetching, and tries settling again after a growing pause. A connection that
broke under one statement is not an outage: ``Database`` repeats such a statement on a
fresh connection before anything here sees it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from shared.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 2.0


class OutageGuard:
    """Runs the loop's database operations and remembers whether the database is away."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.down: DatabaseUnavailable | None = None  # the last outage, while it lasts
        self.retry_at = 0.0
        self.backoff = _BACKOFF_FIRST

    def paused(self, now: float) -> bool:
        """Whether the database is away and not yet due to be tried again."""
        return self.down is not None and now < self.retry_at

    def run(self, operation: Callable[[], Any]) -> Any:
        """``operation()``, or None when the database is away (tried again after a pause)."""
        try:
            result = operation()
        except DatabaseUnavailable as exc:
            if self.down is None:
                log.warning(f"drain lost the database: {exc}")
            self.down = exc
            self.retry_at = self._clock() + self.backoff
            self.backoff = min(self.backoff * 2, _BACKOFF_MAX)
            return None
        if self.down is not None:
            log.info("drain has the database back")
        self.down = None
        self.backoff = _BACKOFF_FIRST
        return result
