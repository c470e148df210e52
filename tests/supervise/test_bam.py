"""Background index builds: what pg-boss's migrations queue in ``bam`` gets built.

Commands are queued through pg-boss's own ``job_table_run_async()``, as its migrations
queue them (one row for job_common and one per partitioned queue).
"""

from __future__ import annotations

import pytest

from shared.db import Database
from tests.supervise.conftest import RunPasses
from tests.support.node_boss import NodeBoss

pytestmark = pytest.mark.since(46, "12.38's background index builds")

QUEUE = "SELECT pgboss.job_table_run_async(:name, 46, :command)"


def _rows(db: Database) -> list[dict]:
    return db.run("SELECT name, table_name, status, error FROM pgboss.bam WHERE version = 46 ORDER BY name, table_name")


def _valid(db: Database, index: str) -> bool | None:
    rows = db.run(
        "SELECT i.indisvalid AS valid FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'pgboss' AND c.relname = :i",
        {"i": index},
    )
    return rows[0]["valid"] if rows else None


def test_pending_builds_run_once_per_claim_and_failures_are_recorded(
    db: Database, node_boss: NodeBoss, supervise: RunPasses
) -> None:
    node_boss.call("createQueue", "own", {"partition": True})
    own_table = db.run("SELECT table_name FROM pgboss.queue WHERE name = 'own'")[0]["table_name"]
    db.run(QUEUE, {"name": "by-created", "command": "CREATE INDEX CONCURRENTLY job_i90 ON pgboss.job (created_on)"})
    db.run(QUEUE, {"name": "broken", "command": "CREATE INDEX CONCURRENTLY job_i91 ON pgboss.job (no_such_column)"})
    assert {row["status"] for row in _rows(db)} == {"pending"}

    first = supervise("bam")
    assert first.counts["bam"] == {"completed": 2, "failed": 2}
    rows = _rows(db)
    assert [(row["name"], row["table_name"], row["status"]) for row in rows] == sorted(
        [
            ("broken", "job_common", "failed"),
            ("broken", own_table, "failed"),
            ("by-created", "job_common", "completed"),
            ("by-created", own_table, "completed"),
        ]
    )
    assert all("no_such_column" in row["error"] for row in rows if row["status"] == "failed")
    assert _valid(db, "job_common_i90") is True and _valid(db, f"{own_table}_i90") is True

    again = supervise("bam")
    assert again.skipped["bam"] == "claimed elsewhere or not due"
    status = {row["status"]: row["count"] for row in node_boss.call("getBamStatus")}
    assert status == {"completed": 2, "failed": 2}
