"""Settling a queue's finished and running jobs in batches: complete, fail, touch.

Every settle is fenced on the fetched attempt by pg-boss's statements, so one that
arrives after the job moved on (expired, cancelled, retried elsewhere) is discarded
and counted as superseded.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from shared.drain.failures import HandlerOutputInvalid
from shared.drain.outage import OutageGuard
from shared.drain.state import QueueState
from shared.errors import DatabaseError
from shared.pgboss.client import PgBoss
from shared.pgboss.models import FailOutcome, Job

log = logging.getLogger(__name__)


class Settler:
    """Sends what a queue holds to pg-boss and counts the outcome in its stats."""

    def __init__(self, boss: PgBoss, outage: OutageGuard) -> None:
        self._boss = boss
        self._outage = outage

    def settle(self, state: QueueState) -> bool:
        """Settle everything ``state`` holds; False when the database is away."""
        if state.completes and not self._complete(state):
            return False
        if state.fails and not self._fail(state):
            return False
        if state.touches:
            jobs = list(state.touches)
            touched = self._outage.run(partial(self._boss.touch, state.name, jobs))
            if touched is None:
                return False
            del state.touches[: len(jobs)]
            if touched < len(jobs):
                log.warning(
                    f"{len(jobs) - touched} running jobs of {state.name!r} are no longer active "
                    "(expired or cancelled elsewhere); their results will be discarded"
                )
        return True

    def _complete(self, state: QueueState) -> bool:
        """Complete what finished; False when the database is away."""
        items = list(state.completes)
        try:
            done = self._outage.run(lambda: self._boss.complete(state.name, items))
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

    def _complete_one_by_one(self, state: QueueState, items: list[tuple[Job, Any]]) -> bool:
        for job, output in items:
            try:
                done = self._outage.run(partial(self._boss.complete, state.name, [(job, output)]))
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

    def _fail(self, state: QueueState) -> bool:
        """Fail what failed; False when the database is away."""
        items = list(state.fails)
        try:
            outcome = self._outage.run(lambda: self._boss.fail(state.name, items))
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
        _count_failures(state, len(items), outcome)
        return True


def _count_failures(state: QueueState, attempted: int, outcome: FailOutcome) -> None:
    state.stats.retried += len(outcome.retried)
    state.stats.failed += len(outcome.failed)
    state.stats.dead_lettered += len(outcome.dead_lettered)
    state.stats.superseded += attempted - len(outcome.retried) - len(outcome.failed)
