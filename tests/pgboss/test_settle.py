"""complete, fail, expiry and touch: pg-boss 12.38's bookkeeping, fenced on the attempt."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest

from shared.db import Database
from shared.pgboss.client import PgBoss
from shared.pgboss.models import FailOutcome, Job, JobRequest, SendOptions
from tests.conftest import SCHEMA
from tests.pgboss.conftest import age, dead_letters, hold_pg_boss_lock, job_row, seconds_until

TIMED_OUT = {"value": {"message": "job timed out"}}
HEARTBEAT_LOST = {"value": {"message": "job heartbeat timeout"}}


def fetch_one(boss: PgBoss, name: str) -> Job:
    (job,) = boss.fetch(name)
    return job


def make_due(db: Database, job: Job) -> None:
    """Pull a retry's start_after into the past so it can be fetched again now."""
    db.run(
        f"UPDATE {SCHEMA}.job SET start_after = now() WHERE name = :n AND id = CAST(:id AS uuid)",
        {"n": job.name, "id": job.id},
    )


def test_complete_stores_output_as_pg_boss_does(boss: PgBoss, db: Database, queue: Callable[..., str]) -> None:
    queue("done")
    outputs = [{"ok": True}, "text", 42, [1, 2], None]
    boss.insert([JobRequest("done", n) for n in range(len(outputs))])
    jobs = boss.fetch("done", len(outputs))
    assert sorted(boss.complete("done", list(zip(jobs, outputs, strict=True)))) == sorted(j.id for j in jobs)
    expected = [{"ok": True}, {"value": "text"}, {"value": 42}, {"value": [1, 2]}, None]
    for job, output in zip(jobs, expected, strict=True):
        row = job_row(db, "done", job.id)
        assert (row["state"], row["output"]) == ("completed", output)
        assert row["completed_on"] is not None and row["started_on"] == job.started_on
    assert boss.complete("done", []) == []


def test_only_active_jobs_complete(boss: PgBoss, db: Database, queue: Callable[..., str]) -> None:
    queue("idle")
    job_id = boss.send("idle")
    queued = Job(job_id, "idle", None, 0, 2, 900, None, None, None, None, 0, None)
    assert boss.complete("idle", [(queued, None)]) == []
    assert job_row(db, "idle", job_id)["state"] == "created"


def test_a_late_settle_after_expiry_changes_nothing(boss: PgBoss, db: Database, queue: Callable[..., str]) -> None:
    queue("late", expireInSeconds=1, retryLimit=3)
    boss.send("late", {"n": 1})
    stale = fetch_one(boss, "late")
    age(db, "late", stale.id, 5, "started_on")
    assert boss.fail_expired("late") == FailOutcome(retried=(stale.id,))
    assert job_row(db, "late", stale.id)["output"] == TIMED_OUT
    current = fetch_one(boss, "late")
    assert (current.id, current.retry_count) == (stale.id, 1)
    assert boss.complete("late", [(stale, {"late": True})]) == []
    assert boss.fail("late", [(stale, "late")]) == FailOutcome()
    assert boss.touch("late", [stale]) == 0
    row = job_row(db, "late", stale.id)
    assert (row["state"], row["retry_count"], row["output"]) == ("active", 1, TIMED_OUT)
    assert boss.complete("late", [(current, {"ok": 1})]) == [current.id]


def test_fail_retries_with_a_fixed_delay(boss: PgBoss, db: Database, queue: Callable[..., str]) -> None:
    queue("fixed", retryLimit=2, retryDelay=30)
    boss.send("fixed", {"n": 1})
    job = fetch_one(boss, "fixed")
    try:
        raise RuntimeError("boom")
    except RuntimeError as error:
        outcome = boss.fail("fixed", [(job, error)])
    assert outcome == FailOutcome(retried=(job.id,))
    row = job_row(db, "fixed", job.id)
    assert (row["state"], row["retry_count"], row["completed_on"], row["heartbeat_on"]) == (
        "retry",
        0,
        None,
        None,
    )
    assert row["started_on"] == job.started_on
    assert row["output"]["name"] == "RuntimeError" and row["output"]["message"] == "boom"
    assert "RuntimeError: boom" in row["output"]["stack"]
    assert 28 < seconds_until(db, "fixed", job.id) <= 30
    assert boss.fetch("fixed") == []


