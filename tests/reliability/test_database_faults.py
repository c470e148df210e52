"""Database faults under load: backends terminated, the server restarted, statements timed out.

Callers must only ever see success or a retryable 503 (never a 500), a batch is
written whole or not at all, and the next call after the fault works again without
anyone restarting the function.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import requests

from shared.db import Database
from tests.conftest import SCHEMA
from tests.reliability import app
from tests.reliability.servers import Function
from tests.reliability.support import DRAIN, KEY, add_figures, job_states, size

QUEUE = app.QUEUE
BATCH = 5


class Load:
    """Threads sending enqueue batches with ids chosen here, recording every answer."""

    def __init__(self, targets: list[Function], threads: int) -> None:
        self.targets = targets
        self.stop = threading.Event()
        self.answers: list[tuple[int, list[str]]] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._send, args=(n,)) for n in range(threads)]

    def _send(self, number: int) -> None:
        target = self.targets[number % len(self.targets)]
        while not self.stop.is_set():
            ids = [str(uuid.uuid4()) for _ in range(BATCH)]
            body = {"jobs": [{"name": QUEUE, "data": {"ms": 0}, "options": {"id": job_id}} for job_id in ids]}
            try:
                status = target.post(body, headers=KEY, timeout=30).status_code
            except requests.RequestException:
                status = 0
            with self.lock:
                self.answers.append((status, ids))

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def statuses(self) -> Counter[int]:
        return Counter(status for status, _ in self.answers)


def check_batches(db: Database, answers: list[tuple[int, list[str]]]) -> dict[str, int]:
    """Every 201 batch is in the table once and whole; every other batch whole or not at all."""
    present = Counter(row["id"] for row in db.run(f"SELECT id::text FROM {SCHEMA}.job WHERE name = :q", {"q": QUEUE}))
    accepted = partial = written_despite_503 = 0
    for status, ids in answers:
        found = sum(present[job_id] for job_id in ids)
        assert all(present[job_id] <= 1 for job_id in ids)
        if status == 201:
            accepted += 1
            assert found == len(ids), f"an accepted batch is missing {len(ids) - found} jobs"
        elif found not in (0, len(ids)):
            partial += 1
        elif found:
            written_despite_503 += 1  # committed, then the answer was lost: the retry deduplicates
    assert partial == 0, f"{partial} refused batches were half written"
    return {"accepted": accepted, "committed_before_a_lost_answer": written_despite_503}


def recovers(target: Function, attempts: int = 3) -> int:
    """Calls until one is accepted; the number of 503s before it (a dead connection is noticed once)."""
    for failures in range(attempts):
        body = {"name": QUEUE, "data": {"ms": 0}}
        answer = target.post(body, headers=KEY)
        if answer.status_code == 201:
            return failures
        assert answer.status_code == 503, answer.text
    raise AssertionError(f"{target.target} did not recover within {attempts} calls")


def drain_all(drain: Function, db: Database, total: int, timeout: float = 60) -> None:
    """Drain until every job is completed, or failed after all its retries: an attempt cut
    by a fault (its handler's connection gone, or expired unsettled) counts as one of them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = drain.post({"queues": [QUEUE], "budgetSeconds": 0}, headers=DRAIN)
        assert answer.status_code in (200, 503), answer.text
        states = job_states(db, QUEUE)
        if states.get("completed", 0) + states.get("failed", 0) >= total:
            early = db.run(
                f"SELECT count(*) AS n FROM {SCHEMA}.job WHERE name = :q AND state = 'failed'"
                " AND retry_count < retry_limit",
                {"q": QUEUE},
            )
            assert early[0]["n"] == 0, f"{early[0]['n']} jobs failed before their retries ran out"
            return
        time.sleep(0.2)
    raise AssertionError(f"not every job settled: {job_states(db, QUEUE)}")


def drain_loop(drain: Function, stop: threading.Event, answers: Counter[int]) -> None:
    """Call ``drain`` back to back until ``stop``, counting its answers (0: no answer at all)."""
    while not stop.is_set():
        try:
            answers[drain.post({"queues": [QUEUE], "budgetSeconds": 0.5}, headers=DRAIN).status_code] += 1
        except requests.RequestException:
            answers[0] += 1


def test_terminated_backends_give_503_never_500_nor_half_a_batch(serve, db) -> None:
    seconds = size(8, 120)
    enqueues = [serve("enqueue") for _ in range(2)]
    drain = serve("drain")
    terminated = 0
    drain_answers: Counter[int] = Counter()
    stop = threading.Event()
    runner = threading.Thread(target=drain_loop, args=(drain, stop, drain_answers))
    with Load(enqueues, threads=6) as load:
        runner.start()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(random.uniform(0.05, 0.3))
            rows = db.run(
                "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity "
                "WHERE application_name = 'manda-processing' AND datname = current_database() "
                "AND pid <> pg_backend_pid()"
            )
            terminated += int(rows[0]["n"])
        stop.set()
    runner.join(timeout=60)
    statuses = load.statuses()
    figures = check_batches(db, load.answers)
    recovered = [recovers(target) for target in enqueues]
    add_figures(
        "pg_terminate_backend",
        backends_terminated=terminated,
        enqueue_calls=sum(statuses.values()),
        answers=dict(sorted(statuses.items())),
        drain_answers=dict(sorted(drain_answers.items())),
        **figures,
    )
    assert terminated > 0 and statuses[201] > 0 and statuses[503] > 0, statuses
    assert set(statuses) <= {201, 503}, statuses
    assert set(drain_answers) <= {200, 503}, drain_answers
    assert all(failures <= 1 for failures in recovered), recovered


def test_postgres_restart_gives_503_and_calls_recover(serve, db, cluster) -> None:
    restarts = size(2, 10)
    enqueues = [serve("enqueue") for _ in range(2)]
    drain = serve("drain")
    drain_answers: Counter[int] = Counter()
    stop = threading.Event()
    runner = threading.Thread(target=drain_loop, args=(drain, stop, drain_answers))
    with Load(enqueues, threads=4) as load:
        runner.start()
        for number in range(restarts):
            time.sleep(1.0)
            cluster.restart("immediate" if number % 2 else "fast")  # a clean stop, then a crash
        time.sleep(1.0)
        stop.set()
    runner.join(timeout=60)
    statuses = load.statuses()
    db.ping()  # the test's own connection died with the server too
    figures = check_batches(db, load.answers)
    recovered = [recovers(target) for target in enqueues]
    drain_all(drain, db, sum(job_states(db, QUEUE).values()))
    add_figures(
        "postgres restart",
        restarts=restarts,
        enqueue_calls=sum(statuses.values()),
        answers=dict(sorted(statuses.items())),
        drain_answers=dict(sorted(drain_answers.items())),
        calls_to_recover=max(recovered),
        failed_after_retries=job_states(db, QUEUE).get("failed", 0),
        **figures,
    )
    assert set(statuses) <= {201, 503}, statuses
    assert statuses[503] > 0, "no call met the restart"
    # A drain call that meets a restart may answer 503 or, having reconnected within its
    # budget, 200; never anything else.
    assert set(drain_answers) <= {200, 503} and drain_answers.total() > 0, drain_answers
    assert all(failures <= 1 for failures in recovered), recovered


@contextlib.contextmanager
def job_table_locked(db: Database, seconds: float) -> Iterator[None]:
    """Hold an exclusive lock on pg-boss's job table for ``seconds`` on a thread, from now."""
    taken = threading.Event()

    def hold() -> None:
        with db.transaction() as tx:
            tx.run(f"LOCK TABLE {SCHEMA}.job IN ACCESS EXCLUSIVE MODE")
            taken.set()
            time.sleep(seconds)

    holder = threading.Thread(target=hold)
    holder.start()
    taken.wait(10)
    try:
        yield
    finally:
        holder.join()


def test_statements_timed_out_mid_enqueue_and_mid_drain_give_503_and_recover(serve, db) -> None:
    enqueue = serve("enqueue", DB_STATEMENT_TIMEOUT_MS="300")
    drain = serve("drain", DB_STATEMENT_TIMEOUT_MS="300", DRAIN_MARGIN_SECONDS="2")
    assert enqueue.post({"name": QUEUE}, headers=KEY).status_code == 201
    before = job_states(db, QUEUE)
    with job_table_locked(db, 1.5):
        timed_out = enqueue.post({"jobs": [{"name": QUEUE, "data": {"n": n}} for n in range(5)]}, headers=KEY)
    assert timed_out.status_code == 503, timed_out.text
    assert int(timed_out.headers["Retry-After"]) > 0
    assert job_states(db, QUEUE) == before, "a timed-out batch left jobs behind"
    assert recovers(enqueue) == 0

    jobs = 12
    ids = enqueue.post({"jobs": [{"name": QUEUE, "data": {"ms": 400}} for _ in range(jobs)]}, headers=KEY).json()
    answers: list[int] = []
    caller = threading.Thread(
        target=lambda: answers.append(drain.post({"queues": [QUEUE], "budgetSeconds": 0}, headers=DRAIN).status_code)
    )
    caller.start()
    time.sleep(0.2)  # the jobs are claimed and their handlers run: the settle meets the lock
    with job_table_locked(db, 3.0):
        caller.join(timeout=30)
    assert answers and answers[0] in (200, 503), answers
    drain_all(drain, db, jobs + 1, timeout=60)
    runs = Counter(row["job_id"] for row in db.run("SELECT job_id::text FROM executions WHERE outcome = 'ok'"))
    assert all(runs[job_id] >= 1 for job_id in ids["ids"])
    add_figures(
        "statement timeout",
        enqueue_answer=timed_out.status_code,
        drain_answer=answers[0],
        jobs=jobs,
        completed=job_states(db, QUEUE).get("completed", 0),
        reruns_after_lost_settle=sum(runs[job_id] - 1 for job_id in ids["ids"]),
    )
