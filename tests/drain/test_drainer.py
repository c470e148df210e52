"""The drain loop on its own, against real PostgreSQL and real pg-boss (Node) beside it."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pytest

from shared.config import Settings
from shared.db import Database
from shared.drain.listener import listen_url
from shared.drain.loop import Drainer
from shared.errors import DatabaseUnavailable
from shared.handlers import Registry, sleep, stopping
from shared.pgboss.client import PgBoss
from shared.pgboss.models import Job, JobRequest, SendOptions
from tests.conftest import SCHEMA
from tests.drain.conftest import job_row, limits, make_due, via


def send(boss: PgBoss, queue: str, count: int, data: Any = None, **options: Any) -> list[str]:
    ids = boss.insert(
        [JobRequest(queue, data if data is not None else {"n": n}, SendOptions(**options)) for n in range(count)]
    )
    return [job_id for job_id in ids if job_id]


def states(db: Database, queue: str) -> Counter[str]:
    rows = db.run(f"SELECT state::text AS state FROM {SCHEMA}.job WHERE name = :name", {"name": queue})
    return Counter(row["state"] for row in rows)


def test_failures_back_off_exponentially_then_fail_and_copy_to_the_dead_letter_queue(run_drain, boss, db) -> None:
    registry = Registry()

    @registry.handler("flaky", retry_limit=2, retry_delay=1, dead_letter="flaky-dead")
    def always_fails(job: Job) -> None:
        raise RuntimeError(f"boom on attempt {job.retry_count}")

    run_drain(registry)  # creates flaky and, first, its dead letter queue
    (job_id,) = send(boss, "flaky", 1, {"doc": 7})
    delays = []
    for _attempt in range(2):
        summary = run_drain(registry)
        assert summary.queues["flaky"].retried == 1
        delays.append(
            db.run(
                f"SELECT extract(epoch FROM start_after - now()) AS s FROM {SCHEMA}.job WHERE id = :id::uuid",
                {"id": job_id},
            )[0]["s"]
        )
        make_due(db, "flaky")
    summary = run_drain(registry)

    # pg-boss's backoff: retry_delay * 2^retry_count * (1 + random), so 1-2 s, then 2-4 s.
    assert 0 < delays[0] <= 2 and 1 < delays[1] <= 4
    assert (summary.queues["flaky"].failed, summary.queues["flaky"].dead_lettered) == (1, 1)
    row = job_row(db, "flaky", job_id)
    assert (row["state"], row["retry_count"]) == ("failed", 2)
    assert row["output"]["message"] == "boom on attempt 2"
    (dead,) = db.run(f"SELECT * FROM {SCHEMA}.job WHERE name = 'flaky-dead'")
    assert (dead["data"], str(dead["source_id"]), dead["state"]) == ({"doc": 7}, job_id, "created")


def test_a_handler_past_expire_seconds_is_failed_as_timed_out_and_its_late_result_fenced(run_drain, boss, db) -> None:
    registry = Registry()
    seen: list[Job] = []
    gave_up: list[bool] = []
    finished = threading.Event()

    @registry.handler("slow", expire_in_seconds=1, retry_limit=1, retry_delay=60)
    def slow(job: Job) -> dict:
        seen.append(job)
        gave_up.append(sleep(30))  # True: drain gave up on it (after a second) before the 30 s were up
        gave_up.append(stopping())
        finished.set()
        return {"late": True}

    run_drain(registry)
    (job_id,) = send(boss, "slow", 1)
    started = time.monotonic()
    summary = run_drain(registry)

    assert time.monotonic() - started > 0.9
    assert (summary.queues["slow"].timed_out, summary.queues["slow"].retried) == (1, 1)
    assert finished.wait(5)
    assert gave_up == [True, True]
    row = job_row(db, "slow", job_id)
    assert row["state"] == "retry"
    assert "timed out" in row["output"]["message"]
    # The attempt fence: settling that first attempt now changes nothing.
    assert boss.complete("slow", [(seen[0], {"late": True})]) == []
    make_due(db, "slow")
    (again,) = boss.fetch("slow", 1)
    assert again.retry_count == 1
    assert boss.complete("slow", [(seen[0], {"late": True})]) == []
    assert job_row(db, "slow", job_id)["state"] == "active"


def test_a_long_handler_on_a_heartbeat_queue_keeps_its_job_alive(run_drain, boss, db, databases) -> None:
    registry = Registry()

    @registry.handler("beating", heartbeat_seconds=10)
    def long_running(job: Job) -> dict:
        sleep(2.5)
        return {"done": True}

    run_drain(registry)
    ours, abandoned = send(boss, "beating", 2)
    # pg-boss refuses heartbeats under 10 s; shrink them in the rows so the test runs in
    # seconds: drain then touches every 0.5 s, and a job untouched for 1 s is lost.
    db.run(f"UPDATE {SCHEMA}.job SET heartbeat_seconds = 1 WHERE name = 'beating'")
    (claimed,) = boss.fetch("beating", 1)  # a worker that claims one job and dies
    assert claimed.id in (ours, abandoned)
    ours = abandoned if claimed.id == ours else ours
    abandoned = claimed.id

    sweeper_boss = PgBoss(databases(), SCHEMA)
    stop = threading.Event()
    swept: list[int] = []

    def sweep() -> None:  # what a Node supervisor does, every 0.3 s
        while not stop.wait(0.3):
            outcome = sweeper_boss.fail_expired("beating")
            swept.append(len(outcome.retried) + len(outcome.failed))

    sweeper = threading.Thread(target=sweep)
    sweeper.start()
    try:
        summary = run_drain(registry)
    finally:
        stop.set()
        sweeper.join()

    assert summary.queues["beating"].completed == 1
    assert job_row(db, "beating", ours)["state"] == "completed"
    lost = job_row(db, "beating", abandoned)
    assert lost["state"] == "retry"
    assert lost["output"] == {"value": {"message": "job heartbeat timeout"}}
    assert sum(swept) == 1


def test_queues_take_turns_so_a_busy_one_cannot_starve_a_quiet_one(run_drain, boss) -> None:
    registry = Registry()
    for name in ("busy", "quiet"):
        registry.handler(name)(lambda job: None)

    run_drain(registry)
    send(boss, "busy", 40)
    send(boss, "quiet", 4)
    summary = run_drain(registry, max_jobs=8, concurrency=2)

    assert summary.stopped == "max_jobs"
    assert (summary.queues["busy"].completed, summary.queues["quiet"].completed) == (4, 4)


def test_two_overlapping_drains_and_a_node_worker_complete_each_job_exactly_once(
    run_drain, boss, db, node_boss
) -> None:
    registry = Registry()
    handled: list[tuple[str, int]] = []
    lock = threading.Lock()

    @registry.handler("shared")
    def record(job: Job) -> dict:
        with lock:
            handled.append((job.id, job.retry_count))
        time.sleep(0.001)
        return {"by": "python"}

    run_drain(registry)
    ids = set(send(boss, "shared", 300))
    node_boss.work(
        "shared", {"behavior": "complete", "output": {"by": "node"}}, batchSize=5, pollingIntervalSeconds=0.5
    )
    summaries: list[Any] = []
    drains = [
        threading.Thread(
            target=lambda listen=listen: summaries.append(
                run_drain(registry, listen=listen, budget_seconds=2.5, stop_fetching_seconds=0.5)
            )
        )
        for listen in (True, False)
    ]
    for thread in drains:
        thread.start()
    for thread in drains:
        thread.join(timeout=30)
    node_boss.off_work("shared")
    summaries.append(run_drain(registry))  # on a loaded machine, what the race left behind

    by_node = [job["id"] for job in node_boss.received("shared")]
    by_python = [job_id for job_id, _ in handled]
    assert len(summaries) == 3 and by_python and by_node
    assert Counter(by_python + by_node) == Counter(ids)  # each job handled once, by someone
    assert states(db, "shared") == Counter({"completed": 300})
    assert sum(s.queues["shared"].completed for s in summaries) == len(by_python)
    stored = db.run(f"SELECT count(*) AS n FROM {SCHEMA}.job WHERE name = 'shared' AND output->>'by' = 'python'")
    assert stored[0]["n"] == len(by_python)


def test_a_killed_database_connection_mid_call_loses_no_job(run_drain, boss, db, admin, database_url) -> None:
    registry = Registry()

    @registry.handler("steady")
    def steady(job: Job) -> dict:
        time.sleep(0.5)
        return {"ok": job.data}

    run_drain(registry)
    ids = send(boss, "steady", 6)
    database = database_url.rsplit("/", 1)[1]
    own = db.run("SELECT pg_backend_pid() AS pid")[0]["pid"]

    def kill_drain_backends() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not admin.run(  # the listener is listening, handlers run
            "SELECT 1 FROM pg_stat_activity WHERE datname = :db AND query LIKE 'LISTEN%'", db=database
        ):
            time.sleep(0.02)
        time.sleep(0.1)
        admin.run(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = :db AND application_name = 'manda-processing' AND pid <> :own",
            db=database,
            own=own,
        )

    killer = threading.Thread(target=kill_drain_backends)
    killer.start()
    summary = run_drain(registry, listen=True, budget_seconds=2.5, concurrency=3, stop_fetching_seconds=0.5)
    killer.join()

    assert states(db, "steady") == Counter({"completed": 6})
    assert summary.queues["steady"].completed == 6
    assert summary.wake == "poll"  # the listener's connection died too, so the call polled
    assert {row["id"] for row in db.run(f"SELECT id::text AS id FROM {SCHEMA}.job WHERE name = 'steady'")} == set(ids)


def test_a_database_gone_for_the_rest_of_a_call_is_503_and_its_jobs_are_retried_later(
    run_drain, boss, db, proxy, database_url
) -> None:
    registry = Registry()
    working = threading.Event()

    @registry.handler("outage", expire_in_seconds=1)
    def work(job: Job) -> dict:
        working.set()
        time.sleep(0.4)
        return {"ok": True}

    cut_boss = PgBoss(Database(via(proxy, database_url)), SCHEMA)
    Drainer(cut_boss, registry, limits()).run(["outage"])  # queue created, connection open
    ids = send(boss, "outage", 2)
    threading.Thread(target=lambda: working.wait(5) and proxy.cut(refuse=True)).start()
    with pytest.raises(DatabaseUnavailable, match="stay active"):
        Drainer(cut_boss, registry, limits(budget_seconds=1.5, settle_seconds=0.3)).run(["outage"])
    assert states(db, "outage") == Counter({"active": 2})  # claimed, unsettled: nobody can tell

    proxy.restore()
    time.sleep(1.1)  # past expire_seconds: the next call's sweep hands them back to pg-boss
    summary = run_drain(registry)
    assert summary.queues["outage"].expired == 2
    make_due(db, "outage")
    run_drain(registry)
    assert states(db, "outage") == Counter({"completed": 2})
    assert all(job_row(db, "outage", job_id)["retry_count"] == 1 for job_id in ids)


def test_polling_finds_a_job_sent_mid_call_when_it_cannot_listen(run_drain, boss) -> None:
    registry = Registry()
    registry.handler("polled")(lambda job: {"ok": True})
    run_drain(registry)
    threading.Timer(0.4, send, args=(boss, "polled", 1)).start()

    summary = run_drain(registry, budget_seconds=3, stop_fetching_seconds=0.5, poll_seconds=0.05)

    assert (summary.queues["polled"].completed, summary.wake) == (1, "poll")


def test_an_output_that_cannot_be_stored_fails_that_job_only(run_drain, boss, db) -> None:
    registry = Registry()

    @registry.handler("outputs", retry_limit=0)
    def outputs(job: Job) -> Any:
        return {"nan": float("nan")} if job.data["n"] == 0 else {"nul": "a\u0000b"} if job.data["n"] == 1 else "fine"

    run_drain(registry)
    nan, nul, fine = send(boss, "outputs", 3)
    summary = run_drain(registry, concurrency=3)

    assert (summary.queues["outputs"].completed, summary.queues["outputs"].failed) == (1, 2)
    assert job_row(db, "outputs", fine)["output"] == {"value": "fine"}
    assert job_row(db, "outputs", nan)["output"]["name"] == "HandlerOutputInvalid"
    assert job_row(db, "outputs", nul)["output"]["name"] == "HandlerOutputInvalid"


def test_a_delayed_job_is_not_drained_before_it_is_due(run_drain, boss) -> None:
    registry = Registry()
    registry.handler("later")(lambda job: None)
    run_drain(registry)
    send(boss, "later", 1, start_after=60)
    assert run_drain(registry).queues["later"].fetched == 0


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"DATABASE_URL": "postgresql://u@db.example.co:5432/postgres"}, "postgresql://u@db.example.co:5432/postgres"),
        ({"DATABASE_URL": "postgresql://u@pooler.example.com:6543/postgres"}, None),
        (
            {"DATABASE_URL": "postgresql://u@pooler.example.com:6543/postgres", "DRAIN_LISTEN": "on"},
            "postgresql://u@pooler.example.com:6543/postgres",
        ),
        ({"DATABASE_URL": "postgresql://u@db.example.co:5432/postgres", "DRAIN_LISTEN": "off"}, None),
        (
            {
                "DATABASE_URL": "postgresql://u@pooler.example.com:6543/postgres",
                "DRAIN_LISTEN_DATABASE_URL": "postgresql://u@pooler.example.com:5432/postgres",
            },
            "postgresql://u@pooler.example.com:5432/postgres",
        ),
    ],
)
def test_listening_is_off_through_supabases_transaction_pooler(env: dict, expected: str | None) -> None:
    assert listen_url(Settings.from_environ(env)) == expected
