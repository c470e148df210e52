"""Overlapping drain calls: Cloud Scheduler delivering the same call twice at once, and calls
whose budgets overlap, on one instance and across instances. No job may run twice."""

from __future__ import annotations

import threading
import time
from collections import Counter

from tests.conftest import SCHEMA
from tests.reliability import app
from tests.reliability.support import DRAIN, KEY, add_figures, job_states, size

QUEUE = app.QUEUE


def test_duplicate_and_overlapping_drain_calls_run_each_job_once(serve, db) -> None:
    jobs = size(1500, 30_000)
    seconds = size(12, 300)
    drains = [serve("drain", DRAIN_CONCURRENCY="4", DRAIN_BATCH_SIZE="4") for _ in range(2)]
    enqueue = serve("enqueue")
    for start in range(0, jobs, 100):
        batch = [{"name": QUEUE, "data": {"ms": (start + n) % 7}} for n in range(100)]
        assert enqueue.post({"jobs": batch}, headers=KEY).status_code == 201
    answers: Counter[int] = Counter()
    lock = threading.Lock()

    def call(target: int) -> None:
        status = drains[target].post({"queues": [QUEUE], "budgetSeconds": 3}, headers=DRAIN, timeout=60).status_code
        with lock:
            answers[status] += 1

    deliveries: list[threading.Thread] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        # The same call delivered twice at once to one instance, and once more to the other.
        for target in (0, 0, 1):
            thread = threading.Thread(target=call, args=(target,))
            thread.start()
            deliveries.append(thread)
        time.sleep(1.0)  # a new delivery every second while each lasts three: calls overlap
    for thread in deliveries:
        thread.join(timeout=60)
    while job_states(db, QUEUE).get("completed", 0) < jobs and answers[200] < 10_000:
        call(0)
    rows = db.run("SELECT job_id::text, retry_count FROM executions")
    runs = Counter(row["job_id"] for row in rows)
    # Two runs of one attempt is a duplicate; a later attempt is pg-boss retrying a job that
    # outlived its expire_seconds (a starved machine), counted apart.
    attempts = Counter((row["job_id"], row["retry_count"]) for row in rows)
    completed = db.run(f"SELECT count(*) AS n FROM {SCHEMA}.job WHERE name = :q AND state = 'completed'", {"q": QUEUE})
    duplicates = sum(count - 1 for count in attempts.values())
    reruns_after_expiry = len(rows) - len(attempts)
    add_figures(
        "overlapping drains",
        jobs=jobs,
        drain_calls=sum(answers.values()),
        answers=dict(answers),
        completed=completed[0]["n"],
        lost=jobs - len(runs),
        duplicates=duplicates,
        reruns_after_expiry=reruns_after_expiry,
    )
    assert set(answers) == {200}, answers
    assert completed[0]["n"] == jobs and len(runs) == jobs and duplicates == 0
