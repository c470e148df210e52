"""What one drain call answers: counts per queue, and why and how the call ended."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
