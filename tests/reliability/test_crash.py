"""Drain instances killed with SIGKILL at random points while a Node worker and other drains run.

Three drain instances are called back to back as Cloud Scheduler would call them; a
real pg-boss worker in Node works the same queue. Some jobs kill their own instance
on their first attempt (right after the claim, inside the handler, or just after it
returned while drain settles), and a chaos thread kills random instances from
outside. Killed instances are started again. Afterwards, with expiry running, every
job must be completed exactly once or failed after its retries, and no job may have
run twice except where a crash cut a run short (an at-least-once re-run, counted
apart from true duplicates).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from typing import Any

import requests

from shared.db import Database
from tests.conftest import SCHEMA
from tests.reliability import app
from tests.reliability.servers import Function
from tests.reliability.support import DRAIN, KEY, add_figures, job_states, size
from tests.support.node_boss import NodeBoss

QUEUE = app.QUEUE
POINTS = ("fetched", "inside", "after")


def schedule(drain: Function, stop: threading.Event, calls: Counter[str], budget: float = 2.0) -> None:
    """Call ``drain`` back to back, as overlapping scheduler calls would; restart it when it died."""
    while not stop.is_set():
        try:
            drain.ensure_running()
            answer = drain.post({"queues": [QUEUE], "budgetSeconds": budget}, headers=DRAIN, timeout=30)
            calls[str(answer.status_code)] += 1
        except requests.RequestException:
            calls["cut"] += 1
        except RuntimeError:
            calls["restart-failed"] += 1
            time.sleep(0.2)


def chaos(drains: list[Function], stop: threading.Event, rng: random.Random, pause: tuple[float, float]) -> None:
    while not stop.wait(rng.uniform(*pause)):
        rng.choice(drains).kill()


def enqueue_plan(enqueue: Function, rng: random.Random, jobs: int, crashes_per_point: int) -> list[str]:
    plan: list[dict[str, Any]] = [{"ms": rng.randint(0, 15), "seq": seq} for seq in range(jobs)]
    marked = rng.sample(range(jobs), crashes_per_point * len(POINTS) + jobs // 30)
    for index, seq in enumerate(marked):
        if index < crashes_per_point * len(POINTS):
            plan[seq]["crash"] = POINTS[index % len(POINTS)]
        else:
            plan[seq]["fail"] = True
    ids: list[str] = []
    for start in range(0, jobs, 100):
        batch = [{"name": QUEUE, "data": data} for data in plan[start : start + 100]]
        answer = enqueue.post({"jobs": batch}, headers=KEY)
        assert answer.status_code == 201, answer.text
        ids += answer.json()["ids"]
    return ids


def tally(db: Database, ids: list[str], node_runs: list[dict[str, Any]], killed: set[int]) -> dict[str, Any]:
    """Every job's end state against every run of it; the figures, and the problems found."""
    jobs = {
        row["id"]: row
        for row in db.run(
            f"SELECT id::text, state::text, retry_count, retry_limit, data, output FROM {SCHEMA}.job WHERE name = :q",
            {"q": QUEUE},
        )
    }
    runs: dict[str, list[dict[str, Any]]] = {}
    for row in db.run("SELECT run::text, job_id::text, retry_count, pgid, outcome FROM executions"):
        runs.setdefault(row["job_id"], []).append(row)
    by_node: dict[str, list[int]] = {}
    for run in node_runs:
        by_node.setdefault(run["id"], []).append(int(run["retryCount"]))
    problems: list[str] = []
    lost = duplicates = reruns = expired_reruns = 0
    states: Counter[str] = Counter()
    for job_id in ids:
        job = jobs.get(job_id)
        if job is None or job["state"] not in ("completed", "failed"):
            lost += 1
            problems.append(f"{job_id}: {job and job['state']}")
            continue
        states[job["state"]] += 1
        mine = runs.get(job_id, [])
        completing = (job["output"] or {}).get("run")
        cut = [run for run in mine if run["pgid"] in killed and run["run"] != completing]
        reruns += len(cut)
        clean = [run for run in mine if run not in cut]
        attempts = Counter([run["retry_count"] for run in clean] + by_node.get(job_id, []))
        duplicates += sum(count - 1 for count in attempts.values())
        ok = [run for run in clean if run["outcome"] == "ok"]
        # Runs of a later attempt after an ok run are pg-boss retrying a job whose settle came
        # after its expire_seconds (a starved machine): re-runs, not duplicates.
        expired_reruns += max(0, len(ok) - 1)
        if job["state"] == "completed":
            if completing is not None and completing not in {run["run"] for run in mine}:
                problems.append(f"{job_id}: completed with output {job['output']} by no recorded run")
        elif job["retry_count"] != job["retry_limit"]:
            problems.append(f"{job_id}: failed at attempt {job['retry_count']} of {job['retry_limit']}")
    return {
        "lost": lost,
        "duplicates": duplicates,
        "reruns": reruns,
        "expired_reruns": expired_reruns,
        "states": dict(states),
        "runs": sum(len(r) for r in runs.values()),
        "node_runs": len(node_runs),
        "problems": problems,
    }


