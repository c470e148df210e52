"""Queues: created through pg-boss's own function under its lock, read back, counted."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable

import pytest

from shared.db import Database
from shared.pgboss.client import PgBoss
from shared.pgboss.errors import InvalidQueue, QueueNotFound, SchemaMissing, UnsupportedSchemaVersion
from shared.pgboss.models import QueueCounts, QueueOptions, QueuePolicy, SendOptions
from tests.conftest import SCHEMA
from tests.pgboss.conftest import hold_pg_boss_lock
from tests.support.node_boss import NodeBoss

CONFIG_COLUMNS = (
    "policy, retry_limit, retry_delay, retry_backoff, retry_delay_max, expire_seconds, "
    "retention_seconds, deletion_seconds, warning_queued, dead_letter, partition, table_name, "
    "heartbeat_seconds, notify"
)


def queue_config(db: Database, name: str) -> dict:
    return db.run(f"SELECT {CONFIG_COLUMNS} FROM {SCHEMA}.queue WHERE name = :n", {"n": name})[0]


def test_a_new_queue_gets_pg_boss_defaults(boss: PgBoss) -> None:
    queue = boss.create_queue("plain")
    assert queue.policy is QueuePolicy.STANDARD
    assert (queue.retry_limit, queue.retry_delay, queue.retry_backoff, queue.retry_delay_max) == (
        2,
        0,
        False,
        None,
    )
    assert (queue.expire_seconds, queue.retention_seconds, queue.deletion_seconds) == (900, 1209600, 604800)
    assert (queue.dead_letter, queue.heartbeat_seconds, queue.notify, queue.partition) == (
        None,
        None,
        False,
        False,
    )
    assert queue.table_name == "job_common"
    assert boss.get_queue("plain") == queue


def test_queue_rows_equal_those_node_creates(boss: PgBoss, db: Database, node_boss: NodeBoss) -> None:
    options = {
        "policy": "stately",
        "retryLimit": 5,
        "retryDelay": 3,
        "retryBackoff": True,
        "retryDelayMax": 40,
        "expireInSeconds": 120,
        "retentionSeconds": 7200,
        "deleteAfterSeconds": 60,
        "warningQueueSize": 50,
        "heartbeatSeconds": 30,
        "notify": True,
    }
    boss.create_queue("dlq")
    boss.create_queue("py", QueueOptions.model_validate({**options, "deadLetter": "dlq"}))
    node_boss.call("createQueue", "node", {**options, "deadLetter": "dlq"})
    assert queue_config(db, "py") == queue_config(db, "node")
    boss.create_queue("py_default")
    node_boss.call("createQueue", "node_default")
    assert queue_config(db, "py_default") == queue_config(db, "node_default")


def test_a_partitioned_queue_gets_its_own_table(boss: PgBoss, db: Database, node_boss: NodeBoss) -> None:
    queue = boss.create_queue("part", QueueOptions(partition=True, policy="short"))
    assert queue.partition is True
    assert queue.table_name == "j" + hashlib.sha224(b"part").hexdigest()
    node_boss.call("createQueue", "node_part", {"partition": True, "policy": "short"})
    assert {k: v for k, v in queue_config(db, "part").items() if k != "table_name"} == {
        k: v for k, v in queue_config(db, "node_part").items() if k != "table_name"
    }
    job_id = boss.send("part", {"n": 1})
    assert job_id is not None
    rows = db.run(f'SELECT id::text AS id FROM {SCHEMA}."{queue.table_name}"')
    assert rows == [{"id": job_id}]


def test_creating_an_existing_queue_changes_nothing(boss: PgBoss, db: Database) -> None:
    first = boss.create_queue("same", QueueOptions(retryLimit=7))
    again = boss.create_queue("same", QueueOptions(retryLimit=1, policy="short"))
    assert again == first
    assert queue_config(db, "same")["retry_limit"] == 7


def test_a_missing_dead_letter_queue_is_refused(boss: PgBoss, db: Database) -> None:
    with pytest.raises(QueueNotFound) as caught:
        boss.create_queue("orphan", QueueOptions(deadLetter="nowhere"))
    assert caught.value.queue == "nowhere"
    assert boss.get_queue("orphan") is None


@pytest.mark.parametrize(
    ("name", "options", "field"),
    [("bad name", None, "name"), ("", None, "name"), ("self", QueueOptions(deadLetter="self"), "deadLetter")],
)
def test_invalid_queues_are_refused(boss: PgBoss, name: str, options: QueueOptions | None, field: str) -> None:
    with pytest.raises(InvalidQueue) as caught:
        boss.create_queue(name, options)
    assert (caught.value.queue, caught.value.option) == (name, field)


def test_create_queue_waits_for_pg_boss_create_queue_lock(boss: PgBoss, other_db: Database) -> None:
    # The key is derived here independently from the documented formula, so a client
    # that hashed something else would not wait.
    done = threading.Event()
    with other_db.transaction() as tx:
        hold_pg_boss_lock(tx, "create-queue")
        worker = threading.Thread(target=lambda: (boss.create_queue("locked"), done.set()))
        worker.start()
        time.sleep(0.5)
        assert not done.is_set()
    worker.join(10)
    assert done.is_set()


def test_get_queue_is_cached_until_it_expires(db: Database, other_db: Database) -> None:
    boss = PgBoss(db, SCHEMA, queue_cache_seconds=60)
    assert boss.get_queue("later") is None
    other = PgBoss(other_db, SCHEMA)
    other.create_queue("later", QueueOptions(retryLimit=1))
    assert boss.get_queue("later").retry_limit == 1  # a miss is never cached
    db.run(f"UPDATE {SCHEMA}.queue SET retry_limit = 9 WHERE name = 'later'")
    assert boss.get_queue("later").retry_limit == 1
    fresh = PgBoss(db, SCHEMA, queue_cache_seconds=0)
    assert fresh.get_queue("later").retry_limit == 9


def test_get_queues_counts_jobs_live(boss: PgBoss, db: Database, queue: Callable[..., str]) -> None:
    queue("counted")
    queue("empty")
    for n in range(4):
        boss.send("counted", {"n": n})
    boss.send("counted", None, SendOptions(startAfter=3600))
    (fetched,) = boss.fetch("counted")
    boss.complete("counted", [(fetched, None)])
    boss.fetch("counted")
    blocked = boss.send("counted", {"blocked": True}, SendOptions(startAfter=3600))
    db.run(f"UPDATE {SCHEMA}.job SET blocked = true WHERE id = CAST(:id AS uuid)", {"id": blocked})
    queues = {queue.name: queue for queue in boss.get_queues()}
    assert queues["counted"].counts == QueueCounts(queued=4, active=1, deferred=1, total=6)
    assert queues["empty"].counts == QueueCounts(queued=0, active=0, deferred=0, total=0)


def test_a_missing_schema_is_reported_as_such(empty_database_url: str) -> None:
    database = Database(empty_database_url)
    try:
        boss = PgBoss(database, SCHEMA)
        for verb in (
            lambda: boss.send("q", 1),
            lambda: boss.get_queue("q"),
            lambda: boss.get_queues(),
            lambda: boss.create_queue("q"),
        ):
            with pytest.raises(SchemaMissing):
                verb()
    finally:
        database.close()


def test_a_schema_upgraded_under_the_client_is_detected_again(boss: PgBoss, db: Database) -> None:
    boss.create_queue("old")
    db.run(f"ALTER TABLE {SCHEMA}.job RENAME COLUMN upsert_by_key TO upsert_key")
    db.run(f"UPDATE {SCHEMA}.version SET version = 47")
    boss.send("old", 1)  # inserting does not touch the renamed column
    (job,) = boss.fetch("old")
    boss.cancel("old", [job.id])
    with pytest.raises(UnsupportedSchemaVersion, match=r"version 47 .* supported range is 21\.\.46"):
        boss.resume("old", [job.id])


def test_a_newer_schema_is_refused_before_any_write(boss: PgBoss, db: Database) -> None:
    db.run(f"UPDATE {SCHEMA}.version SET version = 47")
    with pytest.raises(UnsupportedSchemaVersion):
        boss.send("q", 1)
    assert db.run(f"SELECT count(*) AS n FROM {SCHEMA}.job")[0]["n"] == 0
