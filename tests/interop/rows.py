"""Read job rows straight from the table and put them in a form two runs can be compared in.

Ids and absolute times differ between any two runs, so a normalized row keeps every other
column verbatim and replaces each timestamp by its offset in seconds from the row's own
``created_on`` (``None`` when NULL). ``keep_until`` is also given relative to ``start_after``,
the relation pg-boss promises (retention counts from when the job may start). Ids that point
at other jobs (``source_id``, ``source_root_id``) become the tag of the job they point at, and
queue names lose the per-run prefix, so a Python run and a Node run of one scenario in two
namespaces of one database normalize to the same rows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

from shared.db import Database

SCHEMA = "pgboss"

TIMESTAMPS = (
    "start_after",
    "started_on",
    "completed_on",
    "keep_until",
    "heartbeat_on",
    "source_created_on",
)
# singleton_on is a UTC wall-clock slot start: compared through ``singleton_slot`` instead.
QUEUE_NAMES = ("name", "dead_letter", "source_name")
IDS = ("id", "source_id", "source_root_id")
IGNORED = ("created_on", "singleton_on")

_JOB_COLUMNS = f"""
SELECT CAST(attname AS text) AS name FROM pg_attribute
WHERE attrelid = to_regclass('{SCHEMA}.job') AND attnum > 0 AND NOT attisdropped
"""


def raw_rows(db: Database, prefix: str = "") -> list[dict[str, Any]]:
    """Every job row whose queue name starts with ``prefix``, with the offsets computed in SQL.

    Timestamps a schema does not have (heartbeat_on before 30, source_created_on before 34)
    are left out, so runs against older releases compare what those releases have.
    """
    present = {row["name"] for row in db.run(_JOB_COLUMNS)}
    offsets = ", ".join(
        f"extract(epoch FROM j.{c} - j.created_on)::float8 AS {c}_offset" for c in TIMESTAMPS if c in present
    )
    snapshot = f"""
SELECT j.*,
  extract(epoch FROM j.keep_until - j.start_after)::float8 AS keep_until_after_start,
  extract(epoch FROM j.created_on AT TIME ZONE 'UTC' - j.singleton_on)::float8 AS created_in_slot,
  {offsets}
FROM {SCHEMA}.job j
WHERE left(j.name, length(:prefix)) = :prefix
ORDER BY j.created_on, j.name, j.id
"""
    return db.run(snapshot, {"prefix": prefix})


def job_row(db: Database, queue: str, job_id: str) -> dict[str, Any] | None:
    rows = db.run(
        f"SELECT * FROM {SCHEMA}.job WHERE name = :name AND id = CAST(:id AS uuid)",
        {"name": queue, "id": job_id},
    )
    return rows[0] if rows else None


def state_of(db: Database, queue: str, job_id: str) -> str | None:
    row = job_row(db, queue, job_id)
    return None if row is None else row["state"]


def tag_of(row: dict[str, Any]) -> str:
    data = row.get("data")
    if isinstance(data, dict) and "tag" in data:
        return str(data["tag"])
    return f"untagged:{json.dumps(data, sort_keys=True)}"


def normalize(rows: Iterable[dict[str, Any]], prefix: str = "") -> list[dict[str, Any]]:
    """Rows of one run, comparable with another run's (see module docstring), sorted by queue and tag."""
    rows = list(rows)
    tags = {str(row["id"]): f"{_strip(row['name'], prefix)}/{tag_of(row)}" for row in rows}
    out = []
    for row in rows:
        item: dict[str, Any] = {}
        for column, value in row.items():
            if column in IGNORED or column.endswith("_offset") or column in TIMESTAMPS:
                continue
            if column in QUEUE_NAMES:
                item[column] = _strip(value, prefix)
            elif column in IDS:
                if column != "id":
                    item[column] = None if value is None else tags.get(str(value), "<outside the run>")
            elif column == "created_in_slot":
                item["singleton_on"] = None if value is None else "set"
            elif column == "state":
                item[column] = str(value)
            else:
                item[column] = value
        for column in TIMESTAMPS:
            if f"{column}_offset" in row:
                item[column] = row[f"{column}_offset"]
        out.append(item)
    return sorted(out, key=lambda item: (item["name"], json.dumps(item["data"], sort_keys=True)))


