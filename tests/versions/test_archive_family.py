"""pg-boss 10.x (schemas 21-24) and our client write the same rows, column by column.

10.x has its own table shapes (``expire_in`` intervals, ``retention_minutes``, one
partition per queue, an ``archive`` table), so the smoke scenario's round trips are
not enough: here each client runs one scenario in its own queue namespace of the same
database, and the two runs' rows must agree (``tests.interop.rows`` normalizes ids and
times). The scenario creates queues with 10.x's options, sends with every send option
10.x has, fails a job into retry and then into its dead letter queue, and expires a
claim. Then a job 10.x's supervisor archived is still found, listed (as ``jobs`` reads
it) and deleted by our client.
Run for the family's oldest release (schema 21, fail by UPDATE in Node) and its newest
(24).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pg8000.native
import pytest

from shared.db import Database
from shared.job_status import JobStatus
from shared.pgboss.client import PgBoss
from shared.pgboss.errors import OptionNotSupported, QueueNotFound
from shared.pgboss.models import JobState, Queue, QueueOptions, SendOptions
from tests.conftest import SCHEMA, create_database, url_for
from tests.interop.rows import age, database_clock, differences, normalize, raw_rows, start_after_epoch
from tests.support import releases
from tests.support.job_fields import differences as job_differences
from tests.support.node_boss import NodeBoss

ERROR = {"message": "boom"}
# How far apart two reads of the database clock around one statement may put its now().
CLOCK_SLACK = 0.001
# Every send option 10.x takes (keepUntil is retentionSeconds, as 10.x's attorney maps it).
SEND_OPTIONS = {
    "priority": 3,
    "startAfter": 60,
    "singletonKey": "k",
    "singletonSeconds": 60,
    "retryLimit": 3,
    "retryDelay": 5,
    "retryBackoff": True,
    "expireInSeconds": 45,
    "retentionSeconds": 3600,
    "deadLetter": "dead",
}
QUEUE_OPTIONS = {"retryLimit": 1, "retryDelay": 2, "expireInSeconds": 30, "deadLetter": "dead"}


@dataclass
class Family:
    release: str
    url: str
    db: Database

    def node(self) -> NodeBoss:
        return NodeBoss(
            self.url,
            SCHEMA,
            package_dir=releases.package_dir(self.release),
            supervise=False,
            schedule=False,
            migrate=False,
        )


@pytest.fixture(params=["10.0.0", "10.4.2"])
def family(request: pytest.FixtureRequest, admin: pg8000.native.Connection) -> Iterator[Family]:
    releases.install()
    name = create_database(admin)
    url = url_for(name)
    releases.install_schema(url, SCHEMA, request.param)
    db = Database(url)
    yield Family(request.param, url, db)
    db.close()
    admin.run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _python(boss: PgBoss, db: Database, p: str) -> None:
    boss.create_queue(p + "dead")
    boss.create_queue(p + "f", QueueOptions.model_validate({**QUEUE_OPTIONS, "deadLetter": p + "dead"}))
    boss.create_queue(p + "q")
    boss.create_queue(p + "kept", QueueOptions(retention_seconds=7200, policy="short"))
    boss.send(p + "q", {"tag": "plain"})
    boss.send(p + "kept", {"tag": "kept"})
    boss.send(p + "q", {"tag": "options"}, SendOptions.model_validate({**SEND_OPTIONS, "deadLetter": p + "dead"}))
    failing = boss.send(p + "f", {"tag": "fails"})
    [claim] = boss.fetch(p + "f")
    assert boss.fail(p + "f", [(claim, ERROR)]).retried == (failing,)
    age(db, p + "f", "start_after", 10, [failing])
    [claim] = boss.fetch(p + "f")
    assert len(boss.fail(p + "f", [(claim, ERROR)]).dead_lettered) == 1
    assert boss.send(p + "kept", {"tag": "second"}) is None  # short: one queued job
    expiring = boss.send(p + "q", {"tag": "expires"})
    assert expiring in [job.id for job in boss.fetch(p + "q", 2)]
    age(db, p + "q", "started_on", 3600, [expiring])
    assert boss.fail_expired(p + "q").retried == (expiring,)


def _node(node: NodeBoss, db: Database, p: str) -> None:
    node.call("createQueue", p + "dead")
    node.call("createQueue", p + "f", {**QUEUE_OPTIONS, "deadLetter": p + "dead"})
    node.call("createQueue", p + "q")
    node.call("createQueue", p + "kept", {"retentionMinutes": 120, "policy": "short"})
    node.call("send", p + "q", {"tag": "plain"})
    node.call("send", p + "kept", {"tag": "kept"})
    node.call("send", p + "q", {"tag": "options"}, {**SEND_OPTIONS, "deadLetter": p + "dead"})
    failing = node.call("send", p + "f", {"tag": "fails"})
    [claim] = node.call("fetch", p + "f")
    node.call("fail", p + "f", claim["id"], ERROR)
    age(db, p + "f", "start_after", 10, [failing])
    [claim] = node.call("fetch", p + "f")
    node.call("fail", p + "f", claim["id"], ERROR)
    assert node.call("send", p + "kept", {"tag": "second"}) is None
    expiring = node.call("send", p + "q", {"tag": "expires"})
    assert expiring in [job["id"] for job in node.call("fetch", p + "q", {"batchSize": 2})]
    age(db, p + "q", "started_on", 3600, [expiring])
    node.call("expire")


def _queues(db: Database, prefix: str) -> list[dict[str, Any]]:
    rows = db.run(
        f"SELECT * FROM {SCHEMA}.queue WHERE left(name, length(:p)) = :p ORDER BY name",
        {"p": prefix},
    )
    ignored = ("created_on", "updated_on", "partition_name")
    return [
        {
            column: (value[len(prefix) :] if isinstance(value, str) and value.startswith(prefix) else value)
            for column, value in row.items()
            if column not in ignored
        }
        for row in rows
    ]


def test_rows_match_the_release(family: Family) -> None:
    db = family.db
    boss = PgBoss(db, SCHEMA)
    assert boss.check_schema().archive
    with family.node() as node:
        _python(boss, db, "py_")
        _node(node, db, "js_")
    assert _queues(db, "py_") == _queues(db, "js_")
    ours, theirs = normalize(raw_rows(db, "py_"), "py_"), normalize(raw_rows(db, "js_"), "js_")
    # The tagged jobs' rows, and the dead letter copy (untagged data is the failed job's).
    assert len(ours) == 6
    problems = differences(ours, theirs)
    assert not problems, f"our rows differ from pg-boss {family.release}'s:\n" + "\n".join(problems)


def test_archived_jobs_are_found_and_deleted(family: Family) -> None:
    db = family.db
    boss = PgBoss(db, SCHEMA)
    with family.node() as node:
        boss.create_queue("q")
        done = boss.send("q", {"n": 1})
        [job] = boss.fetch("q")
        boss.complete("q", [(job, {"ok": True})])
        age(db, "q", "completed_on", 13 * 3600, [done])
        node.call("archive")  # 10.x's supervisor: completed more than 12 hours ago
        assert db.run(f"SELECT count(*) AS n FROM {SCHEMA}.job WHERE name = 'q'")[0]["n"] == 0
        archived = boss.get_job("q", done, include_metadata=True)
        assert archived is not None and (archived.state, archived.output) == (JobState.COMPLETED, {"ok": True})
        from_node = node.call("getJobById", "q", done, {"includeArchive": True})
        assert from_node["output"] == {"ok": True}
        # jobs lists and reads it from the archive as 10.x's getJobById does.
        [listed] = boss.find_jobs("q")
        assert listed.id == done and job_differences(JobStatus.of(listed).wire(), from_node) == []
        assert [job.id for job in boss.find_jobs("q", ids=[done], data={"n": 1})] == [done]
        assert boss.delete_jobs("q", [done]) == 1
        assert boss.get_job("q", done) is None and boss.find_jobs("q") == []
        # A job retried long after it failed stays in the queue through 10.x's archive pass.
        boss.create_queue("once", QueueOptions(retry_limit=0))
        failed = boss.send("once", {"n": 2})
        [job] = boss.fetch("once")
        assert boss.fail("once", [(job, "no")]).failed == (failed,)
        age(db, "once", "completed_on", 13 * 3600, [failed])
        assert boss.retry("once", [failed]) == 1
        node.call("archive")
        [again] = boss.fetch("once")
        assert (again.id, again.retry_count) == (failed, 1)


def test_options_10x_lacks_and_missing_queues_are_refused(family: Family) -> None:
    db = family.db
    boss = PgBoss(db, SCHEMA)
    for options in (
        QueueOptions(retention_seconds=90),
        QueueOptions(partition=False),
        QueueOptions(retry_delay_max=1, retry_backoff=True),
    ):
        with pytest.raises(OptionNotSupported, match=r"schema version 2[1-4]"):
            boss.create_queue("refused", options)
    assert boss.get_queue("refused") is None
    boss.create_queue("q")
    for send in (
        SendOptions(delete_after_seconds=60),
        SendOptions(heartbeat_seconds=30),
        SendOptions(group={"id": "g"}),
    ):
        with pytest.raises(OptionNotSupported):
            boss.send("q", 1, send)
    # 10.x has no partition for a queue that does not exist, and checks dead letters at commit.
    with pytest.raises(QueueNotFound, match="'missing'"):
        boss.send("missing", 1)
    with pytest.raises(QueueNotFound, match="'nowhere'"):
        boss.send("q", 1, SendOptions(dead_letter="nowhere"))
    with pytest.raises(QueueNotFound, match="'nowhere'"):
        boss.create_queue("r", QueueOptions(dead_letter="nowhere"))
    assert db.run(f"SELECT count(*) AS n FROM {SCHEMA}.job")[0]["n"] == 0


def test_a_queue_node_creates_meanwhile_is_returned(family: Family) -> None:
    """10.x's Node createQueue takes no lock and, before 24, its create_queue raises for
    an existing queue: our create_queue waiting on Node's uncommitted queue row returns
    that queue once Node commits."""
    boss = PgBoss(family.db, SCHEMA)
    node_side, watcher = Database(family.url), Database(family.url)
    created: list[Queue] = []
    try:
        with node_side.transaction() as tx:
            tx.run(f"SELECT {SCHEMA}.create_queue('raced', CAST(:options AS json))", {"options": '{"retryLimit": 7}'})
            ours = threading.Thread(target=lambda: created.append(boss.create_queue("raced")))
            ours.start()
            deadline = time.monotonic() + 30
            while not _waiting_on_a_lock(watcher) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _waiting_on_a_lock(watcher)
        ours.join(30)
    finally:
        node_side.close()
        watcher.close()
    [queue] = created
    assert (queue.name, queue.retry_limit) == ("raced", 7)


def _waiting_on_a_lock(db: Database) -> bool:
    rows = db.run(
        "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    return bool(rows[0]["n"])


def test_backoff_doubles_as_in_10x(family: Family) -> None:
    """10.x backs off by retry_delay * 2^(k-1) * (1 + random()), k = retry_count + 1,
    with no cap (retryDelayMax came with 11.0): each client's retries wait within the
    same bounds."""
    db = family.db
    boss = PgBoss(db, SCHEMA)
    with family.node() as node:
        for client in ("python", "node"):
            queue = f"backoff_{client}"
            boss.create_queue(queue)
            job_id = boss.send(queue, None, SendOptions(retry_limit=3, retry_delay=2, retry_backoff=True))
            for attempt, (low, high) in enumerate([(2, 4), (4, 8), (8, 16)]):
                if client == "python":
                    [job] = boss.fetch(queue)
                    assert job.retry_count == attempt
                    before = database_clock(db)
                    assert boss.fail(queue, [(job, ERROR)]).retried == (job_id,)
                else:
                    [job] = node.call("fetch", queue)
                    before = database_clock(db)
                    node.call("fail", queue, job["id"], ERROR)
                after = database_clock(db)
                due = start_after_epoch(db, queue, job_id)
                # The delay lies between due - after and due - before.
                assert due - before >= low - CLOCK_SLACK and due - after <= high + CLOCK_SLACK, (client, attempt)
                age(db, queue, "start_after", due - after + 1, [job_id])
