"""Throughput counters and queue_stats snapshots as pg-boss 12.38's monitor writes them.

With ``persistQueueStats`` a pg-boss monitor pass counts each queue's jobs created,
completed and failed since the last counted pass, their wait and run histograms and the
age of the oldest ready job onto the queue row, copies the row into ``queue_stats``, and
raises the counters of recorded snapshots when jobs committed after their window was
counted. The scenario is played twice under a fixed ``job_now()`` (the clock every
pg-boss statement reads), once supervised by Node (``supervise(name)``, persistQueueStats
on) and once by our Supervisor with ``queue_stats`` on; the queue rows and the snapshots
must be equal column for column.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.db import Database
from shared.pgboss.client import PgBoss
from tests.conftest import node_package
from tests.supervise.conftest import RunPasses
from tests.support.node_boss import NodeBoss

pytestmark = pytest.mark.since(46, "12.38's queue_stats counters")

QUEUE_ROW = """
SELECT substr(name, length(:prefix) + 1) AS name, created_delta, completed_delta, failed_delta,
  delta_seconds, delta_on, wait_bins, run_bins, ready_oldest_seconds, queued_count, ready_count,
  active_count, failed_count, total_count, ready_history, monitor_on
FROM pgboss.queue WHERE left(name, length(:prefix)) = :prefix ORDER BY name
"""
SNAPSHOTS = """
SELECT substr(name, length(:prefix) + 1) AS name, deferred_count, queued_count, ready_count,
  active_count, failed_count, total_count, created_delta, completed_delta, failed_delta,
  delta_seconds, delta_on, wait_bins, run_bins, ready_oldest_seconds, captured_on