def _strip(value: Any, prefix: str) -> Any:
    if isinstance(value, str) and prefix and value.startswith(prefix):
        return value[len(prefix) :]
    return value


def differences(
    ours: list[dict[str, Any]],
    theirs: list[dict[str, Any]],
    *,
    tolerance: float = 1.0,
    tolerances: dict[str, float] | None = None,
    ignore: Iterable[str] = (),
) -> list[str]:
    """Human-readable differences between two normalized runs; empty when they agree.

    Time offsets agree within ``tolerance`` seconds (``tolerances`` per column); ``ignore``
    drops columns from the comparison (for values that are random by design).
    """
    tolerances = tolerances or {}
    ignored = set(ignore)
    problems: list[str] = []
    if len(ours) != len(theirs):
        problems.append(f"row count: ours {len(ours)}, pg-boss {len(theirs)}")
    for index, (mine, other) in enumerate(zip(ours, theirs, strict=False)):
        label = f"row {index} ({mine.get('name')}/{tag_of(mine)})"
        for column in sorted(set(mine) | set(other)):
            if column in ignored:
                continue
            a, b = mine.get(column), other.get(column)
            if column in TIMESTAMPS or column == "keep_until_after_start":
                if (a is None) != (b is None):
                    problems.append(f"{label}: {column} ours {a!r}, pg-boss {b!r}")
                elif a is not None and not math.isclose(a, b, abs_tol=tolerances.get(column, tolerance)):
                    problems.append(f"{label}: {column} ours {a:.3f}s, pg-boss {b:.3f}s")
            elif a != b:
                problems.append(f"{label}: {column} ours {a!r}, pg-boss {b!r}")
    return problems


def seconds_until_start(db: Database, queue: str, job_id: str) -> float:
    """``start_after - now()`` of one job, by the database clock."""
    rows = db.run(
        f"SELECT extract(epoch FROM start_after - now())::float8 AS s FROM {SCHEMA}.job"
        " WHERE name = :name AND id = CAST(:id AS uuid)",
        {"name": queue, "id": job_id},
    )
    return rows[0]["s"]


def database_clock(db: Database) -> float:
    """The database's wall clock now (epoch seconds), read outside any transaction's start time."""
    return float(db.run("SELECT extract(epoch FROM clock_timestamp())::float8 AS t")[0]["t"])


def start_after_epoch(db: Database, queue: str, job_id: str) -> float:
    """A job's ``start_after`` as epoch seconds."""
    rows = db.run(
        f"SELECT extract(epoch FROM start_after)::float8 AS s FROM {SCHEMA}.job"
        " WHERE name = :name AND id = CAST(:id AS uuid)",
        {"name": queue, "id": job_id},
    )
    return float(rows[0]["s"])


def age(db: Database, queue: str, column: str, seconds: float, ids: Iterable[str] | None = None) -> None:
    """Move a timestamp of jobs ``seconds`` into the past, instead of sleeping until it is.

    Test harness only: it stands in for the passing of time (a claim getting old, a retry
    delay running out), so the verbs under test then see the row they would see later.
    """
    assert column in ("started_on", "heartbeat_on", "start_after", "completed_on", "keep_until")
    where = "" if ids is None else " AND id = ANY(CAST(:ids AS uuid[]))"
    params: dict[str, Any] = {"name": queue, "seconds": seconds}
    if ids is not None:
        params["ids"] = list(ids)
    db.run(
        f"UPDATE {SCHEMA}.job SET {column} = {column} - make_interval(secs => :seconds) WHERE name = :name{where}",
        params,
    )


def expire_seconds(row: dict[str, Any]) -> float:
    """A job's expiry in seconds: ``expire_seconds`` from 11.0, the ``expire_in`` interval on 10.x."""
    if "expire_seconds" in row:
        return float(row["expire_seconds"])
    return float(row["expire_in"].total_seconds())
