"""What the loop keeps per running job and per queue during one call."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.drain.summary import QueueStats
from shared.handlers import Attempt, Handler
from shared.pgboss.models import Job


@dataclass
class Running:
    """A claimed job whose handler runs, with its timers."""

    job: Job
    attempt: Attempt
    expire_at: float
    next_touch: float | None


@dataclass
class QueueState:
    """One queue of the call: its fetch state and the settles it holds."""

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

    def holding(self) -> bool:
        """Whether settles wait to be sent."""
        return bool(self.completes or self.fails or self.touches)
