"""Helpers for the pg-boss client tests: read rows back and move the clock of a job.

Tests check outcomes in pg-boss's own tables, so they read rows with plain SQL here;
``age`` rewrites a job's timestamps instead of waiting for real time to pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from shared.db import Database, Transaction
from shared.pgboss.client import PgBoss
from shared.pgboss.models import QueueOptions
from tests.conftest import SCHEMA

# Columns that differ between two otherwise identical jobs sent at different moments.
VOLATILE = {
    "id",
    "created_on",
    "start_after",
    "keep_until",
    "started_on",
    "completed_on",
    "heartbeat_on",
    "singleton_on",
    "source_id",
    "source_created_on",
    "source_root_id",
}


def job_row(db: Database, name: str, job_id: str) -> dict[str, Any] | None:
    rows = db.run(
        f"SELECT *, state::text AS state FROM {SCHEMA}.job WHERE name = :name AND id = CAST(:id AS uuid)",
        {"name": name, "id": job_id},
    )
    return rows[0] if rows else None


def job_rows(db: Database, name: str) -> list[dict[str, Any]]:
    return db.run(
        f"SELECT *, state::text AS state FROM {SCHEMA}.job WHERE name = :name ORDER BY created_on, id",
        {"name": name},
    )


def dead_letters(db: Database, name: str, source_id: str) -> list[dict[str, Any]]:
    return db.run(
        f"SELECT *, state::text AS state FROM {SCHEMA}.job WHERE name = :name AND source_id = CAST(:id AS uuid)",
        {"name": name, "id": source_id},
    )


def age(db: Database, name: str, job_id: str, seconds: float, *columns: str) -> None:
    """Move the given timestamp columns of a job ``seconds`` into the past."""
    assignments = ", ".join(f"{column} = {column} - make_interval(secs => :s)" for column in columns)
    db.run(
        f"UPDATE {SCHEMA}.job SET {assignments} WHERE name = :name AND id = CAST(:id AS uuid)",
        {"s": seconds, "name": name, "id": job_id},
    )


def seconds_until(db: Database, name: str, job_id: str, column: str = "start_after") -> float:
    return float(
        db.run(
            f"SELECT extract(epoch FROM {column} - now()) AS s FROM {SCHEMA}.job "
            "WHERE name = :name AND id = CAST(:id AS uuid)",
            {"name": name, "id": job_id},
        )[0]["s"]
    )


def hold_pg_boss_lock(tx: Transaction, suffix: str) -> None:
    """Take pg-boss's advisory lock ``suffix`` as documented, independently of the client."""
    tx.run(
        "SELECT pg_advisory_xact_lock(('x' || encode(sha224(convert_to("
        "current_database() || '.pgboss.' || :schema || :suffix, 'UTF8')), 'hex'))::bit(64)::bigint)",
        {"schema": SCHEMA, "suffix": suffix},
    )


@pytest.fixture
def queue(boss: PgBoss) -> Callable[..., str]:
    """Create a queue through the client: ``queue("q", policy="short", retryLimit=0)``."""

    def create(name: str, **options: Any) -> str:
        boss.create_queue(name, QueueOptions.model_validate(options))
        return name

    return create


@pytest.fixture
def other_db(database_url: str) -> Iterator[Database]:
    """A second connection to the test database, for locks and races between sessions."""
    database = Database(database_url)
    yield database
    database.close()
