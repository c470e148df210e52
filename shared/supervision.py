"""Rounds of pg-boss's background passes for the length of one scheduled call.

Cloud Scheduler calls ``supervise`` once a minute, but pg-boss's cron pass must run
more often than that (an occurrence is due for 60 s only) and its flow resolver every
few seconds. So a call runs a round of every due pass, sleeps, and runs another, until
its budget is spent; the claims decide which rounds do any work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from shared.config import Settings
from shared.pgboss.client import PgBoss
from shared.pgboss.supervisor import PASSES, Intervals, Plan, Supervisor


def plan_from_settings(settings: Settings, budget_seconds: float) -> Plan:
    """The passes, intervals and batch sizes the settings ask for, within ``budget_seconds``."""
    return Plan(
        passes=frozenset(settings.supervise_passes),
        intervals=Intervals(
            monitor=settings.supervise_monitor_interval_seconds,
            maintain=settings.supervise_maintain_interval_seconds,
            flows=settings.supervise_flow_interval_seconds,
            cron=settings.supervise_cron_interval_seconds,
            bam=settings.supervise_bam_interval_seconds,
            archive_family_maintain=settings.supervise_v10_maintenance_interval_seconds,
        ),
        budget_seconds=budget_seconds,
        deletion_batch=settings.supervise_deletion_batch,
        queue_stats=settings.supervise_queue_stats,
        queue_stat_retention_days=settings.supervise_queue_stat_retention_days,
        archive_completed_seconds=settings.supervise_v10_archive_completed_after_seconds,
        archive_failed_seconds=settings.supervise_v10_archive_failed_after_seconds,
        delete_after_seconds=settings.supervise_v10_delete_after_seconds,
    )


def supervise_for(
    boss: PgBoss,
    settings: Settings,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Rounds every ``SUPERVISE_ROUND_SECONDS`` until ``SUPERVISE_BUDGET_SECONDS`` is spent
    (a budget of 0 runs one round of at most ``SUPERVISE_ROUND_SECONDS``); the summed
    counts of every pass."""
    deadline = clock() + settings.supervise_budget_seconds
    totals: dict[str, Any] = {name: {} for name in PASSES}
    rounds = 0
    while True:
        started = clock()
        # A budget of 0 still runs one round, bounded like any other round.
        budget = deadline - started if deadline > started else settings.supervise_round_seconds
        summary = Supervisor(boss, plan_from_settings(settings, budget), clock=clock).run()
        rounds += 1
        for name in PASSES:
            for key, value in summary.counts[name].items():
                totals[name][key] = totals[name].get(key, 0) + value
            if name in summary.skipped and not totals[name]:
                totals[name]["skipped"] = summary.skipped[name]
        pause = settings.supervise_round_seconds - (clock() - started)
        if clock() + max(pause, 0.0) >= deadline:
            break
        sleep(max(pause, 0.0))
    totals["rounds"] = rounds
    return totals
