"""LISTEN/NOTIFY between the clients (contract §3.7, §8 #20, listenNotifyTest).

The one that matters in production: a Node worker started with ``useListenNotify`` polls a
notify-enabled queue only every ``notifyPollingIntervalSeconds`` (here 30 s), so a job we insert
must wake it through NOTIFY, on the channel pg-boss derives from the schema name, well before
the next poll. The channel, the payload and the "only for jobs due now" rule are then checked
from a LISTEN of our own, for our sends and for pg-boss's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from shared.db import Database
from shared.pgboss.client import PgBoss
from tests.conftest import node_package
from tests.interop.actors import Actor, PythonActor
from tests.support.node_boss import NodeBoss

POLL_SECONDS = 30
# Queues with notify and the NOTIFY on insert exist from schema 32 (pg-boss 12.21).
pytestmark = pytest.mark.since(32, "notify queues")


@pytest.fixture
def listening_node(database_url: str) -> Iterator[NodeBoss]:
    with NodeBoss(
        database_url,
        "pgboss",
        package_dir=node_package(),
        supervise=False,
        schedule=False,
        migrate=False,
        useListenNotify=True,
    ) as node:
        yield node


def test_our_insert_wakes_a_listening_node_worker(
    listening_node: NodeBoss, python_actor: PythonActor, db: Database
) -> None:
    python_actor.create_queue("q", notify=True)
    listening_node.work(
        "q",
        {"behavior": "complete"},
        batchSize=5,
        pollingIntervalSeconds=POLL_SECONDS,
        notifyPollingIntervalSeconds=POLL_SECONDS,
    )
    # Let the worker make its first (empty) fetch and settle into its long wait.
    time.sleep(0.7)
    assert listening_node.received("q", clear=False) == []

    sent_at = time.time()
    job_id = python_actor.send("q", {"wake": "up"})
    [job] = listening_node.wait_received("q", 1, timeout=10)
    latency = job["receivedAt"] / 1000 - sent_at
    assert job["id"] == job_id
    print(f"NOTIFY wake latency {latency * 1000:.0f} ms")
    assert latency < 2.0, f"woken after {latency:.2f}s; the poll would have taken {POLL_SECONDS}s"

    # A batch insert wakes it too (one NOTIFY, so one fetch: batchSize covers the batch).
    python_actor.insert("q", [{"data": {"n": n}} for n in range(3)])
    assert len(listening_node.wait_received("q", 4, timeout=5)) == 4


def _notifications(db: Database, boss: PgBoss, act: object) -> list[str]:
    """Payloads of the NOTIFYs on pg-boss's channel for this schema while ``act()`` runs."""
    session = db.listen(boss.notify_channel)
    try:
        act()  # type: ignore[operator]
        return session.notifications(0)  # takes in what has arrived, without waiting
    finally:
        session.close()


def test_channel_is_pg_boss_own(boss: PgBoss, db: Database) -> None:
    expected = db.run("SELECT 'pgboss_' || left(encode(sha224(convert_to('pgboss', 'UTF8')), 'hex'), 24) AS channel")[
        0
    ]["channel"]
    assert boss.notify_channel == expected == "pgboss_454650302e472074f72063fd"


def test_notify_rules_are_the_same_for_both_clients(
    actor: Actor, observer: Actor, boss: PgBoss, node_boss: NodeBoss, database_url: str
) -> None:
    observer.create_queue("loud", notify=True)
    observer.create_queue("quiet")
    listener = Database(database_url)
    try:
        due = _notifications(listener, boss, lambda: actor.send("loud", {"n": 1}))
        batch = _notifications(listener, boss, lambda: actor.insert("loud", [{"data": {"n": n}} for n in range(5)]))
        later = _notifications(listener, boss, lambda: actor.send("loud", {"n": 2}, startAfter=60))
        silent = _notifications(listener, boss, lambda: actor.send("quiet", {"n": 3}))
        deduped = _notifications(
            listener,
            boss,
            lambda: [actor.send("loud", {"n": 4}, singletonSeconds=600, singletonKey="k") for _ in range(2)],
        )
    finally:
        listener.close()
    assert due == ["loud"]
    assert batch == ["loud"]  # once per statement, not per job
    assert later == []  # only jobs that are due now wake workers
    assert silent == []  # only notify-enabled queues
    assert deduped == ["loud"]  # the suppressed duplicate sends nothing
