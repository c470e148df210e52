"""A Node supervisor and two of our supervisors at once, over many intervals.

Node runs with ``supervise: true`` and ``schedule: true`` at one-second intervals; two
threads each run our Supervisor (own connection) at the same intervals. Whatever the
interleaving: every expired job is failed once (one dead-letter copy each), every cron
slot is sent once, no flow child is released before all its parents completed, and
``pgboss doctor`` finds no drift afterwards.
"""

from __future__ import annotations

import threading
import time

import pytest

from shared.db import Database
from shared.pgboss.client import PgBoss
from shared.pgboss.supervisor import Intervals, Plan, Supervisor
from tests.interop.test_doctor import doctor
from tests.support.node_boss import NodeBoss

pytestmark = pytest.mark.since(46, "12.38's version of every pass")

SECONDS = 8.0


def _ours(url: str, stop: threading.Event, errors: list[BaseException]) -> None:
    db = Database(url)
    try:
        plan = Plan(intervals=Intervals(monitor=1, maintain=1, flows=1, cron=1), budget_seconds=5)
        while not stop.is_set():
            Supervisor(PgBoss(db, "pgboss"), plan).run()
            time.sleep(0.05)
    except BaseException as error:  # reported by the test
        errors.append(error)
    finally:
        db.close()


def test_no_double_expiry_send_or_release(database_url: str, boss: PgBoss, db: Database, node_boss: NodeBoss) -> None:
    node_boss.call("createQueue", "dlq", {})
    node_boss.call("createQueue", "work", {"retryLimit": 0, "deadLetter": "dlq", "expireInSeconds": 1})
    node_boss.call("createQueue", "flow", {})
    node_boss.call("createQueue", "cron", {})
    node_boss.call("schedule", "cron", "* * * * * *", {"tick": True})
    for batch in range(3):
        node_boss.call("insert", "work", [{"data": {"n": batch * 20 + i}} for i in range(20)])
    boss.fetch("work", 60)
    flows = []
    for i in range(5):
        ids = node_boss.call(
            "flow",
            [
                {"ref": "a", "name": "flow", "data": {"role": "a", "i": i}},
                {"ref": "b", "name": "flow", "data": {"role": "b", "i": i}},
                {"ref": "c", "name": "flow", "data": {"role": "child", "i": i}, "dependsOn": ["a", "b"]},
            ],
        )
        flows.append(ids)
    parents = [job for job in boss.fetch("flow", 20) if job.data["role"] == "a"]
    boss.complete("flow", [(job, None) for job in parents])

    stop = threading.Event()
    errors: list[BaseException] = []
    threads = [threading.Thread(target=_ours, args=(database_url, stop, errors)) for _ in range(2)]
    options = {
        "supervise": True,
        "schedule": True,
        "migrate": False,
        "superviseIntervalSeconds": 1,
        "monitorIntervalSeconds": 1,
        "maintenanceIntervalSeconds": 1,
        "flowIntervalSeconds": 1,
        "cronMonitorIntervalSeconds": 1,
        "cronWorkerIntervalSeconds": 1,
    }
    with NodeBoss(database_url, "pgboss", **options):
        for thread in threads:
            thread.start()
        time.sleep(SECONDS)
        stop.set()
        for thread in threads:
            thread.join(30)
    assert errors == []

    work = db.run("SELECT state, count(*)::int AS n FROM pgboss.job WHERE name = 'work' GROUP BY state")
    assert work == [{"state": "failed", "n": 60}]
    copies = db.run("SELECT source_id, count(*)::int AS n FROM pgboss.job WHERE name = 'dlq' GROUP BY source_id")
    assert len(copies) == 60 and all(row["n"] == 1 for row in copies)

    slots = db.run(
        "SELECT singleton_on, count(*)::int AS n FROM pgboss.job WHERE name = '__pgboss__send-it' GROUP BY 1"
    )
    assert slots and all(row["n"] == 1 for row in slots)
    sent = db.run("SELECT count(*)::int AS n FROM pgboss.job WHERE name = 'cron'")[0]["n"]
    forwarded = db.run(
        "SELECT count(*)::int AS n FROM pgboss.job WHERE name = '__pgboss__send-it' AND state = 'completed'"
    )[0]["n"]
    assert sent == forwarded >= 1

    children = db.run(
        "SELECT blocked, pending_dependencies FROM pgboss.job WHERE name = 'flow' AND data->>'role' = 'child'"
    )
    assert children == [{"blocked": True, "pending_dependencies": 1}] * 5

    result = doctor(database_url)
    assert result.returncode == 0 and "No drift" in result.stdout, result.stdout + result.stderr