def test_fail_with_a_zero_delay_is_due_at_once(boss: PgBoss, queue: Callable[..., str]) -> None:
    queue("instant", retryLimit=1)
    boss.send("instant")
    job = fetch_one(boss, "instant")
    boss.fail("instant", [(job, {"reason": "x"})])
    assert fetch_one(boss, "instant").retry_count == 1


def test_backoff_without_a_delay_starts_at_one_second(boss: PgBoss, db: Database, queue: Callable[..., str]) -> None:
    queue("backoff1", retryLimit=1, retryBackoff=True)
    boss.send("backoff1")
    job = fetch_one(boss, "backoff1")
    boss.fail("backoff1", [(job, "x")])
    assert 0.5 < seconds_until(db, "backoff1", job.id) < 2


def test_backoff_doubles_with_each_attempt(boss: PgBoss, db: Database, queue: Callable[..., str]) -> None:
    queue("backoff", retryLimit=4, retryDelay=2, retryBackoff=True)
    boss.send("backoff")
    for low, high in ((2, 4), (4, 8), (8, 16), (16, 32)):
        job = fetch_one(boss, "backoff")
        boss.fail("backoff", [(job, "x")])
        assert low - 0.5 < seconds_until(db, "backoff", job.id) < high
        make_due(db, job)
    last = fetch_one(boss, "backoff")
    assert last.retry_count == 4
    assert boss.fail("backoff", [(last, "x")]) == FailOutcome(failed=(last.id,))


def test_backoff_is_capped_by_retry_delay_max(boss: PgBoss, db: Database, queue: Callable[..., str]) -> None:
    queue("capped", retryLimit=3, retryDelay=3, retryBackoff=True, retryDelayMax=5)
    boss.send("capped")
    job = fetch_one(boss, "capped")
    boss.fail("capped", [(job, "x")])
    assert 2.5 < seconds_until(db, "capped", job.id) <= 5
    make_due(db, job)
    job = fetch_one(boss, "capped")
    boss.fail("capped", [(job, "x")])
    assert 4.5 < seconds_until(db, "capped", job.id) <= 5
    queue("uncapped_zero", retryLimit=1, retryDelay=3, retryBackoff=True, retryDelayMax=0)
    boss.send("uncapped_zero")
    job = fetch_one(boss, "uncapped_zero")
    boss.fail("uncapped_zero", [(job, "x")])
    assert fetch_one(boss, "uncapped_zero").retry_count == 1


def test_the_last_attempt_fails_for_good(boss: PgBoss, db: Database, queue: Callable[..., str]) -> None:
    queue("final", retryLimit=1, retryDelay=60)
    boss.send("final")
    job = fetch_one(boss, "final")
    boss.fail("final", [(job, "first")])
    make_due(db, job)
    before = job_row(db, "final", job.id)["start_after"]
    job = fetch_one(boss, "final")
    assert boss.fail("final", [(job, "second")]) == FailOutcome(failed=(job.id,))
    row = job_row(db, "final", job.id)
    assert (row["state"], row["retry_count"], row["output"]) == ("failed", 1, {"value": "second"})
    assert row["completed_on"] is not None and row["start_after"] == before


