"""Each pass leaves the job table as pg-boss's own supervise() / flow resolver does.

Every scenario is set up twice through Node in one database, under two queue prefixes;
one copy's background work is done by pg-boss (``supervise(name)``, ``resolveFlow()``),
the other's by our Supervisor, and the normalized rows (and cached queue counts) must
agree. Run against another release (TEST_PGBOSS_RELEASE), the tests of the passes
proven on its schema compare against that release.
"""

from __future__ import annotations

import pytest

from shared.db import Database
from shared.pgboss.client import PgBoss
from shared.pgboss.supervisor import PASSES, PROVEN_SCHEMAS
from tests.supervise.conftest import RunPasses, Twin
from tests.support.node_boss import NodeBoss


def _node_supervise(node: NodeBoss, db: Database, prefix: str) -> None:
    rows = db.run("SELECT name FROM pgboss.queue WHERE left(name, length(:p)) = :p", {"p": prefix})
    for row in rows:
        node.call("supervise", row["name"])


@pytest.mark.since(40, "the monitor_claim_on claim of 12.30")
def test_expiry_and_lost_heartbeats_go_through_the_fail_chain(
    twin: Twin, node: NodeBoss, boss: PgBoss, db: Database, supervise: RunPasses
) -> None:
    def scenario(prefix: str) -> None:
        node.call("createQueue", prefix + "dlq", {})
        node.call("createQueue", prefix + "q", {"retryLimit": 0, "deadLetter": prefix + "dlq", "expireInSeconds": 5})
        node.call("createQueue", prefix + "r", {"retryLimit": 2, "retryDelay": 30, "expireInSeconds": 5})
        node.call("send", prefix + "q", {"tag": "expires-for-good"})
        node.call("send", prefix + "r", {"tag": "expires-and-retries"})
        node.call("send", prefix + "r", {"tag": "heartbeat"}, {"heartbeatSeconds": 10, "expireInSeconds": 3600})
        node.call("send", prefix + "r", {"tag": "still-running"})
        for queue in ("q", "r"):
            boss.fetch(prefix + queue, 10)
        db.run(
            "UPDATE pgboss.job SET started_on = started_on - interval '100 seconds',"
            " heartbeat_on = heartbeat_on - interval '100 seconds'"
            " WHERE left(name, length(:p)) = :p AND data->>'tag' <> 'still-running'",
            {"p": prefix},
        )

    def background(prefix: str, who: str) -> None:
        if who == "node":
            _node_supervise(node, db, prefix)
        else:
            summary = supervise("monitor", "maintain")
            assert summary.counts["monitor"]["expired"] == 3

    run = twin(scenario, background)
    states = sorted((row["name"], row["data"]["tag"], row["state"]) for row in run.ours)
    assert states == [
        ("dlq", "expires-for-good", "created"),
        ("q", "expires-for-good", "failed"),
        ("r", "expires-and-retries", "retry"),
        ("r", "heartbeat", "retry"),
        ("r", "still-running", "active"),
    ]
    run.assert_same()
    assert run.queues["python"] == run.queues["node"]


@pytest.mark.since(32, "12.21's retention")
def test_retention_deletes_what_pg_boss_deletes_and_keeps_the_same_counts(
    twin: Twin, node: NodeBoss, boss: PgBoss, db: Database, supervise: RunPasses
) -> None:
    def scenario(prefix: str) -> None:
        node.call("createQueue", prefix + "q", {"deleteAfterSeconds": 60, "retentionSeconds": 120})
        for tag in ("done-old", "done-new"):
            node.call("send", prefix + "q", {"tag": tag})
        boss.complete(prefix + "q", [(job, None) for job in boss.fetch(prefix + "q", 10)])
        for tag in ("queued-old", "queued-new", "cancelled-old"):
            node.call("send", prefix + "q", {"tag": tag})
        cancelled = db.run(
            "SELECT CAST(id AS text) AS id FROM pgboss.job WHERE name = :n AND data->>'tag' = 'cancelled-old'",
            {"n": prefix + "q"},
        )
        node.call("cancel", prefix + "q", [row["id"] for row in cancelled])
        db.run(
            "UPDATE pgboss.job SET completed_on = completed_on - interval '1 hour',"
            " keep_until = keep_until - interval '1 hour', start_after = start_after - interval '1 hour'"
            " WHERE name = :n AND data->>'tag' LIKE '%-old'",
            {"n": prefix + "q"},
        )
        db.run("UPDATE pgboss.queue SET queued_count = 0 WHERE name = :n", {"n": prefix + "q"})

    def background(prefix: str, who: str) -> None:
        if who == "node":
            _node_supervise(node, db, prefix)
        else:
            summary = supervise("monitor", "maintain")
            assert summary.counts["maintain"]["deleted"] == 3

    run = twin(scenario, background)
    assert sorted(row["data"]["tag"] for row in run.ours) == ["done-new", "queued-new"]
    run.assert_same()
    if boss.schema_version() in PROVEN_SCHEMAS["monitor"]:  # the counts are the monitor's
        assert run.queues["python"] == run.queues["node"]


