"""Reconciling the outbox: each event the webhook missed becomes its jobs, with the same ids.

An event's jobs are what ``webhook`` would have made of it: the same routes table and
``Route.job`` give the same job ids (``uuid5`` over route, type, table and rows), and
pg-boss's same-id rule makes inserting a job that already exists a no-op. So one insert
both repairs a lost delivery and proves a delivered one, and a delivered event and a
reconciled one can never make two jobs. Rows whose jobs exist are deleted.

``reconcile_outbox`` is the entry point for a scheduled call: it reads its bounds from
the settings, does nothing when the deployment has no routes or the outbox table was
never installed, and returns counts for the call's answer and log line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared import intake
from shared.config import Settings
from shared.errors import DatabaseError, NotFound, RequestError
from shared.outbox import sql
from shared.pgboss import encoding
from shared.pgboss.client import PgBoss
from shared.pgboss.models import JobRequest
from shared.webhook_routes import WebhookRoutes

log = logging.getLogger(__name__)

# A held event is tried again after HOLD_BASE_SECONDS, doubling per try up to HOLD_MAX_SECONDS.
HOLD_BASE_SECONDS = 60
HOLD_MAX_SECONDS = 3600
_UNDEFINED_TABLE = "42P01"
# Errors that concern one event (a refused or unknown queue, a row the routes cannot
# key, a value PostgreSQL refuses); an unreachable database ends the pass instead.
_EVENT_ERRORS = (RequestError, NotFound, DatabaseError)


@dataclass
class OutboxSummary:
    """What one pass did, for the scheduled call's answer."""

    installed: bool = True  # false: no outbox table (triggers never applied here)
    events: int = 0  # due events looked at
    recovered: int = 0  # events that got jobs now: their delivery was lost
    delivered: int = 0  # events whose jobs existed already: the webhook got there
    ignored: int = 0  # events no route wants
    held: int = 0  # events that could not become jobs now; tried again later
    pruned: int = 0  # rows deleted
    more: bool = False  # the pass stopped at its bounds with due events left
    errors: list[str] = field(default_factory=list)  # the first few reasons events were held

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class _Event:
    id: int
    jobs: list[JobRequest]
    error: str | None = None


def reconcile_outbox(
    boss: PgBoss, settings: Settings, routes: WebhookRoutes | None, *, time_limit_seconds: float
) -> OutboxSummary | None:
    """One bounded pass with the settings' bounds; ``None`` when there is nothing to do here."""
    if routes is None or settings.outbox_max_batches == 0:
        return None
    return reconcile(
        boss,
        routes,
        grace_seconds=settings.outbox_grace_seconds,
        batch_size=settings.outbox_batch_size,
        max_batches=settings.outbox_max_batches,
        create_missing_queues=settings.create_missing_queues,
        time_limit_seconds=time_limit_seconds,
    )


def reconcile(
    boss: PgBoss,
    routes: WebhookRoutes,
    *,
    grace_seconds: float,
    batch_size: int,
    max_batches: int,
    create_missing_queues: bool,
    time_limit_seconds: float,
    clock: Callable[[], float] = time.monotonic,
) -> OutboxSummary:
    """Turn due outbox events into their jobs, at most ``max_batches`` of ``batch_size``.

    A new batch starts only within ``time_limit_seconds`` of the first. Raises
    ``DatabaseUnavailable`` when the database cannot be used; what was done stays done.
    """
    summary = OutboxSummary()
    end = clock() + time_limit_seconds
    for number in range(max_batches):
        if number and clock() >= end:
            summary.more = True
            break
        try:
            params = {"grace_seconds": grace_seconds, "limit": batch_size}
            rows = boss.db.run(sql.DUE_EVENTS, params, safe_to_retry=True)
        except DatabaseError as error:
            if error.sqlstate != _UNDEFINED_TABLE:
                raise
            summary.installed = False
            return summary
        _reconcile_batch(boss, routes, rows, summary, create_missing_queues)
        if len(rows) < batch_size:
            return summary
    else:
        summary.more = True
    return summary


def _reconcile_batch(
    boss: PgBoss, routes: WebhookRoutes, rows: Sequence[dict[str, Any]], summary: OutboxSummary, create: bool
) -> None:
    events = [_event(routes, row) for row in rows]
    summary.events += len(events)
    wanted = [event for event in events if event.error is None and event.jobs]
    summary.ignored += sum(1 for event in events if event.error is None and not event.jobs)
    try:
        ids = intake.submit(boss, [job for event in wanted for job in event.jobs], create_missing_queues=create)
    except _EVENT_ERRORS:
        # Something in the batch is refused: find out which events, one at a time.
        created = [_submit_one(boss, event, create) for event in wanted]
    else:
        created, offset = [], 0
        for event in wanted:
            created.append(any(job_id is not None for job_id in ids[offset : offset + len(event.jobs)]))
            offset += len(event.jobs)
    for event, made in zip(wanted, created, strict=True):
        if event.error is None:
            summary.recovered += made
            summary.delivered += not made
    held = [event for event in events if event.error is not None]
    done = [event.id for event in events if event.error is None]
    if done:
        boss.db.run(sql.DELETE_EVENTS, {"ids": done}, safe_to_retry=True)
        summary.pruned += len(done)
    if held:
        params = {
            "held": encoding.encode([{"id": event.id, "error": event.error} for event in held]),
            "base_seconds": HOLD_BASE_SECONDS,
            "max_seconds": HOLD_MAX_SECONDS,
        }
        boss.db.run(sql.HOLD_EVENTS, params)
        summary.held += len(held)
        for event in held:
            log.warning("outbox event %s held: %s", event.id, event.error)
        summary.errors = (summary.errors + [f"{event.id}: {event.error}" for event in held])[:5]


def _event(routes: WebhookRoutes, row: dict[str, Any]) -> _Event:
    """The jobs the webhook would make of the row's event, or why it would refuse it."""
    try:
        event = intake.parse_event(row["event"])
        return _Event(row["id"], [job for _, job in routes.jobs_for(event)])
    except RequestError as error:
        return _Event(row["id"], [], error.message)


def _submit_one(boss: PgBoss, event: _Event, create: bool) -> bool:
    """Insert one event's jobs; whether any was new. A refusal is recorded on the event."""
    try:
        return any(job_id is not None for job_id in intake.submit(boss, event.jobs, create_missing_queues=create))
    except _EVENT_ERRORS as error:
        event.error = error.message
        return False