def test_failed_jobs_are_copied_to_the_dead_letter_queue(boss: PgBoss, db: Database, queue: Callable[..., str]) -> None:
    queue(
        "dlq",
        retryLimit=7,
        retryDelay=9,
        retryBackoff=True,
        expireInSeconds=33,
        retentionSeconds=4444,
        deleteAfterSeconds=55,
        heartbeatSeconds=66,
    )
    queue(
        "source",
        policy="short",
        retryLimit=0,
        retryBackoff=True,
        retryDelayMax=3,
        deadLetter="dlq",
        heartbeatSeconds=12,
    )
    job_id = boss.send("source", {"doc": 1}, SendOptions(priority=4, singletonKey="k", group={"id": "g", "tier": "t"}))
    job = fetch_one(boss, "source")
    outcome = boss.fail("source", [(job, {"why": "broken"})])
    (copy_id,) = outcome.dead_lettered
    assert outcome.failed == (job_id,)
    original = job_row(db, "source", job_id)
    assert original["state"] == "failed"
    (copy,) = dead_letters(db, "dlq", job_id)
    assert str(copy["id"]) == copy_id and copy_id != job_id
    assert (copy["state"], copy["data"], copy["priority"], copy["singleton_key"]) == (
        "created",
        {"doc": 1},
        4,
        "k",
    )
    assert (copy["group_id"], copy["group_tier"]) == ("g", "t")
    assert (copy["retry_limit"], copy["retry_delay"], copy["retry_backoff"]) == (7, 9, True)
    assert (copy["expire_seconds"], copy["deletion_seconds"], copy["heartbeat_seconds"]) == (33, 55, 66)
    assert copy["start_after"] == copy["created_on"]
    assert copy["keep_until"] - copy["created_on"] == timedelta(seconds=4444)
    for column in ("retry_delay_max", "policy", "dead_letter", "output", "singleton_on", "started_on"):
        assert copy[column] is None, column
    assert (copy["source_name"], str(copy["source_id"]), copy["source_retry_count"]) == ("source", job_id, 0)
    assert copy["source_created_on"] == original["created_on"]
    assert copy["source_output"] == {"why": "broken"}
    assert str(copy["source_root_id"]) == job_id
    # Failing the copy in a dead letter queue of its own keeps the root of the chain.
    queue("dlq2")
    db.run(
        f"UPDATE {SCHEMA}.job SET dead_letter = 'dlq2', retry_limit = 0 WHERE id = CAST(:id AS uuid)",
        {"id": copy_id},
    )
    letter = fetch_one(boss, "dlq")
    (second_copy,) = boss.fail("dlq", [(letter, "again")]).dead_lettered
    assert str(job_row(db, "dlq2", second_copy)["source_root_id"]) == job_id


def test_stately_retry_conflict_fails_the_job_at_once(boss: PgBoss, db: Database, queue: Callable[..., str]) -> None:
    queue("state_dlq")
    queue("stately", policy="stately", retryLimit=3, retryDelay=3600, deadLetter="state_dlq")
    first_id = boss.send("stately", 1, SendOptions(singletonKey="K"))
    first = fetch_one(boss, "stately")
    assert boss.fail("stately", [(first, "x")]).retried == (first_id,)
    second_id = boss.send("stately", 2, SendOptions(singletonKey="K"))
    second = fetch_one(boss, "stately")
    assert second.id == second_id
    outcome = boss.fail("stately", [(second, "y")])
    assert outcome.failed == (second_id,) and len(outcome.dead_lettered) == 1
    row = job_row(db, "stately", second_id)
    assert (row["state"], row["retry_count"], row["output"]) == ("failed", 0, {"value": "y"})
    assert row["completed_on"] is not None


def test_expired_jobs_are_failed_like_pg_boss_monitor(boss: PgBoss, db: Database, queue: Callable[..., str]) -> None:
    queue("expiry_dlq")
    queue("expiry", expireInSeconds=5, retryLimit=1, deadLetter="expiry_dlq")
    boss.insert([JobRequest("expiry", n) for n in range(3)])
    stuck, fine, _ = boss.fetch("expiry", 3)
    age(db, "expiry", stuck.id, 6, "started_on")
    assert boss.fail_expired("expiry") == FailOutcome(retried=(stuck.id,))
    assert job_row(db, "expiry", fine.id)["state"] == "active"
    make_due(db, stuck)
    again = fetch_one(boss, "expiry")
    age(db, "expiry", again.id, 6, "started_on")
    outcome = boss.fail_expired("expiry")
    assert outcome.failed == (again.id,) and len(outcome.dead_lettered) == 1
    assert job_row(db, "expiry", again.id)["output"] == TIMED_OUT
    assert dead_letters(db, "expiry_dlq", again.id)[0]["source_output"] == TIMED_OUT


