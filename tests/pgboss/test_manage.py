"""cancel, resume, retry, delete_jobs and get_job, as pg-boss 12.38 changes the rows."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest

from shared.db import Database
from shared.pgboss.client import PgBoss
from shared.pgboss.errors import QueueNotFound
from shared.pgboss.models import Job, JobDetails, JobRequest, JobState, SendOptions
from tests.conftest import SCHEMA
from tests.pgboss.conftest import age, job_row


def test_cancel_stops_queued_and_active_jobs(boss: PgBoss, db: Database, queue: Callable[..., str]) -> None:
    queue("stop")
    running, finished, waiting = boss.insert([JobRequest("stop", n, SendOptions(priority=3 - n)) for n in range(3)])
    assert [job.id for job in boss.fetch("stop")] == [running]
    (job,) = boss.fetch("stop")
    boss.complete("stop", [(job, None)])
    assert boss.cancel("stop", [running, finished, waiting, str(uuid.uuid4())]) == 2
    assert boss.cancel("stop", []) == 0
    for job_id, state in ((running, "cancelled"), (finished, "completed"), (waiting, "cancelled")):
        row = job_row(db, "stop", job_id)
        assert row["state"] == state and row["completed_on"] is not None


def test_resume_queues_cancelled_jobs_again(boss: PgBoss, db: Database, queue: Callable[..., str]) -> None:
    queue("pause")
    job_id, later = boss.insert([JobRequest("pause", 1), JobRequest("pause", 2, SendOptions(startAfter=600))])
    (job,) = boss.fetch("pause")
    age(db, "pause", job_id, 30, "start_after")
    sent_for = job_row(db, "pause", job_id)["start_after"]
    planned = job_row(db, "pause", later)["start_after"]
    assert boss.cancel("pause", [job_id, later]) == 2
    assert boss.resume("pause", [job_id, later, str(uuid.uuid4())]) == 2
    row = job_row(db, "pause", job_id)
    assert (row["state"], row["completed_on"], row["upsert_by_key"]) == ("created", None, None)
    assert row["started_on"] == job.started_on and row["retry_count"] == 0
    assert row["start_after"] > sent_for + timedelta(seconds=29)  # moved up to the resume
    assert job_row(db, "pause", later)["start_after"] == planned  # a later start is kept
    assert boss.resume("pause", [job_id]) == 0
    assert boss.fetch("pause")[0].retry_count == 1


def test_resume_and_delete_keep_pg_boss_retained_count(boss: PgBoss, db: Database, queue: Callable[..., str]) -> None:
    queue("kept")
    ids = boss.insert([JobRequest("kept", n) for n in range(3)])
    boss.cancel("kept", ids)
    db.run(f"UPDATE {SCHEMA}.queue SET retained_count = 3, total_count = 3, retained_on = now() WHERE name = 'kept'")
    assert boss.resume("kept", ids[:1]) == 1
    assert boss.delete_jobs("kept", ids[1:]) == 2
    counts = db.run(f"SELECT retained_count, total_count FROM {SCHEMA}.queue WHERE name = 'kept'")[0]
    assert counts == {"retained_count": 0, "total_count": 1}


def test_retry_gives_a_failed_job_one_more_attempt(boss: PgBoss, db: Database, queue: Callable[..., str]) -> None:
    queue("redo", retryLimit=0)
    job_id = boss.send("redo")
    (job,) = boss.fetch("redo")
    boss.fail("redo", [(job, "x")])
    other = boss.send("redo")
    assert boss.retry("redo", [job_id, other]) == 1
    row = job_row(db, "redo", job_id)
    assert (row["state"], row["retry_limit"], row["completed_on"]) == ("retry", 1, None)
    assert row["start_after"] >= row["created_on"]
    again = next(job for job in boss.fetch("redo", 5) if job.id == job_id)
    assert again.retry_count == 1


def test_delete_removes_jobs_in_any_state(boss: PgBoss, db: Database, queue: Callable[..., str]) -> None:
    queue("gone")
    ids = boss.insert([JobRequest("gone", n) for n in range(3)])
    boss.fetch("gone")
    assert boss.delete_jobs("gone", ids) == 3
    assert all(job_row(db, "gone", job_id) is None for job_id in ids)
    assert boss.delete_jobs("gone", ids) == 0


def test_management_verbs_check_queue_and_ids(boss: PgBoss, queue: Callable[..., str]) -> None:
    queue("checked")
    for verb in (boss.cancel, boss.resume, boss.retry, boss.delete_jobs):
        with pytest.raises(QueueNotFound):
            verb("missing", [str(uuid.uuid4())])
        with pytest.raises(ValueError, match="is not a job id"):
            verb("checked", ["not-a-uuid"])


def test_get_job_reads_one_job(boss: PgBoss, queue: Callable[..., str]) -> None:
    queue("look", retryLimit=5)
    queue("look2")
    job_id = boss.send("look", {"a": 1}, SendOptions(singletonKey="k", priority=2))
    job = boss.get_job("look", job_id)
    assert isinstance(job, Job) and not isinstance(job, JobDetails)
    assert (job.id, job.data, job.retry_limit, job.priority, job.singleton_key) == (
        job_id,
        {"a": 1},
        5,
        2,
        "k",
    )
    details = boss.get_job("look", uuid.UUID(job_id), include_metadata=True)
    assert isinstance(details, JobDetails)
    assert (details.state, details.policy, details.output) == (JobState.CREATED, "standard", None)
    assert boss.get_job("look2", job_id) is None  # ids are per queue
    assert boss.get_job("look", str(uuid.uuid4())) is None
    assert boss.get_job("look", "nonsense") is None
