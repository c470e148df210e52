"""A job we insert is the row pg-boss's own ``send``/``insert`` writes (contract §3, §8 #1, #2).

Every send option, and none (so the queue's settings are copied), is sent by each client into
its own namespace; the rows must agree in every column but ids and times, and in the time
relations (``start_after - created_on``, ``keep_until - start_after``). Then pg-boss reads our
rows through its own API (``getJobById``, ``findJobs``, ``work``) and must see what it sees of
its own.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.db import Database
from tests.interop.actors import Actor, NodeActor, PythonActor
from tests.interop.conftest import Names, Twin
from tests.interop.rows import job_row
from tests.support.node_boss import NodeBoss

QUEUE_CONFIG: dict[str, Any] = {
    "retryLimit": 3,
    "retryDelay": 2,
    "retryBackoff": True,
    "retryDelayMax": 10,
    "expireInSeconds": 60,
    "retentionSeconds": 3600,
    "deleteAfterSeconds": 120,
    "heartbeatSeconds": 30,
}

EVERY_OPTION: dict[str, Any] = {
    "priority": 3,
    "startAfter": 30,
    "retryLimit": 1,
    "retryDelay": 4,
    "retryBackoff": True,
    "retryDelayMax": 7,
    "expireInSeconds": 5,
    "deleteAfterSeconds": 60,
    "retentionSeconds": 10,
    "singletonKey": "123",
    "singletonSeconds": 600,
    "group": {"id": "g1", "tier": "gold"},
    "heartbeatSeconds": 20,
}

# Columns pg-boss's API reports that are times or ids, left out of API-level comparisons.
API_VOLATILE = {
    "id",
    "name",
    "startAfter",
    "startedOn",
    "createdOn",
    "completedOn",
    "keepUntil",
    "heartbeatOn",
    "singletonOn",
    "sourceId",
    "sourceCreatedOn",
    "sourceRootId",
    "deadLetter",
}


def _queues(actor: Actor, names: Names) -> None:
    actor.create_queue(names("dlq"))
    actor.create_queue(names("dlq2"))
    actor.create_queue(names("q"), deadLetter=names("dlq"), **QUEUE_CONFIG)


def _variants(names: Names) -> list[tuple[str, dict[str, Any]]]:
    future = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    return [
        ("defaults", {}),
        ("every option", {**EVERY_OPTION, "deadLetter": names("dlq2"), "id": str(uuid.uuid4())}),
        ("date with zone", {"startAfter": future.isoformat()}),
        ("date without zone", {"startAfter": future.replace(tzinfo=None).isoformat()}),
        ("zero delay", {"startAfter": 0, "priority": -2}),
        ("group without tier", {"group": {"id": "g2"}}),
        ("retry limit zero", {"retryLimit": 0, "retryBackoff": False}),
    ]


def test_send_writes_pg_boss_rows_for_every_option(twin: Twin) -> None:
    def scenario(actor: Actor, names: Names) -> dict[str, str | None]:
        _queues(actor, names)
        return {
            tag: actor.send(names("q"), {"tag": tag, "payload": [1, "two", {"three": 3}]}, **options)
            for tag, options in _variants(names)
        }

    run = twin(scenario)
    assert all(run.results["python"].values())
    run.assert_same()
    for row in run.ours:
        if row["data"]["tag"] == "every option":
            assert row["keep_until_after_start"] == 10
            assert row["start_after"] >= 29
            assert row["dead_letter"] == "dlq2"
        elif row["data"]["tag"] == "defaults":
            assert row["keep_until_after_start"] == 3600
            assert row["dead_letter"] == "dlq"
            assert (row["retry_limit"], row["expire_seconds"], row["heartbeat_seconds"]) == (3, 60, 30)


def test_explicit_id_is_kept(python_actor: PythonActor, node_actor: NodeActor, db: Database) -> None:
    python_actor.create_queue("q")
    chosen = str(uuid.uuid4())
    assert python_actor.send("q", {"n": 1}, id=chosen) == chosen
    assert job_row(db, "q", chosen) is not None
    # The same id again is a conflict on (name, id): no row, no error, on both sides.
    assert python_actor.send("q", {"n": 2}, id=chosen) is None
    assert node_actor.send("q", {"n": 3}, id=chosen) is None
    assert job_row(db, "q", chosen)["data"] == {"n": 1}


def test_insert_writes_pg_boss_rows_for_every_option(twin: Twin) -> None:
    def scenario(actor: Actor, names: Names) -> list[str]:
        _queues(actor, names)
        return actor.insert(
            names("q"),
            [{"data": {"tag": tag}, **options} for tag, options in _variants(names)],
        )

    run = twin(scenario)
    assert len(run.results["python"]) == len(run.results["node"]) == len(_variants(Names("")))
    run.assert_same()


def test_queue_rows_equal_pg_boss_create_queue(twin: Twin, db: Database) -> None:
    def scenario(actor: Actor, names: Names) -> None:
        actor.create_queue(names("dlq"))
        actor.create_queue(names("plain"))
        actor.create_queue(
            names("full"),
            policy="stately",
            deadLetter=names("dlq"),
            warningQueueSize=50,
            notify=True,
            **QUEUE_CONFIG,
        )
        actor.create_queue(names("part"), policy="key_strict_fifo", partition=True)

    twin(scenario)
    rows = db.run(
        "SELECT name, policy, retry_limit, retry_delay, retry_backoff, retry_delay_max, expire_seconds,"
        " retention_seconds, deletion_seconds, dead_letter, warning_queued, heartbeat_seconds, notify,"
        " partition, table_name FROM pgboss.queue WHERE name LIKE '%.%' ORDER BY name"
    )
    by_run: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        run_name, _, queue = row["name"].partition(".")
        row = {**row, "name": queue, "dead_letter": (row["dead_letter"] or ".").partition(".")[2] or None}
        if row["partition"]:
            row["table_name"] = "<own partition>"
        by_run.setdefault(run_name.rstrip("0123456789"), {})[queue] = row
    assert by_run["python"] == by_run["node"]
    assert set(by_run["python"]) == {"dlq", "plain", "full", "part"}


def test_pg_boss_reads_our_row_as_its_own(
    python_actor: PythonActor, node_actor: NodeActor, node_boss: NodeBoss
) -> None:
    for actor in (python_actor, node_actor):
        actor.create_queue(f"{actor.name}.dlq")
        actor.create_queue(f"{actor.name}.q", deadLetter=f"{actor.name}.dlq", **QUEUE_CONFIG)
    options = {**EVERY_OPTION, "startAfter": 0}
    ours = python_actor.send("python.q", {"tag": "x"}, **options)
    theirs = node_actor.send("node.q", {"tag": "x"}, **options)

    def view(job: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in job.items() if k not in API_VOLATILE}

    mine = node_boss.call("getJobById", "python.q", ours)
    other = node_boss.call("getJobById", "node.q", theirs)
    assert view(mine) == view(other)
    assert mine["deadLetter"] == "python.dlq"

    found = node_boss.call("findJobs", "python.q", {"key": "123"})
    assert [job["id"] for job in found] == [ours]
    assert node_boss.call("findJobs", "python.q", {"data": {"tag": "x"}, "queued": True})[0]["id"] == ours

    node_boss.work("python.q", {"behavior": "complete"}, pollingIntervalSeconds=0.5, includeMetadata=True)
    node_boss.work("node.q", {"behavior": "complete"}, pollingIntervalSeconds=0.5, includeMetadata=True)
    got_ours = node_boss.wait_received("python.q", 1)[0]
    got_theirs = node_boss.wait_received("node.q", 1)[0]
    handler_volatile = API_VOLATILE | {"queue", "workerId", "receivedAt", "finishedAt", "outcome", "signal"}
    assert {k: v for k, v in got_ours.items() if k not in handler_volatile} == {
        k: v for k, v in got_theirs.items() if k not in handler_volatile
    }
    assert got_ours["id"] == ours


DATA: list[Any] = [
    None,
    "text",
    "",
    42,
    -7,
    1.5,
    True,
    False,
    [1, "two", None],
    {},
    {"unicode": "日本語 ✓ 🎉", "quote": "\"'\\", "nested": {"deep": [{"x": 1}]}},
    {"max_safe": 2**53 - 1, "small": 1e-7},
]


def test_payloads_arrive_as_sent(actor: Actor, observer: Actor) -> None:
    observer.create_queue("q")
    for n, data in enumerate(DATA):
        actor.send("q", data, priority=len(DATA) - n)
    received = [observer.fetch("q")[0].data for _ in DATA]
    assert received == DATA
    assert observer.fetch("q") == []