@pytest.mark.since(33, "the background flow resolver")
def test_flow_children_are_released_once_their_parents_complete(
    twin: Twin, node: NodeBoss, boss: PgBoss, db: Database, supervise: RunPasses
) -> None:
    def scenario(prefix: str) -> None:
        node.call("createQueue", prefix + "q", {})
        node.call("createQueue", prefix + "next", {})
        node.call(
            "flow",
            [
                {"ref": "a", "name": prefix + "q", "data": {"tag": "a"}},
                {"ref": "b", "name": prefix + "q", "data": {"tag": "b"}},
                {"ref": "c", "name": prefix + "next", "data": {"tag": "needs-a"}, "dependsOn": ["a"]},
                {"ref": "d", "name": prefix + "next", "data": {"tag": "needs-a-and-b"}, "dependsOn": ["a", "b"]},
            ],
        )
        parents = boss.fetch(prefix + "q", 10)
        boss.complete(prefix + "q", [(job, None) for job in parents if job.data["tag"] == "a"])
        # Children sent an hour ago: 12.38 moves a released child's start_after up to the
        # release, earlier releases leave it where it was.
        db.run(
            "UPDATE pgboss.job SET created_on = created_on - interval '1 hour',"
            " start_after = start_after - interval '1 hour' WHERE name = :n",
            {"n": prefix + "next"},
        )

    def background(prefix: str, who: str) -> None:
        if who == "node":
            node.call("resolveFlow")
        else:
            summary = supervise("flows")
            assert summary.counts["flows"]["released"] == 1

    run = twin(scenario, background)
    blocked = {
        row["data"]["tag"]: (row["blocked"], row["pending_dependencies"]) for row in run.ours if row["name"] == "next"
    }
    assert blocked == {"needs-a": (False, 0), "needs-a-and-b": (True, 1)}
    moved = {row["data"]["tag"]: row["start_after"] > 3000 for row in run.theirs if row["name"] == "next"}
    assert moved == {"needs-a": boss.schema_version() >= 46, "needs-a-and-b": False}
    # A moved start_after is each run's own release time, which a loaded machine can put
    # seconds apart; the difference that matters is an hour.
    run.assert_same(tolerances={"start_after": 60})


@pytest.mark.since(40, "the monitor_claim_on claim of 12.30")
def test_a_claimed_pass_is_not_run_again_inside_its_interval(
    boss: PgBoss, node: NodeBoss, supervise: RunPasses
) -> None:
    node.call("createQueue", "q", {})
    first = supervise("monitor", "flows", "maintain")
    second = supervise("monitor", "flows", "maintain")
    assert first.counts["monitor"]["queues"] == 1
    assert "queues" not in second.counts["monitor"]
    assert second.counts["monitor"]["not_due_or_claimed_elsewhere"] == 1
    assert second.skipped["flows"] == "claimed elsewhere or not due"


@pytest.mark.since(46, "12.38's version of this pass")
def test_every_pass_refuses_a_schema_it_was_not_proven_on(db: Database, supervise: RunPasses) -> None:
    db.run("UPDATE pgboss.version SET version = 45")
    summary = supervise()
    assert summary.skipped == {name: "schema version 45 is not supported by this pass" for name in summary.counts}


@pytest.mark.since(46, "schema 46 to lower the version of")
def test_on_an_older_schema_only_the_passes_proven_there_run(db: Database, supervise: RunPasses) -> None:
    db.run("UPDATE pgboss.version SET version = 39")
    summary = supervise()
    assert set(summary.skipped) == set(PASSES) - {"flows", "maintain"}
    assert summary.skipped["monitor"] == "schema version 39 is not supported by this pass"
    db.run("UPDATE pgboss.version SET version = 43")
    summary = supervise("monitor", queue_stats=True)
    assert summary.skipped["monitor"] == "queue_stats is not written on schema version 43"
