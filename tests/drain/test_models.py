"""The four handler models (thread, batch, async, process) against real PostgreSQL and pg-boss 12.38.

Each model keeps drain's guarantees: outputs Node reads back unchanged, pg-boss's retry
and dead-letter bookkeeping, expiry and budget ends that really stop the work
(a cancelled task, a killed process), heartbeats, and fair turns across queues.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import types
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from shared.drain.processes import process_pool
from shared.errors import ConfigError
from shared.handlers import Failed, Registry, load, sleep
from shared.handlers.echo import (
    ASYNC_QUEUE,
    BATCH_QUEUE,
    PROCESS_QUEUE,
    QUEUE,
    handle_test_job,
    handle_test_job_async,
    handle_test_job_batch,
    handle_test_job_process,
)
from shared.pgboss.models import Job
from tests.conftest import SCHEMA
from tests.drain.conftest import job_row, make_due
from tests.drain.test_drainer import send, states

TWINS = {
    "thread": handle_test_job,
    "batch": handle_test_job_batch,
    "async": handle_test_job_async,
    "process": handle_test_job_process,
}
SHIPPED = {"thread": QUEUE, "batch": BATCH_QUEUE, "async": ASYNC_QUEUE, "process": PROCESS_QUEUE}


def twin(registry: Registry, model: str, queue: str, **options: Any) -> None:
    """Register the shipped twin of ``model`` under another queue, with its own options."""
    registry.handler(queue, model=model, **options)(TWINS[model])  # type: ignore[arg-type]


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


@pytest.mark.parametrize("model", list(TWINS))
def test_each_twin_completes_jobs_node_sent_and_node_reads_the_outputs_unchanged(
    model: str, run_drain, node_boss
) -> None:
    registry = load()
    queue = SHIPPED[model]
    assert registry.get(queue).model == model
    run_drain(registry, [queue])  # creates the queue
    data = [{"n": 1, "text": "é\u2603", "nested": {"list": [1, 2.5, None, True]}}, [1, "two"], "plain", 7]
    ids = [node_boss.call("send", queue, value) for value in data]

    summary = run_drain(registry, [queue])

    assert (summary.queues[queue].fetched, summary.queues[queue].completed) == (4, 4)
    for value, job_id in zip(data, ids, strict=True):
        job = node_boss.call("getJobById", queue, job_id)
        assert (job["state"], job["output"]) == ("completed", {"echo": value})


def test_a_batch_handler_gets_its_jobs_together_and_fails_only_those_it_marks(run_drain, boss, db) -> None:
    registry = Registry()
    batches: list[list[int]] = []

    @registry.handler("embed", model="batch", batch_size=5, retry_limit=1, retry_delay=60)
    def embed(jobs: list[Job]) -> list[Any]:
        batches.append([job.data["n"] for job in jobs])
        return [Failed(ValueError(f"bad {job.data['n']}")) if job.data["n"] % 3 == 0 else job.data for job in jobs]

    run_drain(registry)
    ids = send(boss, "embed", 12)

    summary = run_drain(registry, concurrency=20)

    assert sorted(n for batch in batches for n in batch) == list(range(12))
    assert all(len(batch) <= 5 for batch in batches) and len(batches) == 3
    assert (summary.queues["embed"].completed, summary.queues["embed"].retried) == (8, 4)
    for n, job_id in enumerate(ids):
        row = job_row(db, "embed", job_id)
        if n % 3 == 0:
            assert (row["state"], row["output"]["name"], row["output"]["message"]) == (
                "retry",
                "ValueError",
                f"bad {n}",
            )
        else:
            assert (row["state"], row["output"]) == ("completed", {"n": n})


def test_a_batch_handler_that_raises_or_answers_the_wrong_count_fails_the_whole_batch(run_drain, boss, db) -> None:
    registry = Registry()

    @registry.handler("raises", model="batch", retry_limit=0)
    def raises(jobs: list[Job]) -> list[Any]:
        raise RuntimeError("the embedding service is down")

    @registry.handler("short", model="batch", retry_limit=0)
    def short(jobs: list[Job]) -> list[Any]:
        return [{"only": "one"}]

    run_drain(registry)
    send(boss, "raises", 3)
    send(boss, "short", 3)
    summary = run_drain(registry, concurrency=10)  # room for each batch of 3 whole

    assert summary.queues["raises"].failed == 3 and summary.queues["short"].failed == 3
    messages = {row["output"]["message"] for row in db.run(f"SELECT output FROM {SCHEMA}.job WHERE name = 'short'")}
    assert messages == {"a batch handler must return one output per job: 3 jobs, 1 outputs"}
    assert states(db, "raises") == Counter({"failed": 3})


@pytest.mark.parametrize("model", list(TWINS))
def test_each_model_retries_then_fails_and_copies_to_the_dead_letter_queue(model: str, run_drain, boss, db) -> None:
    registry = Registry()
    twin(registry, model, "flaky", retry_limit=1, retry_delay=60, dead_letter="flaky-dead")
    run_drain(registry)
    (job_id,) = send(boss, "flaky", 1, {"fail": True, "doc": 7})

    first = run_drain(registry)
    make_due(db, "flaky")
    second = run_drain(registry)

    assert (first.queues["flaky"].retried, second.queues["flaky"].failed) == (1, 1)
    assert second.queues["flaky"].dead_lettered == 1
    row = job_row(db, "flaky", job_id)
    assert (row["state"], row["retry_count"], row["output"]["name"]) == ("failed", 1, "RequestedFailure")
    assert "attempt 2" in row["output"]["message"] and "Traceback" in row["output"]["stack"]
    (dead,) = db.run(f"SELECT * FROM {SCHEMA}.job WHERE name = 'flaky-dead'")
    assert (dead["data"], str(dead["source_id"])) == ({"fail": True, "doc": 7}, job_id)


def test_an_async_task_past_its_expiry_is_cancelled_and_its_job_retried(run_drain, boss, db) -> None:
    registry = Registry()
    cancelled = threading.Event()
    done: list[str] = []

    @registry.handler("stuck-io", model="async", expire_in_seconds=1, retry_limit=1, retry_delay=60)
    async def waits_for_ever(job: Job) -> dict:
        try:
            await asyncio.Event().wait()  # a reply that never comes
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {"never": True}

    @registry.handler("quick-io", model="async")
    async def quick(job: Job) -> dict:
        await asyncio.sleep(0.01)
        done.append(job.id)
        return {"ok": True}

    run_drain(registry)
    (job_id,) = send(boss, "stuck-io", 1)
    send(boss, "quick-io", 3)
    summary = run_drain(registry)

    assert cancelled.wait(5)
    assert (summary.queues["stuck-io"].timed_out, summary.queues["stuck-io"].retried) == (1, 1)
    assert summary.queues["quick-io"].completed == 3 and len(done) == 3  # the loop was never blocked
    row = job_row(db, "stuck-io", job_id)
    assert (row["state"], row["output"]["name"]) == ("retry", "HandlerTimedOut")


def test_a_stuck_process_is_killed_at_its_expiry_replaced_and_its_job_retried(run_drain, boss, db) -> None:
    registry = Registry()
    twin(registry, "process", "parser", expire_in_seconds=1, retry_limit=1, retry_delay=60)
    run_drain(registry)
    pool = process_pool()
    before = set(pool.pids())
    (stuck,) = send(boss, "parser", 1, {"hang": True})
    (fine,) = send(boss, "parser", 1, {"n": 1})

    summary = run_drain(registry)

    stats = summary.queues["parser"]
    assert (stats.timed_out, stats.retried, stats.completed) == (1, 1, 1)
    row = job_row(db, "parser", stuck)
    assert (row["state"], row["output"]["name"]) == ("retry", "HandlerTimedOut")
    assert job_row(db, "parser", fine)["output"] == {"echo": {"n": 1}}
    after = set(pool.pids())
    (killed,) = before - after  # exactly one worker was replaced: the one running the stuck job
    assert not alive(killed)
    assert all(alive(pid) for pid in after) and len(after) == pool.size

    make_due(db, "parser")
    # This time it does not hang, and has time for a fresh worker to start on a loaded machine.
    db.run(f"UPDATE {SCHEMA}.job SET data = '{{\"n\": 2}}', expire_seconds = 60 WHERE id = :id::uuid", {"id": stuck})
    assert run_drain(registry).queues["parser"].completed == 1  # the replacement works


def test_the_budget_end_kills_a_stuck_process_and_interrupts_a_batch_midway(run_drain, boss, db) -> None:
    registry = Registry()
    twin(registry, "process", "parser", expire_in_seconds=600, retry_limit=1, retry_delay=60)
    started = threading.Event()

    @registry.handler("embed", model="batch", batch_size=4, retry_limit=1, retry_delay=60)
    def slow_batch(jobs: list[Job]) -> list[Any]:
        started.set()
        sleep(30)  # returns early when drain gives up; its late outputs are discarded
        return [{"late": True}] * len(jobs)

    run_drain(registry)
    pool = process_pool()
    before = set(pool.pids())
    (stuck,) = send(boss, "parser", 1, {"hang": True})
    batch = send(boss, "embed", 4)

    summary = run_drain(registry, budget_seconds=3, stop_fetching_seconds=1.0, concurrency=10)

    assert started.is_set()
    assert summary.stopped == "budget"
    assert (summary.queues["parser"].interrupted, summary.queues["embed"].interrupted) == (1, 4)
    for queue, job_id in [("parser", stuck), *(("embed", job_id) for job_id in batch)]:
        row = job_row(db, queue, job_id)
        assert (row["state"], row["output"]["name"]) == ("retry", "DrainStopped")
    (killed,) = before - set(pool.pids())
    assert not alive(killed)


def test_a_long_process_handler_on_a_heartbeat_queue_keeps_its_job_alive(run_drain, boss, db, databases) -> None:
    registry = Registry()
    twin(registry, "process", "beating", heartbeat_seconds=10)
    run_drain(registry)
    (job_id,) = send(boss, "beating", 1, {"sleep": 2.5})
    db.run(f"UPDATE {SCHEMA}.job SET heartbeat_seconds = 1 WHERE name = 'beating'")  # touched every 0.5 s

    lost: list[int] = []
    stop = threading.Event()
    from shared.pgboss.client import PgBoss

    sweeper = PgBoss(databases(), SCHEMA)

    def sweep() -> None:  # what a Node supervisor does
        while not stop.wait(0.3):
            outcome = sweeper.fail_expired("beating")
            lost.append(len(outcome.retried) + len(outcome.failed))

    thread = threading.Thread(target=sweep)
    thread.start()
    try:
        summary = run_drain(registry)
    finally:
        stop.set()
        thread.join()

    assert summary.queues["beating"].completed == 1 and sum(lost) == 0
    assert job_row(db, "beating", job_id)["state"] == "completed"


def test_process_handlers_run_in_worker_processes_kept_across_calls(run_drain, boss, db) -> None:
    registry = Registry()
    registry.handler("pids", model="process")(report_pid)
    run_drain(registry)
    workers = process_pool().pids()
    assert len(workers) == len(os.sched_getaffinity(0))  # one per CPU
    for _call in range(2):
        send(boss, "pids", 6)
        assert run_drain(registry).queues["pids"].completed == 6
    pids = {row["output"]["pid"] for row in db.run(f"SELECT output FROM {SCHEMA}.job WHERE name = 'pids'")}
    assert pids and os.getpid() not in pids and pids <= set(workers)
    assert process_pool().pids() == workers  # the same processes served both calls


def report_pid(job: Job) -> dict[str, int]:
    return {"pid": os.getpid()}


def test_hundreds_of_async_jobs_wait_at_once_on_one_thread(run_drain, boss) -> None:
    registry = Registry()
    in_flight = 0
    most = 0
    threads: list[int] = []

    @registry.handler("io", model="async")
    async def call_api(job: Job) -> dict:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        threads.append(threading.active_count())
        await asyncio.sleep(0.5)
        in_flight -= 1
        return {"n": job.data["n"]}

    run_drain(registry)
    send(boss, "io", 300)
    summary = run_drain(registry, concurrency=300, batch_size=100)

    assert summary.queues["io"].completed == 300
    assert most == 300  # every job awaited at the same time
    assert max(threads) < 20  # ... without a thread each


def test_one_call_runs_all_four_models_on_their_queues_and_takes_turns(run_drain, boss, db) -> None:
    registry = Registry()
    for model in TWINS:
        twin(registry, model, f"mixed-{model}")
    run_drain(registry)
    for model in TWINS:
        send(boss, f"mixed-{model}", 20)

    fair = run_drain(registry, max_jobs=8, concurrency=4)
    assert all(stats.completed >= 1 for stats in fair.queues.values()), fair.queues  # nobody starved

    rest = run_drain(registry, concurrency=8)
    assert fair.total("completed") + rest.total("completed") == 80
    for model in TWINS:
        assert states(db, f"mixed-{model}") == Counter({"completed": 20})
        outputs = db.run(f"SELECT output FROM {SCHEMA}.job WHERE name = :q", {"q": f"mixed-{model}"})
        assert sorted(row["output"]["echo"]["n"] for row in outputs) == list(range(20))


def test_a_model_that_cannot_run_its_function_is_refused_at_registration() -> None:
    registry = Registry()

    async def coroutine(job: Job) -> None:
        return None

    def plain(job: Job) -> None:
        return None

    with pytest.raises(ConfigError, match="model='async' needs an async def"):
        registry.handler("a", model="async")(plain)
    with pytest.raises(ConfigError, match="needs model='async'"):
        registry.handler("b")(coroutine)
    with pytest.raises(ConfigError, match="batch_size is for batch handlers"):
        registry.handler("c", batch_size=10)(plain)
    with pytest.raises(ConfigError, match="model must be one of"):
        registry.handler("d", model="fibers")(plain)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="top level of a module"):
        registry.handler("e", model="process")(plain)  # nested: no worker can find it
    with pytest.raises(ConfigError, match="top level of a module"):
        registry.handler("f", model="process")(lambda job: None)


def test_a_process_handler_a_worker_cannot_import_is_refused_before_any_job(run_drain, boss, db) -> None:
    # Importable here (it is in sys.modules) but in no file a fresh worker could import.
    module = types.ModuleType("handlers_made_at_runtime")
    exec("def parse(job):\n    return {'parsed': True}\n", module.__dict__)
    sys.modules[module.__name__] = module
    try:
        registry = Registry()
        registry.handler("phantom", model="process")(module.parse)
        with pytest.raises(ConfigError, match=r"worker process cannot load handlers_made_at_runtime\.parse"):
            run_drain(registry)
    finally:
        del sys.modules[module.__name__]
    assert db.run(f"SELECT count(*) AS n FROM {SCHEMA}.job WHERE name = 'phantom'")[0]["n"] == 0


def exit_at_once(job: Job) -> None:
    os._exit(3)  # what a crash in a C extension looks like from outside


def test_a_worker_process_that_dies_fails_its_job_and_is_replaced(run_drain, boss, db) -> None:
    registry = Registry()
    registry.handler("crashing", model="process", retry_limit=0)(exit_at_once)
    run_drain(registry)
    pool = process_pool()
    (job_id,) = send(boss, "crashing", 1)

    summary = run_drain(registry)

    assert summary.queues["crashing"].failed == 1
    row = job_row(db, "crashing", job_id)
    assert (row["state"], row["output"]["name"]) == ("failed", "WorkerDied")
    assert "exit code 3" in row["output"]["message"]
    assert len(pool.pids()) == pool.size and all(alive(pid) for pid in pool.pids())
