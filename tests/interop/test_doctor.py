"""pg-boss's own schema check still passes after our client has used every verb.

``pgboss doctor`` compares the schema (tables, columns, indexes, functions) with what pg-boss
12.38 expects and exits non-zero on drift. Our client issues no DDL of its own, but creating
queues (including dedicated partitions) goes through pg-boss's SQL function, and every verb
writes rows; this proves none of it leaves the schema in a shape pg-boss would not have.
A second test shows the check does catch drift, so the pass above means something.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from shared.db import Database
from shared.pgboss.client import PgBoss
from shared.pgboss.models import JobRequest, QueueOptions, SendOptions
from tests.conftest import RELEASE
from tests.interop.rows import age
from tests.support import releases
from tests.support.node_boss import PGBOSS_CLI, PGBOSS_DIR

# pg-boss doctor exists from 12.26.0 (schema 37).
pytestmark = pytest.mark.since(37, "pg-boss doctor")


def doctor(database_url: str) -> subprocess.CompletedProcess[str]:
    """The doctor of the release under test (the pinned one unless TEST_PGBOSS_RELEASE)."""
    if RELEASE is not None:
        return releases.doctor(database_url, "pgboss", RELEASE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGBOSS_")}
    return subprocess.run(
        [str(PGBOSS_CLI), "doctor", "--connection-string", database_url, "--schema", "pgboss"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PGBOSS_DIR,
        env=env,
        check=False,
    )


def _use_every_verb(boss: PgBoss, db: Database) -> None:
    boss.create_queue("dlq")
    boss.create_queue("q", QueueOptions(dead_letter="dlq", retry_limit=0, expire_in_seconds=5, heartbeat_seconds=10))
    for policy in ("standard", "short", "singleton", "stately", "exclusive", "key_strict_fifo"):
        boss.create_queue(f"own-{policy}", QueueOptions(policy=policy, partition=True, notify=True))
        boss.send(f"own-{policy}", {"p": policy}, SendOptions(singleton_key="k"))
        [job] = boss.fetch(f"own-{policy}")
        boss.fail(f"own-{policy}", [(job, ValueError("boom"))])
    boss.insert([JobRequest("q", {"n": n}, SendOptions(priority=n % 3)) for n in range(12)])
    boss.send(
        "q",
        {"all": True},
        SendOptions(
            priority=2,
            start_after=0,
            retry_limit=0,
            retry_delay=1,
            retry_backoff=True,
            retry_delay_max=3,
            expire_in_seconds=60,
            retention_seconds=600,
            delete_after_seconds=60,
            singleton_key="s",
            singleton_seconds=60,
            group={"id": "g", "tier": "t"},
            dead_letter="dlq",
            heartbeat_seconds=20,
        ),
    )
    boss.send("q", {"debounced": True}, SendOptions(singleton_seconds=60, singleton_next_slot=True))
    jobs = boss.fetch("q", 14, group_concurrency={"default": 2, "tiers": {"t": 1}})
    assert len(jobs) >= 13
    boss.complete("q", [(job, {"ok": True}) for job in jobs[:3]])
    boss.fail("q", [(job, "nope") for job in jobs[3:6]])
    age(db, "q", "heartbeat_on", 11, [job.id for job in jobs[6:10]])
    boss.touch("q", jobs[6:8])
    age(db, "q", "started_on", 6, [job.id for job in jobs[10:11]])
    boss.fail_expired("q")
    boss.cancel("q", [job.id for job in jobs[11:]])
    boss.resume("q", [job.id for job in jobs[11:]])
    failed = [row["id"] for row in db.run("SELECT id::text FROM pgboss.job WHERE name = 'q' AND state = 'failed'")]
    boss.retry("q", failed[:1])
    boss.delete_jobs("q", failed[1:2])
    dead = boss.fetch("dlq", 100)
    boss.complete("dlq", [(job, None) for job in dead])


def test_no_drift_after_our_client_used_every_verb(database_url: str, boss: PgBoss, db: Database) -> None:
    _use_every_verb(boss, db)
    states = {row["state"] for row in db.run("SELECT DISTINCT state::text FROM pgboss.job")}
    assert {"completed", "failed", "retry", "created", "active"} <= states
    result = doctor(database_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No drift" in result.stdout


def test_doctor_does_see_drift(database_url: str, db: Database) -> None:
    db.run("DROP INDEX pgboss.job_common_i1")
    result = doctor(database_url)
    assert result.returncode == 1
    assert "job_common_i1" in result.stdout
