"""Load: enqueue and webhook under concurrent load from locust in a second process, and a
backlog drained by concurrent drain instances beside a Node worker.

The figures (requests/s, p50/p99 latency in ms, errors, drain throughput) are reported,
not asserted: what is asserted is that every request locust saw accepted left exactly
one job in the table, and that the backlog ends with every job completed once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from shared.db import Database
from shared.pgboss.client import PgBoss
from shared.pgboss.models import JobRequest, SendOptions
from tests.conftest import ROOT, SCHEMA
from tests.reliability import app
from tests.reliability.support import API_KEY, DRAIN, WEBHOOK_SECRET, add_figures, job_states, size
from tests.support.node_boss import NodeBoss

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
LOAD_QUEUE = "load"
WEBHOOK_QUEUE = "document-process"


def percentile(histogram: dict[str, int], fraction: float) -> float:
    """From locust's histogram of rounded response times (ms -> count)."""
    points = sorted((float(ms), count) for ms, count in histogram.items())
    wanted = fraction * sum(count for _, count in points)
    seen = 0
    for ms, count in points:
        seen += count
        if seen >= wanted:
            return ms
    return points[-1][0] if points else 0.0


def run_locust(enqueue_url: str, webhook_url: str, users: int, per_user: int, seconds: int) -> list[dict[str, Any]]:
    env = {
        **os.environ,
        "LOAD_ENQUEUE_URL": enqueue_url.rstrip("/"),
        "LOAD_WEBHOOK_URL": webhook_url.rstrip("/"),
        "LOAD_QUEUE": LOAD_QUEUE,
        "LOAD_API_KEY": API_KEY,
        "LOAD_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "LOAD_REQUESTS_PER_USER": str(per_user),
    }
    locust = str(Path(sys.executable).parent / "locust")
    command = [locust, "-f", str(LOCUSTFILE), "--headless", "--users", str(users), "--spawn-rate", str(users)]
    command += ["--run-time", f"{seconds}s", "--stop-timeout", "10", "--json", "--skip-log", "--only-summary"]
    command += ["--exit-code-on-error", "0"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=seconds + 120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_enqueue_and_webhook_under_load_keep_every_accepted_job_once(serve, db) -> None:
    db.run(
        f"SELECT {SCHEMA}.create_queue(:name, :options::jsonb)",
        {"name": LOAD_QUEUE, "options": json.dumps({"policy": "standard"})},
    )
    enqueue, webhook = serve("enqueue"), serve("webhook")
    users, per_user, seconds = size(16, 50), size(150, 4000), size(30, 300)
    stats = {entry["name"]: entry for entry in run_locust(enqueue.url, webhook.url, users, per_user, seconds)}
    tables = {"enqueue": (LOAD_QUEUE, "seq"), "webhook": (WEBHOOK_QUEUE, "seq")}
    for name, (queue, key) in tables.items():
        entry = stats[name]
        accepted = entry["num_requests"] - entry["num_failures"]
        rows = db.run(
            f"SELECT count(*) AS n, count(DISTINCT data->>'{key}') AS distinct_n FROM {SCHEMA}.job WHERE name = :q",
            {"q": queue},
        )[0]
        elapsed = max(entry["last_request_timestamp"] - entry["start_time"], 1e-3)
        add_figures(
            f"load {name}",
            requests=entry["num_requests"],
            requests_per_s=round(entry["num_requests"] / elapsed),
            p50_ms=percentile(entry["response_times"], 0.50),
            p99_ms=percentile(entry["response_times"], 0.99),
            errors=entry["num_failures"],
            jobs_in_table=rows["n"],
        )
        assert entry["num_requests"] > 0
        assert rows["n"] == accepted == rows["distinct_n"], (name, accepted, rows)


def test_backlog_drained_by_drains_and_a_node_worker_loses_nothing(serve, db, database_url) -> None:
    jobs = size(6000, 100_000)
    drains = [serve("drain", DRAIN_CONCURRENCY="8", DRAIN_BATCH_SIZE="8") for _ in range(3)]
    assert drains[0].post({"queues": [app.QUEUE], "budgetSeconds": 0}, headers=DRAIN).status_code == 200
    boss = PgBoss(Database(database_url), SCHEMA)
    for start in range(0, jobs, 1000):
        batch = [JobRequest(app.QUEUE, {"seq": n}, SendOptions()) for n in range(start, min(start + 1000, jobs))]
        boss.insert(batch)
    boss.db.close()
    stop = threading.Event()
    calls: Counter[int] = Counter()

    def schedule(drain: Any) -> None:
        while not stop.is_set():
            calls[drain.post({"queues": [app.QUEUE], "budgetSeconds": 3}, headers=DRAIN, timeout=60).status_code] += 1

    with NodeBoss(database_url, SCHEMA, supervise=False, schedule=False, migrate=False) as node:
        started = time.monotonic()
        node.work(
            app.QUEUE, {"behavior": "complete", "output": {"by": "node"}}, batchSize=20, pollingIntervalSeconds=0.5
        )
        threads = [threading.Thread(target=schedule, args=(drain,)) for drain in drains]
        for thread in threads:
            thread.start()
        deadline = started + size(180, 1800)
        while job_states(db, app.QUEUE).get("completed", 0) < jobs and time.monotonic() < deadline:
            time.sleep(0.25)
        elapsed = time.monotonic() - started
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        node.off_work(app.QUEUE)
        by_node = Counter(job["id"] for job in node.received(app.QUEUE))
    by_python = Counter(row["job_id"] for row in db.run("SELECT job_id::text FROM executions"))
    runs = by_node + by_python
    completed = job_states(db, app.QUEUE).get("completed", 0)
    duplicates = sum(count - 1 for count in runs.values())
    add_figures(
        "backlog drain",
        jobs=jobs,
        drains=len(drains),
        jobs_per_s=round(completed / elapsed),
        seconds=round(elapsed, 1),
        by_python=sum(by_python.values()),
        by_node=sum(by_node.values()),
        lost=jobs - len(runs),
        duplicates=duplicates,
    )
    assert set(calls) == {200}, calls
    assert completed == jobs == len(runs) and duplicates == 0
