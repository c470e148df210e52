"""A job we insert is the row pg-boss's own ``send``/``insert`` writes (contract §3, §8 #1, #2).

Every send option, and none (so the queue's settings are copied), is sent by each client into
its own namespace; the rows must agree in every column but ids and times, and in the time
relations (``start_after - created_on``, ``keep_until - start_after``). Then pg-boss reads our
rows through its own API (``getJobById``, ``findJobs``, ``work``) and must see what it sees of
its own. Against an older release each scenario uses the options that release has
(``test_refused`` checks ours refuses the others).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.db import Database
from shared.pgboss.capabilities import Capabilities
from tests.interop.actors import Actor, NodeActor, PythonActor
from tests.interop.conftest import Names, Twin, supported, supported_queue
from tests.interop.rows import expire_seconds, job_row
from tests.support.node_boss import NodeBoss
from tests.support.releases import version_key

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


def _queue_config(caps: Capabilities) -> dict[str, Any]:
    """QUEUE_CONFIG less what the release lacks (heartbeatSeconds before 30, retryDelayMax
    and deleteAfterSeconds on 10.x)."""
    return supported_queue(caps, QUEUE_CONFIG)


def _queues(actor: Actor, names: Names, caps: Capabilities) -> None:
    actor.create_queue(names("dlq"))
    actor.create_queue(names("dlq2"))
    actor.create_queue(names("q"), deadLetter=names("dlq"), **_queue_config(caps))


# From 12.28 (schema 38) pg-boss reads any ISO 8601 date time as startAfter; before, only one
# ending in Z (anything else fails as an interval), so older releases get that form alone.
ANY_ISO_DATE = 38


def _variants(names: Names, caps: Capabilities) -> list[tuple[str, dict[str, Any]]]:
    future = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    variants = [
        ("defaults", {}),
        ("every option", supported(caps, {**EVERY_OPTION, "deadLetter": names("dlq2"), "id": str(uuid.uuid4())})),
    ]
    if caps.schema_version >= ANY_ISO_DATE:
        variants += [
            ("date with zone", {"startAfter": future.isoformat()}),
            ("date without zone", {"startAfter": future.replace(tzinfo=None).isoformat()}),
        ]
    else:
        variants.append(("date with zone", {"startAfter": future.isoformat().replace("+00:00", "Z")}))
    variants.append(("zero delay", {"startAfter": 0, "priority": -2}))
    if caps.groups:
        variants.append(("group without tier", {"group": {"id": "g2"}}))
    variants.append(("retry limit zero", {"retryLimit": 0, "retryBackoff": False}))
    return variants


def test_send_writes_pg_boss_rows_for_every_option(twin: Twin, caps: Capabilities) -> None:
    def scenario(actor: Actor, names: Names) -> dict[str, str | None]:
        _queues(actor, names, caps)
        return {
            tag: actor.send(names("q"), {"tag": tag, "payload": [1, "two", {"three": 3}]}, **options)
            for tag, options in _variants(names, caps)
        }

    run = twin(scenario)
    assert all(run.results["python"].values())
    run.assert_same()
    for row in run.ours:
        if row["data"]["tag"] == "every option":
            # The job's own retention (26+) and dead letter (27+), else the queue's.
            assert row["keep_until_after_start"] == (10 if caps.retention_per_job else 3600)
            assert row["start_after"] >= 29
            assert row["dead_letter"] == ("dlq2" if caps.dead_letter_per_job else "dlq")
        elif row["data"]["tag"] == "defaults":
            assert row["keep_until_after_start"] == 3600
            assert row["dead_letter"] == "dlq"
            assert (row["retry_limit"], expire_seconds(row)) == (3, 60)
            assert row.get("heartbeat_seconds") == (30 if caps.heartbeats else None)


def test_explicit_id_is_kept(python_actor: PythonActor, node_actor: NodeActor, db: Database) -> None:
    python_actor.create_queue("q")
    chosen = str(uuid.uuid4())
    assert python_actor.send("q", {"n": 1}, id=chosen) == chosen
    assert job_row(db, "q", chosen) is not None
    # The same id again is a conflict on (name, id): no row, no error, on both sides.
    assert python_actor.send("q", {"n": 2}, id=chosen) is None
    assert node_actor.send("q", {"n": 3}, id=chosen) is None
    assert job_row(db, "q", chosen)["data"] == {"n": 1}


def test_insert_writes_pg_boss_rows_for_every_option(twin: Twin, node_actor: NodeActor, caps: Capabilities) -> None:
    def scenario(actor: Actor, names: Names) -> list[str]:
        _queues(actor, names, caps)
        return actor.insert(
            names("q"),
            [{"data": {"tag": tag}, **options} for tag, options in _variants(names, caps)],
        )

    run = twin(scenario)
    assert len(run.results["python"]) == len(run.results["node"]) == len(_variants(Names(""), caps))
    # Ours keeps every option, as send() does; where the release's own insert() dropped one,
    # the every-option row shows it, and the rest must agree.
    [ours] = [row for row in run.ours if row["data"]["tag"] == "every option"]
    [theirs] = [row for row in run.theirs if row["data"]["tag"] == "every option"]
    ignored: list[str] = []
    for option in _dropped_by_node_insert(node_actor.release, caps):
        if option == "retentionSeconds":
            assert (ours["keep_until_after_start"], theirs["keep_until_after_start"]) == (10, 3600)
            ignored += ["keep_until", "keep_until_after_start"]
        elif option == "singletonSeconds":
            assert (ours["singleton_on"], theirs["singleton_on"]) == ("set", None)
            ignored.append("singleton_on")
        else:
            assert (ours["group_id"], theirs["group_id"]) == ("g1", None)
            ignored += ["group_id", "group_tier"]
    run.assert_same(ignore=ignored)


def _dropped_by_node_insert(release: str, caps: Capabilities) -> list[str]:
    """Options the release's own insert() drops though send() takes them, as pg-boss fixed
    later: 10.x reads a keepUntil date instead of retentionSeconds; 10.0 (before 10.1.0) and
    11.0.0-11.0.3 leave singleton_on empty; before 12.26.4 insert() drops ``group``."""
    version = version_key(release)
    dropped = []
    if version < (11,):
        dropped.append("retentionSeconds")
    if version < (10, 1) or (11,) <= version < (11, 0, 4):
        dropped.append("singletonSeconds")
    if caps.groups and version < (12, 26, 4):
        dropped.append("group")
    return dropped


def test_queue_rows_equal_pg_boss_create_queue(twin: Twin, db: Database, caps: Capabilities) -> None:
    # Options and key_strict_fifo (28+) where the release has them.
    part_policy = "key_strict_fifo" if caps.key_strict_fifo_policy else "singleton"

    def scenario(actor: Actor, names: Names) -> None:
        actor.create_queue(names("dlq"))
        actor.create_queue(names("plain"))
        actor.create_queue(
            names("full"),
            **supported_queue(
                caps,
                {
                    "policy": "stately",
                    "deadLetter": names("dlq"),
                    "warningQueueSize": 50,
                    "notify": True,
                    **QUEUE_CONFIG,
                },
            ),
        )
        actor.create_queue(names("part"), policy=part_policy, partition=True)

    twin(scenario)
    columns = [
        "name", "policy", "retry_limit", "retry_delay", "retry_backoff", "retry_delay_max", "expire_seconds",
        "retention_seconds", "deletion_seconds", "dead_letter", "warning_queued", "heartbeat_seconds", "notify",
        "partition", "table_name",
    ]  # fmt: skip
    present = [column for column in columns if column in caps.queue_columns]
    rows = db.run(f"SELECT {', '.join(present)} FROM pgboss.queue WHERE name LIKE '%.%' ORDER BY name")
    by_run: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        run_name, _, queue = row["name"].partition(".")
        row = {**row, "name": queue, "dead_letter": (row["dead_letter"] or ".").partition(".")[2] or None}
        if row.get("partition"):
            row["table_name"] = "<own partition>"
        by_run.setdefault(run_name.rstrip("0123456789"), {})[queue] = row
    assert by_run["python"] == by_run["node"]
    assert set(by_run["python"]) == {"dlq", "plain", "full", "part"}


def test_pg_boss_reads_our_row_as_its_own(
    python_actor: PythonActor, node_actor: NodeActor, node_boss: NodeBoss, caps: Capabilities
) -> None:
    for actor in (python_actor, node_actor):
        actor.create_queue(f"{actor.name}.dlq")
        actor.create_queue(f"{actor.name}.q", deadLetter=f"{actor.name}.dlq", **_queue_config(caps))
    options = supported(caps, {**EVERY_OPTION, "startAfter": 0})
    ours = python_actor.send("python.q", {"tag": "x"}, **options)
    theirs = node_actor.send("node.q", {"tag": "x"}, **options)

    def view(job: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in job.items() if k not in API_VOLATILE}

    mine = node_boss.call("getJobById", "python.q", ours)
    other = node_boss.call("getJobById", "node.q", theirs)
    assert view(mine) == view(other)
    assert mine["deadLetter"] == "python.dlq"

    if version_key(node_actor.release) >= (12, 8):  # findJobs came in 12.8.0
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
    data = DATA
    if isinstance(actor, NodeActor) and version_key(actor.release) < (11,):
        # pg-boss 10.x hands data to node-postgres as it is, which sends a string unquoted and
        # an array as a Postgres array: not JSON, so the insert fails. Other values arrive.
        data = [value for value in DATA if not isinstance(value, str | list)]
    for n, value in enumerate(data):
        actor.send("q", value, priority=len(data) - n)
    received = [observer.fetch("q")[0].data for _ in data]
    assert received == data
    assert observer.fetch("q") == []
