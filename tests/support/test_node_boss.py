"""The NodeBoss harness itself, against real pg-boss and a scratch database of its own."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator

import pg8000.native
import pytest

from shared.db import Database
from tests.conftest import admin_connection, url_for

from .node_boss import NodeBoss, NodeBossError, PgBossMigrateError, migrate

QUIET = {"supervise": False, "schedule": False, "migrate": False}


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    name = f"node_boss_test_{os.getpid()}_{secrets.token_hex(3)}"
    admin = admin_connection()
    try:
        admin.run(f'CREATE DATABASE "{name}"')
        yield name
    finally:
        admin.run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="module")
def url(database: str) -> str:
    return url_for(database)


@pytest.fixture(scope="module")
def sql(database: str) -> Iterator[pg8000.native.Connection]:
    conn = Database(url_for(database))._connect()
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def migrated(url: str) -> str:
    migrate(url)
    return url


@pytest.fixture
def boss(migrated: str) -> Iterator[NodeBoss]:
    with NodeBoss(migrated, **QUIET) as b:
        yield b


def _queue() -> str:
    return f"q_{secrets.token_hex(4)}"


def test_migrate_installs_version_46_idempotently(migrated: str, sql: pg8000.native.Connection) -> None:
    assert sql.run("SELECT version FROM pgboss.version") == [[46]]
    migrate(migrated)  # second run is a no-op
    assert sql.run("SELECT version FROM pgboss.version") == [[46]]


def test_migrate_custom_schema(migrated: str, sql: pg8000.native.Connection) -> None:
    migrate(migrated, schema="other_boss")
    assert sql.run("SELECT version FROM other_boss.version") == [[46]]
    with NodeBoss(migrated, schema="other_boss", **QUIET) as b:
        b.call("createQueue", "elsewhere")
    assert sql.run("SELECT name FROM other_boss.queue") == [["elsewhere"]]
    assert sql.run("SELECT count(*) FROM pgboss.queue WHERE name = 'elsewhere'") == [[0]]


def test_migrate_failure_carries_cli_error() -> None:
    with pytest.raises(PgBossMigrateError, match="does not exist"):
        migrate(url_for(f"node_boss_no_such_db_{secrets.token_hex(3)}"))


def test_send_and_get_job_by_id_roundtrip(boss: NodeBoss) -> None:
    queue = _queue()
    assert boss.call("createQueue", queue, {"retryLimit": 3}) is None
    job_id = boss.call("send", queue, {"hello": "world", "n": 1}, {"priority": 5})
    assert isinstance(job_id, str) and len(job_id) == 36

    job = boss.call("getJobById", queue, job_id)
    assert job["id"] == job_id
    assert job["name"] == queue
    assert job["data"] == {"hello": "world", "n": 1}
    assert job["state"] == "created"
    assert job["priority"] == 5
    assert job["retryLimit"] == 3
    assert job["retryCount"] == 0
    assert isinstance(job["createdOn"], str) and job["createdOn"].endswith("Z")
    assert "signal" not in job

    assert boss.call("getJobById", queue, "00000000-0000-0000-0000-000000000000") is None


def test_date_arguments_and_fetch(boss: NodeBoss) -> None:
    queue = _queue()
    boss.call("createQueue", queue)
    job_id = boss.call("send", queue, {"x": 1}, {"startAfter": {"$date": "2100-01-01T00:00:00Z"}})
    assert boss.call("fetch", queue) == []
    job = boss.call("getJobById", queue, job_id)
    assert job["startAfter"] == "2100-01-01T00:00:00.000Z"


def test_work_receives_and_completes(boss: NodeBoss, sql: pg8000.native.Connection) -> None:
    queue = _queue()
    boss.call("createQueue", queue)
    worker = boss.work(queue, {"behavior": "complete", "output": {"done": True}}, pollingIntervalSeconds=0.5)
    assert isinstance(worker, str)
    before = time.time() * 1000
    job_id = boss.call("send", queue, {"k": "v"})

    [job] = boss.wait_received(queue, 1)
    assert job["id"] == job_id
    assert job["name"] == queue
    assert job["data"] == {"k": "v"}
    assert job["retryCount"] == 0
    assert job["workerId"] == worker
    assert job["receivedAt"] >= before - 1000

    boss.off_work(queue)
    assert sql.run("SELECT state::text, output FROM pgboss.job WHERE id = CAST(:id AS uuid)", id=job_id) == [
        ["completed", {"done": True}]
    ]
    assert boss.received(queue) == [job]
    assert boss.received(queue) == []  # cleared


def test_work_fail_records_retry(boss: NodeBoss, sql: pg8000.native.Connection) -> None:
    queue = _queue()
    boss.call("createQueue", queue, {"retryLimit": 1, "retryDelay": 0})
    boss.work(queue, {"behavior": "fail", "error_message": "boom"}, pollingIntervalSeconds=0.5)
    job_id = boss.call("send", queue, {})
    jobs = boss.wait_received(queue, 2)
    boss.off_work(queue)
    assert [j["retryCount"] for j in jobs] == [0, 1]
    assert all(j["outcome"] == "failed" for j in jobs)
    [[state, output]] = sql.run("SELECT state::text, output FROM pgboss.job WHERE id = CAST(:id AS uuid)", id=job_id)
    assert state == "failed"
    assert output["message"] == "boom"


def test_pgboss_errors_become_node_boss_error(boss: NodeBoss) -> None:
    with pytest.raises(NodeBossError) as info:
        boss.call("send", "no_such_queue_" + secrets.token_hex(3), {})
    assert info.value.code == "PGBOSS_QUEUE_NOT_FOUND"
    assert "does not exist" in info.value.message

    with pytest.raises(NodeBossError, match="no method"):
        boss.call("noSuchMethod")
    # the driver survives errors
    assert boss.ping()


def test_start_failure_is_reported(url: str, database: str) -> None:
    with pytest.raises(NodeBossError, match="not installed"):
        NodeBoss(url, schema="never_installed", **QUIET)