FROM pgboss.queue_stats WHERE left(name, length(:prefix)) = :prefix ORDER BY name, captured_on
"""
PARTITIONS = """
SELECT c.relname FROM pg_inherits i
JOIN pg_class p ON p.oid = i.inhparent JOIN pg_class c ON c.oid = i.inhrelid
JOIN pg_namespace n ON n.oid = p.relnamespace
WHERE n.nspname = 'pgboss' AND p.relname = 'queue_stats' ORDER BY 1
"""


def _set_clock(db: Database, at: datetime) -> None:
    """Make pg-boss's job_now() answer ``at`` (what pg-boss's own TestClock does)."""
    db.run(
        "CREATE OR REPLACE FUNCTION pgboss.job_now() RETURNS timestamptz LANGUAGE sql STABLE"
        f" AS $$ SELECT CAST('{at.isoformat()}' AS timestamptz) $$"
    )


@pytest.fixture
def counting_node(database_url: str) -> Iterator[NodeBoss]:
    with NodeBoss(
        database_url,
        "pgboss",
        package_dir=node_package(),
        supervise=False,
        schedule=False,
        migrate=False,
        persistQueueStats=True,
    ) as node:
        yield node


def test_counters_snapshots_and_true_up_match_pg_boss(
    counting_node: NodeBoss, boss: PgBoss, db: Database, supervise: RunPasses
) -> None:
    node = counting_node
    start = datetime.now(UTC).replace(microsecond=0)
    old_day = (start - timedelta(days=10)).date()
    old_partition = f"queue_stats_{old_day:%Y%m%d}"

    def at(seconds: int) -> str:
        return (start + timedelta(seconds=seconds)).isoformat()

    def scenario(prefix: str) -> None:
        _set_clock(db, start)
        # A day of snapshots past the 7-day retention, for the pass to drop.
        db.run(
            f"CREATE TABLE IF NOT EXISTS pgboss.{old_partition} PARTITION OF pgboss.queue_stats"
            f" FOR VALUES FROM ('{old_day} 00:00:00+00') TO ('{old_day + timedelta(days=1)} 00:00:00+00')"
        )
        q = prefix + "q"
        node.call("createQueue", q, {"retryLimit": 0})
        for tag in ("done", "failed", "running", "waiting"):
            node.call("send", q, {"tag": tag})
            if tag == "waiting":
                continue
            [job] = boss.fetch(q, 1)
            if tag == "done":
                node.call("complete", q, job.id)
            elif tag == "failed":
                node.call("fail", q, job.id, {"message": "no"})
        # Spread the jobs over the window the first pass counts (it starts at delta_on).
        times = {
            "done": (-300, -240, -60),
            "failed": (-300, -250, -30),
            "running": (-280, -100, None),
            "waiting": (-200, None, None),
        }
        for tag, (created, started, finished) in times.items():
            db.run(
                "UPDATE pgboss.job SET created_on = CAST(:c AS timestamptz), start_after = CAST(:c AS timestamptz),"
                " started_on = CAST(:s AS timestamptz), completed_on = CAST(:f AS timestamptz)"
                " WHERE name = :q AND data->>'tag' = :tag",
                {
                    "q": q,
                    "tag": tag,
                    "c": at(created),
                    "s": at(started) if started is not None else None,
                    "f": at(finished) if finished is not None else None,
                },
            )
        db.run("UPDATE pgboss.queue SET delta_on = CAST(:d AS timestamptz) WHERE name = :q", {"q": q, "d": at(-600)})

    def background(prefix: str, who: str) -> None:
        def one_pass() -> None:
            if who == "node":
                node.call("supervise", prefix + "q")
            else:
                summary = supervise("monitor", "maintain", queue_stats=True)
                assert summary.counts["monitor"]["snapshots"] == 1

        one_pass()  # counts [start - 600 s, start - 10 s)
        _set_clock(db, start + timedelta(seconds=60))
        one_pass()  # counts [start - 10 s, start + 50 s): nothing happened in it
        # A job stamped inside the second window but committed after it was counted.
        node.call("send", prefix + "q", {"tag": "late"})
        db.run(
            "UPDATE pgboss.job SET created_on = CAST(:c AS timestamptz), start_after = CAST(:c AS timestamptz)"
            " WHERE name = :q AND data->>'tag' = 'late'",
            {"q": prefix + "q", "c": at(20)},
        )
        _set_clock(db, start + timedelta(seconds=120))
        one_pass()  # sees the late job and raises the second snapshot
        assert old_partition not in [row["relname"] for row in db.run(PARTITIONS)]

    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for who in ("python", "node"):
        prefix = f"{who}."
        scenario(prefix)
        background(prefix, who)
        results[who] = {
            "queue": db.run(QUEUE_ROW, {"prefix": prefix}),
            "snapshots": db.run(SNAPSHOTS, {"prefix": prefix}),
        }

    ours, theirs = results["python"], results["node"]
    counters = [
        (row["created_delta"], row["completed_delta"], row["failed_delta"], row["delta_seconds"])
        for row in ours["snapshots"]
    ]
    # First window: four created, one completed, one failed; the late job raised the second.
    assert counters == [(4, 1, 1, 590), (1, 0, 0, 60), (0, 0, 0, 60)]
    first = ours["snapshots"][0]
    assert sum(n for n in first["wait_bins"] if n) == 2 and sum(n for n in first["run_bins"] if n) == 2
    assert first["ready_oldest_seconds"] == 200
    print(ours, theirs)
    assert ours["snapshots"] == theirs["snapshots"]
    assert ours["queue"] == theirs["queue"]


def test_queue_stats_stay_off_unless_asked_for(node: NodeBoss, db: Database, supervise: RunPasses) -> None:
    node.call("createQueue", "q", {})
    node.call("send", "q", {})
    summary = supervise("monitor")
    assert summary.counts["monitor"]["counted"] == 1 and "snapshots" not in summary.counts["monitor"]
    assert db.run("SELECT count(*)::int AS n FROM pgboss.queue_stats")[0]["n"] == 0
    assert db.run("SELECT delta_on FROM pgboss.queue WHERE name = 'q'")[0]["delta_on"] is None
