"""Python values encoded as the parameters of ``sql``'s statements.

A batch travels as one JSON document that the statement reads with
``json_to_recordset``, so a thousand jobs cost one round trip and rows stay aligned
with the input by their ids. Keys are the column names the statements declare.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from shared.errors import echo
from shared.pgboss.models import Job, JobRequest, error_output, repeated_ids


def encode(document: Any) -> str:
    """Compact JSON; NaN and infinities are refused rather than sent as invalid JSON."""
    return json.dumps(document, separators=(",", ":"), allow_nan=False)


def job_rows(requests: Sequence[JobRequest]) -> list[dict[str, Any]]:
    """One INSERT_JOBS row per request, in input order.

    A job without an id gets one from the statement (gen_random_uuid(), as pg-boss),
    which keeps ids out of the document. An id given twice for one queue is refused
    (``DuplicateJobId``), as pg-boss refuses it.
    """
    for repeat in repeated_ids(requests):
        raise repeat
    rows: list[dict[str, Any]] = []
    for request in requests:
        options = request.options
        if not options.model_fields_set:
            # No options: the queue's settings apply, and the row is just these two.
            rows.append({"name": request.name, "data": request.data})
            continue
        start_after = options.start_after
        row = {
            "id": str(options.id) if options.id is not None else None,
            "name": request.name,
            "data": request.data,
            "priority": options.priority,
            "start_at": start_after.isoformat() if isinstance(start_after, datetime) else None,
            "delay": start_after if isinstance(start_after, int) else None,
            "singleton_key": options.singleton_key,
            "singleton_seconds": options.singleton_seconds,
            "next_slot": options.singleton_next_slot,
            "group_id": options.group.id if options.group else None,
            "group_tier": options.group.tier if options.group else None,
            "expire_in_seconds": options.expire_in_seconds,
            "delete_after_seconds": options.delete_after_seconds,
            "retention_seconds": options.retention_seconds,
            "retry_limit": options.retry_limit,
            "retry_delay": options.retry_delay,
            "retry_backoff": options.retry_backoff,
            "retry_delay_max": options.retry_delay_max,
            "dead_letter": options.dead_letter,
            "heartbeat_seconds": options.heartbeat_seconds,
        }
        # json_to_recordset reads an absent key as NULL, so unset options are left out:
        # a typical job's row shrinks from twenty keys to a few, and the batch encodes
        # and parses that much faster.
        rows.append({column: value for column, value in row.items() if value is not None})
    return rows


def archive_queue_options(wire: Mapping[str, Any]) -> dict[str, Any]:
    """Queue options under pg-boss 10.x's names for its ``create_queue``: retention in
    whole minutes (the caller has refused any other), and no ``partition`` since every
    10.x queue has its own."""
    options = {key: value for key, value in wire.items() if key not in ("retentionSeconds", "partition")}
    if "retentionSeconds" in wire:
        options["retentionMinutes"] = wire["retentionSeconds"] // 60
    return options


def attempt_rows(jobs: Iterable[Job]) -> list[dict[str, Any]]:
    """The attempt fence of each job: its id and the retry_count it was fetched with."""
    return [{"id": job.id, "retry_count": job.retry_count} for job in jobs]


def settle_rows(settles: Iterable[tuple[Job, Any]]) -> list[dict[str, Any]]:
    """Fenced attempts with the output each one stores (pg-boss's output shape)."""
    return [{"id": job.id, "retry_count": job.retry_count, "output": error_output(value)} for job, value in settles]


def job_ids(ids: Iterable[str | UUID]) -> list[str]:
    """Canonical job ids; anything that is not a uuid is refused before reaching SQL."""
    canonical = []
    for value in ids:
        try:
            canonical.append(str(value if isinstance(value, UUID) else UUID(str(value))))
        except ValueError:
            raise ValueError(f"{echo(value)} is not a job id (a uuid)") from None
    return canonical


def group_limits(group_concurrency: int | Mapping[str, Any] | None) -> tuple[int | None, str | None]:
    """``(default limit, tiers JSON)`` for fetch, validated as pg-boss validates the option.

    ``group_concurrency`` is a limit for every group, or ``{"default": n, "tiers":
    {tier: m}}`` where a job's ``group.tier`` picks its limit.
    """
    if group_concurrency is None:
        return None, None
    if isinstance(group_concurrency, int) and not isinstance(group_concurrency, bool):
        _check_limit(group_concurrency, "group_concurrency")
        return group_concurrency, None
    if not isinstance(group_concurrency, Mapping):
        raise ValueError("group_concurrency must be a number or a mapping with default and tiers")
    default = group_concurrency.get("default")
    _check_limit(default, "group_concurrency.default")
    tiers = group_concurrency.get("tiers") or {}
    if not isinstance(tiers, Mapping):
        raise ValueError("group_concurrency.tiers must be a mapping")
    for tier, limit in tiers.items():
        if not isinstance(tier, str) or not tier:
            raise ValueError("group_concurrency tier keys must be non-empty strings")
        _check_limit(limit, f"group_concurrency.tiers[{tier!r}]")
    return default, json.dumps(dict(tiers)) if tiers else None


def _check_limit(value: Any, what: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{what} must be an integer >= 1")
