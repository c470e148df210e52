"""The smoke scenario against every installable pg-boss release from 10.0.0 to 12.38.0.

Per release, in a database of its own: the release installs its schema (its own CLI
from 12.8.0, before that its ``start()`` with ``migrate: true``), then our client and
that release's Node pg-boss share the queues: each sends a job the other fetches and
completes, our client fails a job into retry and then into its dead letter queue,
which Node works; Node fails a job that our client then retries and completes; an
expired job goes back to retry; cancel, resume, delete and manual retry; a queue with
its own partition and a policy takes a batch insert, touch, fail and complete; an
option the schema lacks is refused with nothing written; every job reads through ``jobs``
as that release's ``getJobById`` returns it. Where the release has ``pg-boss doctor`` it must
find no drift afterwards. A release whose schema this package does not support would
have to be refused with the supported range named.

Releases run a few at a time on a thread pool (each mostly waits on Node and
PostgreSQL); every release is its own test, which waits for its run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from shared.db import Database
from shared.job_status import JobStatus
from shared.pgboss.capabilities import NEWEST_SCHEMA, OLDEST_SCHEMA, SUPPORTED_SCHEMA_VERSIONS
from shared.pgboss.client import PgBoss
from shared.pgboss.errors import OptionNotSupported, UnsupportedSchemaVersion
from shared.pgboss.models import JobRequest, JobState, QueueOptions, SendOptions
from tests.conftest import ADMIN_URL, RUN, url_for
from tests.support import releases
from tests.support.job_fields import differences
from tests.support.node_boss import NodeBoss
from tests.versions.conftest import TIMINGS

SCHEMA = "pgboss"
WORKERS = 3

releases.install()
RELEASES = releases.releases()


def _database(admin: Database, version: str) -> str:
    name = f"{RUN}_r{version.replace('.', '_')}"
    admin.run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.run(f'CREATE DATABASE "{name}"')
    return name


def smoke(version: str) -> dict[str, Any]:
    """Run the scenario on a fresh database; what it saw, for the test to report."""
    started = time.monotonic()
    admin = Database(ADMIN_URL)
    name = _database(admin, version)
    url = url_for(name)
    db = Database(url)
    try:
        releases.install_schema(url, SCHEMA, version)
        expected = releases.schema_of(version)
        boss = PgBoss(db, SCHEMA)
        assert boss.schema_version() == expected
        if expected not in SUPPORTED_SCHEMA_VERSIONS:
            with pytest.raises(
                UnsupportedSchemaVersion, match=rf"supported range is {OLDEST_SCHEMA}\.\.{NEWEST_SCHEMA}"
            ):
                boss.send("q", 1)
            return {"schema": expected, "refused": True, "seconds": time.monotonic() - started}
        with NodeBoss(
            url, SCHEMA, package_dir=releases.package_dir(version), supervise=False, schedule=False, migrate=False
        ) as node:
            _scenario(boss, node, db)
        doctor = None
        if releases.has_doctor(version):
            result = releases.doctor(url, SCHEMA, version)
            assert result.returncode == 0, result.stdout + result.stderr
            doctor = "no drift"
        return {"schema": expected, "refused": False, "doctor": doctor, "seconds": time.monotonic() - started}
    finally:
        db.close()
        admin.run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _state(db: Database, queue: str, job_id: str) -> str:
    rows = db.run(
        f"SELECT state::text AS state FROM {SCHEMA}.job WHERE name = :name AND id = CAST(:id AS uuid)",
        {"name": queue, "id": job_id},
    )
    return str(rows[0]["state"]) if rows else "gone"


def _scenario(boss: PgBoss, node: NodeBoss, db: Database) -> None:
    caps = boss.check_schema()
    boss.create_queue("dead")
    boss.create_queue("py", QueueOptions(retry_limit=1, retry_delay=0, dead_letter="dead"))
    node.call("createQueue", "node", {"retryLimit": 1, "retryDelay": 0})

    # Send both ways, fetch both ways, complete both ways.
    from_python = boss.send("node", {"from": "python"})
    from_node = node.call("send", "py", {"from": "node"})
    [job] = boss.fetch("py")
    assert (job.id, job.data, job.retry_count) == (from_node, {"from": "node"}, 0)
    [node_job] = node.call("fetch", "node")
    assert (node_job["id"], node_job["data"]) == (from_python, {"from": "python"})
    assert boss.complete("py", [(job, {"done": "python"})]) == [from_node]
    node.call("complete", "node", from_python, {"done": "node"})
    seen_by_node = node.call("getJobById", "py", from_node)
    assert (seen_by_node["state"], seen_by_node["output"]) == ("completed", {"done": "python"})
    ours = boss.get_job("node", from_python, include_metadata=True)
    assert ours is not None and (ours.state, ours.output) == (JobState.COMPLETED, {"done": "node"})

    # Our client fails into retry, then into the dead letter queue, which Node works.
    failing = boss.send("py", {"n": "fail"})
    [first] = boss.fetch("py")
    assert boss.fail("py", [(first, RuntimeError("boom"))]).retried == (failing,)
    [second] = boss.fetch("py")
    assert (second.id, second.retry_count) == (failing, 1)
    outcome = boss.fail("py", [(second, RuntimeError("boom again"))])
    assert outcome.failed == (failing,) and len(outcome.dead_lettered) == 1
    [dead] = node.call("fetch", "dead")
    assert (dead["id"], dead["data"]) == (outcome.dead_lettered[0], {"n": "fail"})
    node.call("complete", "dead", dead["id"])
    assert _state(db, "dead", dead["id"]) == "completed"

    # Node fails our job into retry; our client fetches the retry and completes it.
    retried = boss.send("node", {"n": "node fails"})
    [node_job] = node.call("fetch", "node")
    node.call("fail", "node", retried, {"message": "node failed it"})
    assert _state(db, "node", retried) == "retry"
    [again] = boss.fetch("node")
    assert (again.id, again.retry_count) == (retried, 1)
    assert boss.complete("node", [(again, None)]) == [retried]

    # Expiry: an attempt past its expireInSeconds goes back to retry.
    expiring = boss.send("py", {"n": "expire"}, SendOptions(expire_in_seconds=1))
    [claimed] = boss.fetch("py")
    db.run(
        f"UPDATE {SCHEMA}.job SET started_on = started_on - interval '1 hour' WHERE id = CAST(:id AS uuid)",
        {"id": expiring},
    )
    assert boss.fail_expired("py").retried == (expiring,)
    assert boss.complete("py", [(claimed, None)]) == []  # the expired attempt is fenced off
    [node_retry] = node.call("fetch", "py")
    assert (node_retry["id"], _state(db, "py", expiring)) == (expiring, "active")

    # Cancel, resume, delete.
    managed = boss.send("py", {"n": "manage"}, SendOptions(start_after=3600))
    assert boss.cancel("py", [managed]) == 1
    assert boss.resume("py", [managed]) == 1
    assert _state(db, "py", managed) == "created"
    assert boss.delete_jobs("py", [managed]) == 1
    assert _state(db, "py", managed) == "gone"

    # The remaining verbs, so doctor below has seen every one: a queue with its own
    # partition and a policy, a batch insert, touch, manual retry, the queue listing.
    own = boss.create_queue("own", QueueOptions(partition=True, policy="singleton"))
    assert own.table_name != "job_common"
    ids = boss.insert([JobRequest("own", {"n": n}, SendOptions(singleton_key=f"k{n}")) for n in range(3)])
    assert all(ids)
    held = boss.fetch("own", 3)
    assert sorted(job.id for job in held) == sorted(ids) and boss.touch("own", held) == 3
    assert boss.fail("own", [(held[0], "no")]).retried == (held[0].id,)
    assert sorted(boss.complete("own", [(job, None) for job in held[1:]])) == sorted(job.id for job in held[1:])
    assert boss.retry("py", [failing]) == 1 and _state(db, "py", failing) == "retry"
    counts = {queue.name: queue.counts for queue in boss.get_queues()}
    assert counts["own"] is not None and counts["own"].total == 3

    # jobs answers each job as this release's getJobById returns it, and lists every
    # queue in the order of the table.
    for queue in ("py", "node", "dead", "own"):
        listed = boss.find_jobs(queue, limit=1000)
        in_table = db.run(
            f"SELECT id::text AS id FROM {SCHEMA}.job WHERE name = :name ORDER BY created_on, id", {"name": queue}
        )
        assert [job.id for job in listed] == [row["id"] for row in in_table] != []
        for job in listed:
            assert differences(JobStatus.of(job).wire(), node.call("getJobById", queue, job.id)) == []

    # An option the schema lacks is refused by name, and nothing is written.
    if not caps.groups:
        before = db.run(f"SELECT count(*) AS n FROM {SCHEMA}.job")[0]["n"]
        with pytest.raises(OptionNotSupported, match=f"'group' .* schema version {caps.schema_version}"):
            boss.send("py", 1, SendOptions(group={"id": "g"}))
        assert db.run(f"SELECT count(*) AS n FROM {SCHEMA}.job")[0]["n"] == before


@pytest.fixture(scope="module")
def runs(request: pytest.FixtureRequest) -> Iterator[dict[str, Future[dict[str, Any]]]]:
    """Start the selected releases' runs on a pool; each test waits for its own."""
    wanted = [
        item.callspec.params["release"]
        for item in request.session.items
        if item.module is request.module and hasattr(item, "callspec")
    ]
    started = time.monotonic()
    pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="smoke")
    futures = {version: pool.submit(smoke, version) for version in wanted}
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)
    seconds = {
        version: future.result()["seconds"]
        for version, future in futures.items()
        if future.done() and not future.cancelled() and future.exception() is None
    }
    TIMINGS[f"pg-boss smoke matrix ({WORKERS} at a time)"] = (time.monotonic() - started, seconds)


@pytest.mark.parametrize("release", RELEASES)
def test_smoke(release: str, runs: dict[str, Future[dict[str, Any]]]) -> None:
    seen = runs[release].result(timeout=600)
    print(f"pg-boss {release}: schema {seen['schema']}, {seen['seconds']:.1f} s, {seen}")
    assert seen["schema"] == releases.schema_of(release)