def test_sigkilled_drains_lose_nothing_and_run_nothing_twice(serve, db, database_url) -> None:
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    jobs = size(1200, 20_000)
    crashes_per_point = size(3, 30)
    chaos_seconds = size(25, 300)
    drains = [serve("drain", DRAIN_CONCURRENCY="4", DRAIN_BATCH_SIZE="4") for _ in range(3)]
    enqueue = serve("enqueue")
    assert drains[0].post({"queues": [QUEUE], "budgetSeconds": 0}, headers=DRAIN).status_code == 200
    stop, calm = threading.Event(), threading.Event()
    calls: Counter[str] = Counter()
    with NodeBoss(database_url, SCHEMA, supervise=True, schedule=False, migrate=False) as node:
        node.work(QUEUE, {"behavior": "complete", "output": {"by": "node"}}, batchSize=2, pollingIntervalSeconds=0.5)
        ids = enqueue_plan(enqueue, rng, jobs, crashes_per_point)
        started = time.monotonic()
        threads = [threading.Thread(target=schedule, args=(drain, stop, calls)) for drain in drains]
        threads.append(threading.Thread(target=chaos, args=(drains, calm, rng, (0.8, 2.5))))
        for thread in threads:
            thread.start()
        try:
            calm.wait(chaos_seconds)
            calm.set()
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                states = job_states(db, QUEUE)
                if sum(states.get(state, 0) for state in ("completed", "failed")) >= len(ids):
                    break
                time.sleep(0.5)
            elapsed = time.monotonic() - started
        finally:
            calm.set()
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
        node_runs = node.received(QUEUE)
    killed = {pgid for drain in drains for pgid in drain.killed_pgids + drain.died_pgids}
    result = tally(db, ids, node_runs, killed)
    chaos_kills = sum(len(drain.killed_pgids) for drain in drains)
    handler_kills = sum(len(drain.died_pgids) for drain in drains)
    add_figures(
        "crash (SIGKILL)",
        jobs=len(ids),
        kills_from_outside=chaos_kills,
        kills_inside_handlers=handler_kills,
        completed=result["states"].get("completed", 0),
        failed_per_retries=result["states"].get("failed", 0),
        python_runs=result["runs"],
        node_runs=result["node_runs"],
        runs_cut_by_crash=result["reruns"],
        reruns_after_expiry=result["expired_reruns"],
        lost=result["lost"],
        duplicates=result["duplicates"],
        seconds=round(elapsed, 1),
    )
    assert chaos_kills > 0 and handler_kills > 0, (chaos_kills, handler_kills, calls)
    assert result["node_runs"] > 0, "the Node worker took no job"
    assert result["lost"] == 0 and result["duplicates"] == 0 and not result["problems"], (seed, result, calls)