def test_lost_heartbeats_fail_jobs_and_touch_keeps_them(boss: PgBoss, db: Database, queue: Callable[..., str]) -> None:
    queue("beats", heartbeatSeconds=10, retryLimit=0)
    boss.insert([JobRequest("beats", n) for n in range(3)])
    touched, lost, fresh = boss.fetch("beats", 3)
    for job in (touched, lost):
        age(db, "beats", job.id, 11, "heartbeat_on")
    assert boss.touch("beats", [touched]) == 1
    assert boss.fail_expired("beats") == FailOutcome(failed=(lost.id,))
    assert job_row(db, "beats", lost.id)["output"] == HEARTBEAT_LOST
    assert job_row(db, "beats", touched.id)["state"] == "active"
    assert job_row(db, "beats", fresh.id)["state"] == "active"
    assert boss.touch("beats", []) == 0


def test_expiry_works_through_batches_of_a_thousand(boss: PgBoss, db: Database, queue: Callable[..., str]) -> None:
    queue("many", expireInSeconds=1, retryLimit=0)
    boss.insert([JobRequest("many", n) for n in range(1005)])
    assert len(boss.fetch("many", 2000)) == 1005
    db.run(f"UPDATE {SCHEMA}.job SET started_on = started_on - interval '1 minute' WHERE name = 'many'")
    assert len(boss.fail_expired("many").failed) == 1005
    assert db.run(f"SELECT count(*) AS n FROM {SCHEMA}.job WHERE name = 'many' AND state = 'failed'")[0]["n"] == 1005


def test_expiry_takes_pg_boss_advisory_lock(
    boss: PgBoss, db: Database, other_db: Database, queue: Callable[..., str]
) -> None:
    queue("guarded", expireInSeconds=1, retryLimit=0)
    boss.send("guarded")
    job = fetch_one(boss, "guarded")
    age(db, "guarded", job.id, 5, "started_on")
    results: list[FailOutcome] = []
    with other_db.transaction() as tx:
        hold_pg_boss_lock(tx, "job_commonfailJobsByTimeout")
        worker = threading.Thread(target=lambda: results.append(boss.fail_expired("guarded")))
        worker.start()
        time.sleep(0.5)
        assert results == []
    worker.join(10)
    assert results == [FailOutcome(failed=(job.id,))]


def test_jobs_of_a_queue_with_its_own_table_settle_the_same(
    boss: PgBoss, db: Database, other_db: Database, queue: Callable[..., str]
) -> None:
    queue("letters")
    queue("own", partition=True, policy="singleton", retryLimit=0, expireInSeconds=1, deadLetter="letters")
    table = boss.get_queue("own").table_name
    boss.insert([JobRequest("own", n, SendOptions(singletonKey=f"k{n}")) for n in range(3)])
    done, failed, expired = boss.fetch("own", 3)
    assert boss.complete("own", [(done, None)]) == [done.id]
    assert len(boss.fail("own", [(failed, "x")]).dead_lettered) == 1
    assert dead_letters(db, "letters", failed.id)[0]["source_name"] == "own"
    age(db, "own", expired.id, 5, "started_on")
    results: list[FailOutcome] = []
    with other_db.transaction() as tx:
        hold_pg_boss_lock(tx, table + "failJobsByTimeout")
        worker = threading.Thread(target=lambda: results.append(boss.fail_expired("own")))
        worker.start()
        time.sleep(0.5)
        assert results == []
    worker.join(10)
    assert results[0].failed == (expired.id,)
    rows = db.run(f'SELECT count(*) AS n FROM {SCHEMA}."{table}"')
    assert rows == [{"n": 3}]


@pytest.mark.parametrize("verb", ["complete", "fail", "touch"])
def test_settles_of_an_empty_batch_do_nothing(boss: PgBoss, verb: str) -> None:
    result = getattr(boss, verb)("no_such_queue", [])
    assert result in ([], FailOutcome(), 0)
