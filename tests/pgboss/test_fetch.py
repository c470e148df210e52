"""fetch: pg-boss 12.38's eligibility, order, per-policy rules and group concurrency."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest

from shared.db import Database
from shared.pgboss import sql
from shared.pgboss.client import PgBoss
from shared.pgboss.errors import InternalQueue, QueueNotFound
from shared.pgboss.models import Job, JobDetails, JobRequest, JobState, SendOptions
from tests.conftest import SCHEMA
from tests.pgboss.conftest import age, job_row


def drain_one_by_one(boss: PgBoss, name: str) -> list[Job]:
    jobs = []
    while batch := boss.fetch(name):
        jobs.extend(batch)
    return jobs


def test_fetch_claims_a_batch(boss: PgBoss, db: Database, queue: Callable[..., str]) -> None:
    queue("work", retryLimit=3, expireInSeconds=60)
    sent = {boss.send("work", {"n": n}, SendOptions(priority=n, singletonKey=f"k{n}")) for n in range(5)}
    jobs = boss.fetch("work", 3)
    assert len(jobs) == 3 and {job.id for job in jobs} <= sent
    job = jobs[0]
    assert (job.name, job.retry_count, job.retry_limit, job.expire_seconds) == ("work", 0, 3, 60)
    assert job.heartbeat_seconds is None and job.group_id is None
    assert job.data == {"n": job.priority} and job.singleton_key == f"k{job.priority}"
    row = job_row(db, "work", job.id)
    assert row["state"] == "active"
    assert row["started_on"] == row["heartbeat_on"] == job.started_on
    assert len(boss.fetch("work", 10)) == 2
    assert boss.fetch("work", 10) == []


def test_fetch_takes_higher_priority_then_older_jobs_first(boss: PgBoss, queue: Callable[..., str]) -> None:
    queue("ordered")
    ids = [boss.send("ordered", {"n": n}, SendOptions(priority=p)) for n, p in enumerate([0, 5, 1, 5, -1])]
    assert [job.id for job in drain_one_by_one(boss, "ordered")] == [ids[1], ids[3], ids[2], ids[0], ids[4]]


def test_jobs_are_not_fetched_before_start_after(boss: PgBoss, db: Database, queue: Callable[..., str]) -> None:
    queue("delayed")
    job_id = boss.send("delayed", None, SendOptions(startAfter=30))
    assert boss.fetch("delayed") == []
    age(db, "delayed", job_id, 30, "start_after")
    assert [job.id for job in boss.fetch("delayed")] == [job_id]


def test_flow_blocked_jobs_are_not_fetched(boss: PgBoss, db: Database, queue: Callable[..., str]) -> None:
    queue("flow")
    job_id = boss.send("flow")
    db.run(f"UPDATE {SCHEMA}.job SET blocked = true WHERE id = CAST(:id AS uuid)", {"id": job_id})
    assert boss.fetch("flow") == []


def test_a_refetched_attempt_bumps_retry_count(boss: PgBoss, queue: Callable[..., str]) -> None:
    queue("again", retryLimit=2)
    boss.send("again")
    (first,) = boss.fetch("again")
    assert boss.fail("again", [(first, "boom")]).retried == (first.id,)
    (second,) = boss.fetch("again")
    assert (second.id, second.retry_count) == (first.id, 1)


def test_include_metadata_returns_every_column(boss: PgBoss, queue: Callable[..., str]) -> None:
    queue("meta", policy="short")
    boss.send("meta", {"a": 1}, SendOptions(group={"id": "g", "tier": "t"}))
    (job,) = boss.fetch("meta", include_metadata=True)
    assert isinstance(job, JobDetails)
    assert (job.state, job.policy, job.group_id, job.group_tier) == (JobState.ACTIVE, "short", "g", "t")
    assert job.created_on <= job.started_on == job.heartbeat_on


def test_fetch_refuses_internal_and_missing_queues(boss: PgBoss) -> None:
    with pytest.raises(InternalQueue):
        boss.fetch("__pgboss__send-it")
    with pytest.raises(QueueNotFound):
        boss.fetch("nope")
    for size in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="batch_size"):
            boss.fetch("nope", size)  # type: ignore[arg-type]


@pytest.mark.parametrize("policy", ["singleton", "stately"])
def test_singleton_policies_claim_one_active_job_per_key(boss: PgBoss, queue: Callable[..., str], policy: str) -> None:
    queue("single", policy=policy)
    # stately keeps one queued job per key, singleton any number
    keys = ["a", "a", "b", None, None] if policy == "singleton" else ["a", "b", None]
    for key in keys:
        assert boss.send("single", {"key": key}, SendOptions(singletonKey=key)) is not None
    first = boss.fetch("single", 10)
    assert sorted((job.singleton_key or "") for job in first) == ["", "a", "b"]
    if policy == "stately":
        assert boss.send("single", {"key": "a"}, SendOptions(singletonKey="a")) is not None
    assert boss.fetch("single", 10) == []
    done = next(job for job in first if job.singleton_key == "a")
    boss.complete("single", [(done, None)])
    (next_a,) = boss.fetch("single", 10)
    assert next_a.singleton_key == "a"


def test_a_lost_singleton_race_is_an_empty_fetch(boss: PgBoss, other_db: Database, queue: Callable[..., str]) -> None:
    queue("race", policy="singleton")
    boss.send("race", 1)
    boss.send("race", 2)
    result: list[list[Job]] = []
    with other_db.transaction() as tx:
        claimed = tx.run(
            sql.fetch_jobs(boss.capabilities, SCHEMA, policy="singleton", grouped=False, detailed=False),
            {"name": "race", "limit": 1, "group_limit": None, "group_tiers": None, "policy": "singleton"},
        )
        assert len(claimed) == 1
        # Our fetch cannot see the rival's uncommitted claim, takes the other job and
        # then waits on the unique index until the rival commits: a 23505.
        worker = threading.Thread(target=lambda: result.append(boss.fetch("race")))
        worker.start()
        time.sleep(0.5)
    worker.join(10)
    assert result == [[]]


def test_key_strict_fifo_fetches_each_key_in_order(boss: PgBoss, queue: Callable[..., str]) -> None:
    queue("fifo", policy="key_strict_fifo", retryLimit=1)
    a1, a2, b1 = (boss.send("fifo", {"n": n}, SendOptions(singletonKey=k)) for n, k in enumerate("AAB"))
    first = boss.fetch("fifo", 10)
    assert sorted(job.id for job in first) == sorted([a1, b1])
    assert boss.fetch("fifo", 10) == []
    job_a = next(job for job in first if job.id == a1)
    # A retry holds the key and is its next head.
    assert boss.fail("fifo", [(job_a, "boom")]).retried == (a1,)
    (again,) = boss.fetch("fifo", 10)
    assert (again.id, again.retry_count) == (a1, 1)
    # A failed job holds the key until it is retried or deleted.
    assert boss.fail("fifo", [(again, "boom")]).failed == (a1,)
    assert boss.fetch("fifo", 10) == []
    assert boss.retry("fifo", [a1]) == 1
    (retried,) = boss.fetch("fifo", 10)
    assert retried.id == a1
    boss.complete("fifo", [(retried, None)])
    assert [job.id for job in boss.fetch("fifo", 10)] == [a2]


def test_key_strict_fifo_key_is_freed_by_deleting_the_failed_job(boss: PgBoss, queue: Callable[..., str]) -> None:
    queue("fifo_del", policy="key_strict_fifo", retryLimit=0)
    a1, a2 = (boss.send("fifo_del", n, SendOptions(singletonKey="A")) for n in range(2))
    (job,) = boss.fetch("fifo_del", 5)
    boss.fail("fifo_del", [(job, "boom")])
    assert boss.fetch("fifo_del", 5) == []
    assert boss.delete_jobs("fifo_del", [a1]) == 1
    assert [job.id for job in boss.fetch("fifo_del", 5)] == [a2]


def test_group_concurrency_limits_active_jobs_per_group(boss: PgBoss, queue: Callable[..., str]) -> None:
    queue("groups")
    requests = [JobRequest("groups", n, SendOptions(group={"id": "g1"})) for n in range(5)]
    requests += [JobRequest("groups", n, SendOptions(group={"id": "g2"})) for n in range(3)]
    requests += [JobRequest("groups", n) for n in range(3)]
    boss.insert(requests)
    first = boss.fetch("groups", 20, group_concurrency=2)
    assert Counter(job.group_id for job in first) == {"g1": 2, "g2": 2, None: 3}
    assert boss.fetch("groups", 20, group_concurrency=2) == []
    boss.complete("groups", [(next(job for job in first if job.group_id == "g1"), None)])
    second = boss.fetch("groups", 20, group_concurrency=2)
    assert [job.group_id for job in second] == ["g1"]
    assert len(boss.fetch("groups", 20)) == 3  # a fetch without the limit takes the rest


def test_group_concurrency_tiers(boss: PgBoss, queue: Callable[..., str]) -> None:
    queue("tiers")
    boss.insert(
        [JobRequest("tiers", n, SendOptions(group={"id": "gold-1", "tier": "gold"})) for n in range(5)]
        + [JobRequest("tiers", n, SendOptions(group={"id": "free-1", "tier": "free"})) for n in range(5)]
        + [JobRequest("tiers", n, SendOptions(group={"id": "plain"})) for n in range(5)]
    )
    limits = {"default": 1, "tiers": {"gold": 3}}
    claimed = Counter(job.group_id for job in boss.fetch("tiers", 50, group_concurrency=limits))
    assert claimed == {"gold-1": 3, "free-1": 1, "plain": 1}
    assert boss.fetch("tiers", 50, group_concurrency=limits) == []


@pytest.mark.parametrize(
    "limits",
    [0, True, "2", {"tiers": {"a": 1}}, {"default": 1, "tiers": {"a": 0}}, {"default": 1, "tiers": {"": 2}}],
)
def test_group_concurrency_is_validated(boss: PgBoss, queue: Callable[..., str], limits: object) -> None:
    queue("checked")
    with pytest.raises(ValueError, match="group_concurrency"):
        boss.fetch("checked", group_concurrency=limits)  # type: ignore[arg-type]


def test_concurrent_fetchers_never_claim_a_job_twice(
    boss: PgBoss, database_url: str, queue: Callable[..., str]
) -> None:
    queue("shared", policy="singleton")
    queue("bulk")
    boss.insert([JobRequest("bulk", n) for n in range(300)])
    boss.insert([JobRequest("shared", n, SendOptions(singletonKey=f"k{n % 3}")) for n in range(30)])
    claims: list[str] = []
    errors: list[BaseException] = []
    peak_per_key: list[int] = []

    def work() -> None:
        client = PgBoss(Database(database_url), SCHEMA)
        try:
            while jobs := client.fetch("bulk", 7) + client.fetch("shared", 3):
                claims.extend(job.id for job in jobs)
                shared = [(job, None) for job in jobs if job.name == "shared"]
                peak_per_key.append(max(Counter(j.singleton_key for j, _ in shared).values(), default=0))
                client.complete("bulk", [(job, None) for job in jobs if job.name == "bulk"])
                client.complete("shared", shared)
        except BaseException as error:  # surfaced below
            errors.append(error)
        finally:
            client.db.close()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(claims) == len(set(claims)) == 330
    assert max(peak_per_key) == 1
