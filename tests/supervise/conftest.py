"""Fixtures for the supervision passes: our Supervisor, and a twin runner that plays one
scenario twice in one database — once handing the background work to pg-boss (Node), once
to our Supervisor — and compares the job rows."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from shared.db import Database
from shared.pgboss.client import PgBoss
from shared.pgboss.supervisor import PASSES, Intervals, Plan, Summary, Supervisor
from tests.conftest import node_package
from tests.interop.rows import differences, normalize, raw_rows
from tests.support.node_boss import NodeBoss

RunPasses = Callable[..., Summary]


@pytest.fixture
def supervise(boss: PgBoss) -> RunPasses:
    """``supervise("monitor", ...)`` runs one round of those passes (all when none are named)."""

    def run(*passes: str, intervals: Intervals | None = None, budget_seconds: float = 30.0, **plan: Any) -> Summary:
        chosen = frozenset(passes or PASSES)
        return Supervisor(
            boss, Plan(passes=chosen, intervals=intervals or Intervals(), budget_seconds=budget_seconds, **plan)
        ).run()

    return run


@dataclass
class TwinRun:
    ours: list[dict[str, Any]]
    theirs: list[dict[str, Any]]
    queues: dict[str, list[dict[str, Any]]]

    def assert_same(self, **options: Any) -> None:
        problems = differences(self.ours, self.theirs, **options)
        assert not problems, "our rows differ from pg-boss's:\n" + "\n".join(problems)


# The cached counts a release keeps (older schemas have fewer of them).
COUNT_COLUMNS = (
    "queued_count",
    "deferred_count",
    "blocked_count",
    "ready_count",
    "active_count",
    "failed_count",
    "total_count",
    "retained_count",
    "singletons_active",
)
QUEUE_ROWS = """
SELECT substr(name, length(:prefix) + 1) AS name, CAST(to_jsonb(q) AS text) AS row,
  q.monitor_on IS NOT NULL AS counted
FROM pgboss.queue q WHERE left(name, length(:prefix)) = :prefix ORDER BY name
"""


def queue_counts(db: Database, prefix: str) -> list[dict[str, Any]]:
    """Each queue's cached counts, under its name without the prefix."""
    counts = []
    for row in db.run(QUEUE_ROWS, {"prefix": prefix}):
        columns = json.loads(row["row"])
        counts.append(
            {"name": row["name"], "counted": row["counted"]}
            | {column: columns[column] for column in COUNT_COLUMNS if column in columns}
        )
    return counts


class Twin:
    """``twin(scenario, background)``: ``scenario(prefix)`` sets the rows up (through Node),
    then ``background(prefix, who)`` runs the pass as pg-boss (who="node") or as we do."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def __call__(self, scenario: Callable[[str], None], background: Callable[[str, str], None]) -> TwinRun:
        rows: dict[str, list[dict[str, Any]]] = {}
        queues: dict[str, list[dict[str, Any]]] = {}
        for who in ("python", "node"):
            prefix = f"{who}."
            scenario(prefix)
            background(prefix, who)
            rows[who] = normalize(raw_rows(self.db, prefix), prefix)
            queues[who] = queue_counts(self.db, prefix)
        return TwinRun(rows["python"], rows["node"], queues)


@pytest.fixture
def twin(db: Database) -> Twin:
    return Twin(db)


@pytest.fixture
def node(node_boss: NodeBoss) -> NodeBoss:
    return node_boss


def node_timekeeper(database_url: str) -> NodeBoss:
    """The pinned pg-boss with only its timekeeper on, checking schedules every second."""
    return NodeBoss(
        database_url,
        "pgboss",
        package_dir=node_package(),
        supervise=False,
        schedule=True,
        migrate=False,
        cronMonitorIntervalSeconds=1,
        cronWorkerIntervalSeconds=1,
    )


def queue_jobs(db: Database, queue: str) -> list[dict[str, Any]]:
    """A queue's jobs, oldest first: id (as text), data and state."""
    return db.run(
        "SELECT CAST(id AS text) AS id, data, state FROM pgboss.job WHERE name = :n ORDER BY created_on",
        {"n": queue},
    )


def wait_for_jobs(db: Database, queue: str, seconds: float = 20) -> list[dict[str, Any]]:
    """``queue_jobs`` once the queue has any, or empty after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not (jobs := queue_jobs(db, queue)) and time.monotonic() < deadline:
        time.sleep(0.3)
    return jobs
