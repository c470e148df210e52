"""First proofs against real pg-boss 12.38 (Node) on the same tables.

(a) A Python send and a Node send with the same options leave the same row.
(b) A job Node sent, settled by Python, ends like its twin settled by Node.
(c) A Node worker receives and completes what Python sent, woken by our NOTIFY.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from datetime import UTC, timedelta
from typing import Any

import pytest

from shared.db import Database
from shared.pgboss import sql
from shared.pgboss.client import PgBoss
from shared.pgboss.models import Job, SendOptions
from tests.conftest import SCHEMA
from tests.pgboss.conftest import VOLATILE, age, dead_letters, job_row, seconds_until
from tests.support.node_boss import NodeBoss

ALL_OPTIONS: dict[str, Any] = {
    "priority": 7,
    "startAfter": "2031-02-03T04:05:06",  # zone-less: both sides must read it as UTC
    "singletonSeconds": 86400,
    "retryLimit": 4,
    "retryDelay": 3,
    "retryBackoff": True,
    "retryDelayMax": 50,
    "expireInSeconds": 45,
    "retentionSeconds": 5000,
    "deleteAfterSeconds": 600,
    "deadLetter": "interop_dlq",
    "heartbeatSeconds": 20,
    "group": {"id": "tenant-9", "tier": "gold"},
}
PARTITION_TABLE = "j" + hashlib.sha224(b"own_table").hexdigest()
DATA = {"text": "zaż\u00f3\u0142\u0107 \U0001f600", "n": [1, 2.5, None, True], "nested": {"deep": {"x": ""}}}


def without(row: dict[str, Any] | None, *ignored: str) -> dict[str, Any]:
    assert row is not None
    return {key: value for key, value in row.items() if key not in ignored}


def node_job(node: NodeBoss, name: str) -> dict[str, Any]:
    (job,) = node.call("fetch", name)
    return job


def attempt(job: dict[str, Any]) -> dict[str, Any]:
    return {"id": job["id"], "retryCount": job["retryCount"]}


@pytest.fixture
def queues(boss: PgBoss, node_boss: NodeBoss) -> Callable[..., None]:
    """Create queues through Node, so Python works queues it did not make."""

    def create(*names: str, **options: Any) -> None:
        for name in names:
            node_boss.call("createQueue", name, options)
        boss.get_queue(names[0])

    return create


def test_a_send_with_every_option_writes_the_row_node_writes(
    boss: PgBoss, db: Database, node_boss: NodeBoss, queues: Callable[..., None]
) -> None:
    queues("interop_dlq")
    queues("same", policy="standard", retryLimit=1, expireInSeconds=99, deadLetter="interop_dlq")
    py_id = boss.send("same", DATA, SendOptions.model_validate({**ALL_OPTIONS, "singletonKey": "py"}))
    node_id = node_boss.call("send", "same", DATA, {**ALL_OPTIONS, "singletonKey": "node"})
    py_row, node_row = job_row(db, "same", py_id), job_row(db, "same", node_id)
    assert (py_row["singleton_key"], node_row["singleton_key"]) == ("py", "node")
    # An absolute start_after, its keep_until and the day's throttle slot are equal too.
    assert without(py_row, "id", "created_on", "singleton_key") == without(
        node_row, "id", "created_on", "singleton_key"
    )
    assert py_row["start_after"] == node_row["start_after"]
    assert py_row["start_after"].astimezone(UTC).hour == 4


def test_a_send_without_options_writes_the_row_node_writes(
    boss: PgBoss, db: Database, node_boss: NodeBoss, queues: Callable[..., None]
) -> None:
    queues("interop_dlq")
    queues(
        "defaults",
        policy="short",
        retryLimit=6,
        retryDelay=2,
        retryBackoff=True,
        retryDelayMax=9,
        expireInSeconds=70,
        retentionSeconds=800,
        deleteAfterSeconds=90,
        deadLetter="interop_dlq",
        heartbeatSeconds=30,
    )
    py_id = boss.send("defaults", None, SendOptions(singletonKey="py"))
    node_id = node_boss.call("send", "defaults", None, {"singletonKey": "node"})
    py_row, node_row = job_row(db, "defaults", py_id), job_row(db, "defaults", node_id)
    assert without(py_row, *VOLATILE, "singleton_key") == without(node_row, *VOLATILE, "singleton_key")
    for row in (py_row, node_row):
        assert row["keep_until"] - row["start_after"] == timedelta(seconds=800)
        assert row["start_after"] == row["created_on"]


def test_delayed_sends_match(boss: PgBoss, db: Database, node_boss: NodeBoss, queues: Callable[..., None]) -> None:
    queues("delays")
    py_id = boss.send("delays", 1, SendOptions(startAfter=120))
    node_id = node_boss.call("send", "delays", 1, {"startAfter": 120})
    for job_id in (py_id, node_id):
        assert 115 < seconds_until(db, "delays", job_id) <= 120
    assert without(job_row(db, "delays", py_id), *VOLATILE) == without(job_row(db, "delays", node_id), *VOLATILE)


def test_debounce_matches_send_debounced(
    boss: PgBoss, db: Database, node_boss: NodeBoss, queues: Callable[..., None]
) -> None:
    queues("debounce")
    options = SendOptions(singletonSeconds=3600, singletonKey="py", singletonNextSlot=True)
    py_ids = [boss.send("debounce", {"n": n}, options) for n in range(3)]
    node_ids = [node_boss.call("sendDebounced", "debounce", {"n": n}, None, 3600, "node") for n in range(3)]
    assert py_ids[2] is None and node_ids[2] is None
    for py_id, node_id in zip(py_ids[:2], node_ids[:2], strict=True):
        py_row, node_row = job_row(db, "debounce", py_id), job_row(db, "debounce", node_id)
        assert py_row["singleton_on"] == node_row["singleton_on"]
        assert abs((py_row["start_after"] - node_row["start_after"]).total_seconds()) < 2
        volatile = (*VOLATILE, "singleton_key")
        assert without(py_row, *volatile) == without(node_row, *volatile)


def test_policies_dedupe_across_both_clients(boss: PgBoss, node_boss: NodeBoss, queues: Callable[..., None]) -> None:
    queues("short_shared", policy="short")
    assert node_boss.call("send", "short_shared", 1, {"singletonKey": "k"}) is not None
    assert boss.send("short_shared", 2, SendOptions(singletonKey="k")) is None
    queues("throttle_shared")
    assert boss.send("throttle_shared", 1, SendOptions(singletonSeconds=3600, singletonKey="k")) is not None
    assert node_boss.call("sendThrottled", "throttle_shared", 2, None, 3600, "k") is None


def test_python_fetch_returns_what_node_fetch_returns(
    boss: PgBoss, db: Database, node_boss: NodeBoss, queues: Callable[..., None]
) -> None:
    queues("fetched", expireInSeconds=33, heartbeatSeconds=12)
    options = {"group": {"id": "g", "tier": "t"}, "retryLimit": 3}
    node_boss.call("send", "fetched", DATA, options)
    node_boss.call("send", "fetched", DATA, options)
    (ours,) = boss.fetch("fetched")
    theirs = node_job(node_boss, "fetched")
    assert (ours.data, ours.retry_count, ours.expire_seconds, ours.heartbeat_seconds) == (
        theirs["data"],
        theirs["retryCount"],
        theirs["expireInSeconds"],
        theirs["heartbeatSeconds"],
    )
    assert (ours.group_id, ours.group_tier) == (theirs["groupId"], theirs["groupTier"])
    volatile = (*VOLATILE, "started_on", "heartbeat_on")
    assert without(job_row(db, "fetched", ours.id), *volatile) == without(
        job_row(db, "fetched", theirs["id"]), *volatile
    )


def test_fail_retry_and_dead_letter_match_node(
    boss: PgBoss, db: Database, node_boss: NodeBoss, queues: Callable[..., None]
) -> None:
    queues("twin_dlq", retryLimit=5, expireInSeconds=77, retentionSeconds=999, heartbeatSeconds=40)
    queues("twin", retryLimit=1, retryDelay=30, deadLetter="twin_dlq")
    error = {"name": "Error", "message": "boom"}
    for _ in range(2):
        node_boss.call("send", "twin", DATA, {"priority": 2, "group": {"id": "g"}, "singletonKey": "k"})
    ours: Job = boss.fetch("twin")[0]
    theirs = node_job(node_boss, "twin")
    assert boss.fail("twin", [(ours, error)]).retried == (ours.id,)
    node_boss.call("fail", "twin", attempt(theirs), error)
    py_row, node_row = job_row(db, "twin", ours.id), job_row(db, "twin", theirs["id"])
    assert without(py_row, *VOLATILE) == without(node_row, *VOLATILE)
    assert abs((py_row["start_after"] - node_row["start_after"]).total_seconds()) < 2
    assert py_row["state"] == "retry" and py_row["output"] == error
    for job_id in (ours.id, theirs["id"]):
        age(db, "twin", job_id, 31, "start_after")
    ours = boss.fetch("twin")[0]
    theirs = node_job(node_boss, "twin")
    assert ours.retry_count == theirs["retryCount"] == 1
    outcome = boss.fail("twin", [(ours, error)])
    node_boss.call("fail", "twin", attempt(theirs), error)
    assert outcome.failed == (ours.id,) and len(outcome.dead_lettered) == 1
    py_row, node_row = job_row(db, "twin", ours.id), job_row(db, "twin", theirs["id"])
    assert without(py_row, *VOLATILE) == without(node_row, *VOLATILE)
    (py_copy,) = dead_letters(db, "twin_dlq", ours.id)
    (node_copy,) = dead_letters(db, "twin_dlq", theirs["id"])
    assert without(py_copy, *VOLATILE) == without(node_copy, *VOLATILE)
    assert (py_copy["source_name"], py_copy["source_output"], py_copy["retry_limit"]) == ("twin", error, 5)


def test_complete_matches_node(boss: PgBoss, db: Database, node_boss: NodeBoss, queues: Callable[..., None]) -> None:
    queues("done_twin")
    for output in ({"ok": 1}, "text", None):
        node_boss.call("send", "done_twin", DATA)
        node_boss.call("send", "done_twin", DATA)
        (ours,) = boss.fetch("done_twin")
        theirs = node_job(node_boss, "done_twin")
        assert boss.complete("done_twin", [(ours, output)]) == [ours.id]
        node_boss.call("complete", "done_twin", attempt(theirs), output)
        py_row, node_row = job_row(db, "done_twin", ours.id), job_row(db, "done_twin", theirs["id"])
        assert without(py_row, *VOLATILE) == without(node_row, *VOLATILE)
        assert py_row["state"] == "completed"


def test_expiry_matches_node_supervisor(
    boss: PgBoss, db: Database, node_boss: NodeBoss, queues: Callable[..., None]
) -> None:
    queues("exp_dlq")
    for name in ("exp_py", "exp_node"):
        queues(name, expireInSeconds=1, retryLimit=1, deadLetter="exp_dlq", heartbeatSeconds=10)
        node_boss.call("send", name, DATA)
        node_boss.call("send", name, DATA)
        timed_out, silent = boss.fetch(name, 2)
        age(db, name, timed_out.id, 5, "started_on")
        age(db, name, silent.id, 11, "heartbeat_on")
    boss.fail_expired("exp_py")
    node_boss.call("supervise", "exp_node")
    py_rows = sorted(
        db.run(f"SELECT *, state::text AS state FROM {SCHEMA}.job WHERE name = 'exp_py'"),
        key=lambda row: str(row["output"]),
    )
    node_rows = sorted(
        db.run(f"SELECT *, state::text AS state FROM {SCHEMA}.job WHERE name = 'exp_node'"),
        key=lambda row: str(row["output"]),
    )
    assert [row["output"] for row in py_rows] == [
        {"value": {"message": "job heartbeat timeout"}},
        {"value": {"message": "job timed out"}},
    ]
    for py_row, node_row in zip(py_rows, node_rows, strict=True):
        assert without(py_row, *VOLATILE, "name") == without(node_row, *VOLATILE, "name")


def test_a_node_worker_receives_python_jobs_exactly(
    boss: PgBoss, db: Database, node_boss: NodeBoss, queues: Callable[..., None]
) -> None:
    queues("to_node")
    job_id = boss.send("to_node", DATA, SendOptions(priority=1))
    node_boss.work("to_node", {"behavior": "complete", "output": {"done": True}}, pollingIntervalSeconds=0.5)
    (received,) = node_boss.wait_received("to_node", 1)
    assert (received["id"], received["data"], received["retryCount"]) == (job_id, DATA, 0)
    deadline = time.monotonic() + 10
    while job_row(db, "to_node", job_id)["state"] != "completed" and time.monotonic() < deadline:
        time.sleep(0.05)
    row = job_row(db, "to_node", job_id)
    assert (row["state"], row["output"]) == ("completed", {"done": True})


def test_our_notify_wakes_a_listening_node_worker(boss: PgBoss, database_url: str) -> None:
    with NodeBoss(database_url, SCHEMA, supervise=False, schedule=False, migrate=False, useListenNotify=True) as node:
        node.call("createQueue", "woken", {"notify": True})
        node.work("woken", {"behavior": "complete"}, pollingIntervalSeconds=20)
        time.sleep(1)  # let the worker finish its first (empty) poll and the listener start
        started = time.monotonic()
        job_id = boss.send("woken", {"wake": True})
        (received,) = node.wait_received("woken", 1, timeout=10)
        assert received["id"] == job_id
        assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("suffix", "call"),
    [
        ("create-queue", ("createQueue", "locked_out")),
        ("job_commonfailJobsByTimeout", ("supervise", "sweep")),
        ("job_commonfailJobsByHeartbeat", ("supervise", "sweep")),
        (PARTITION_TABLE + "failJobsByTimeout", ("supervise", "own_table")),
    ],
)
def test_our_advisory_lock_keys_are_the_ones_node_waits_for(
    boss: PgBoss,
    other_db: Database,
    node_boss: NodeBoss,
    queues: Callable[..., None],
    suffix: str,
    call: tuple[str, str],
) -> None:
    queues("sweep")
    queues("own_table", partition=True)
    finished = threading.Event()
    with other_db.transaction() as tx:
        tx.run(sql.advisory_lock(), {"key": SCHEMA + suffix})
        worker = threading.Thread(target=lambda: (node_boss.call(*call), finished.set()))
        worker.start()
        time.sleep(1)
        assert not finished.is_set()
    worker.join(20)
    assert finished.is_set()
