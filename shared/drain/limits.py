"""What bounds one drain call: its budget, job count, batch size and concurrency."""

from __future__ import annotations

from dataclasses import dataclass

from shared.config import Settings


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
        cls, settings: Settings, *, budget_seconds: float | None = None, max_jobs: int | None = None
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
