"""Contract §8 #21 / §7: one Node worker and two Python drain loops race over one queue.

5,000 jobs (half sent by each client) are drained at once by a pg-boss ``work()`` worker and
two Python threads, each with its own connection and ``PgBoss``, looping fetch(batch)/complete.
Every claim is recorded on the side that made it. Afterwards: each job was claimed exactly once
(no claim on two sides, none twice on one side), all are completed, none were re-claimed
(``retry_count`` 0), and each job's output names the Python loop that completed it, or is
empty for Node's (pg-boss's ``work()`` stores no output for a batch of more than one).
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from shared.db import Database
from shared.pgboss.client import PgBoss
from shared.pgboss.models import JobRequest
from tests.interop.actors import node_expire, node_insert
from tests.support.node_boss import NodeBoss

JOBS = 5_000
BATCH = 10
TIMEOUT = 120.0


def _drain(url: str, name: str, start: threading.Barrier, claims: list[str], errors: list[BaseException]) -> None:
    db = Database(url)
    boss = PgBoss(db, "pgboss")
    try:
        start.wait()
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            jobs = boss.fetch("race", BATCH)
            if not jobs:
                left = db.run("SELECT count(*) AS n FROM pgboss.job WHERE name = 'race' AND state < 'completed'")
                if left[0]["n"] == 0:
                    return
                time.sleep(0.005)
                continue
            claims.extend(job.id for job in jobs)
            done = boss.complete("race", [(job, {"by": name}) for job in jobs])
            assert len(done) == len(jobs), f"{name}: completed {len(done)} of {len(jobs)} claims"
        raise TimeoutError(f"{name} did not finish in {TIMEOUT}s")
    except BaseException as error:  # reported by the test thread
        errors.append(error)
    finally:
        db.close()


@pytest.mark.slow
def test_node_worker_and_two_python_loops_drain_without_duplicates(
    database_url: str, node_boss: NodeBoss, boss: PgBoss, db: Database
) -> None:
    node_boss.call("createQueue", "race")
    ours = boss.insert([JobRequest("race", {"n": n}) for n in range(JOBS // 2)])
    theirs = node_insert(node_boss, db, "race", [{"data": {"n": n}} for n in range(JOBS // 2, JOBS)])
    sent = set(ours) | set(theirs)
    assert len(sent) == JOBS

    claims: dict[str, list[str]] = {"py1": [], "py2": []}
    errors: list[BaseException] = []
    start = threading.Barrier(3)
    threads = [
        threading.Thread(target=_drain, args=(database_url, name, start, claims[name], errors), daemon=True)
        for name in claims
    ]
    for thread in threads:
        thread.start()
    node_boss.work(
        "race", {"behavior": "complete"}, batchSize=BATCH, pollingIntervalSeconds=0.5, burstWhenBatchFull=True
    )
    start.wait()
    for thread in threads:
        thread.join(TIMEOUT + 10)
    assert not errors, errors
    node_boss.off_work("race")
    claims["node"] = [job["id"] for job in node_boss.received("race")]

    every = Counter(job_id for side in claims.values() for job_id in side)
    twice = {job_id: n for job_id, n in every.items() if n > 1}
    assert not twice, f"{len(twice)} jobs claimed more than once"
    assert set(every) == sent, f"lost: {len(sent - set(every))}, unknown: {len(set(every) - sent)}"
    for side, ids in claims.items():
        assert ids, f"{side} claimed nothing; the race did not happen"

    rows = db.run("SELECT id::text, state::text, retry_count, output FROM pgboss.job WHERE name = 'race'")
    assert len(rows) == JOBS
    assert {row["state"] for row in rows} == {"completed"}
    assert {row["retry_count"] for row in rows} == {0}
    by_output = {row["id"]: (row["output"] or {}).get("by", "node") for row in rows}
    for side, ids in claims.items():
        assert {by_output[job_id] for job_id in ids} == {side}
    print("claims per side:", {side: len(ids) for side, ids in claims.items()})


SETTLE_JOBS = 400


def _settle_in_batches(settle: object, claims: list, start: threading.Barrier, errors: list) -> None:
    try:
        start.wait()
        for i in range(0, len(claims), 20):
            settle(claims[i : i + 20])  # type: ignore[operator]
    except BaseException as error:  # reported by the test thread
        errors.append(error)


@pytest.mark.parametrize(
    "ours, theirs", [("fail", "fail"), ("complete", "fail"), ("fail", "expire"), ("expire", "expire")]
)
def test_racing_settles_on_the_same_claims_settle_each_job_once(
    ours: str, theirs: str, database_url: str, node_boss: NodeBoss, boss: PgBoss, db: Database
) -> None:
    """Both clients settle the same claims at the same moment; the fence and the row locks must
    let exactly one settle win per job: one final state, one dead-letter copy per failed job."""
    node_boss.call("createQueue", "dlq")
    node_boss.call("createQueue", "q", {"retryLimit": 0, "deadLetter": "dlq", "expireInSeconds": 1})
    boss.insert([JobRequest("q", {"n": n}) for n in range(SETTLE_JOBS)])
    jobs = boss.fetch("q", SETTLE_JOBS)
    assert len(jobs) == SETTLE_JOBS
    db.run("UPDATE pgboss.job SET started_on = started_on - interval '1 minute' WHERE name = 'q'")

    # Our side runs on its own connection and thread; pg-boss's calls go through the driver.
    own = PgBoss(Database(database_url), "pgboss")
    error = {"name": "Error", "message": "boom", "stack": "Error: boom"}
    python_settle = {
        "fail": lambda batch: own.fail("q", [(job, error) for job in batch]),
        "complete": lambda batch: own.complete("q", [(job, {"by": "python"}) for job in batch]),
        "expire": lambda batch: own.fail_expired("q"),
    }[ours]
    # pg-boss settles by id and attempt from 12.35 (schema 43); before, by id only.
    if boss.capabilities.schema_version >= 43:
        fence: list[object] = [{"id": job.id, "retryCount": job.retry_count} for job in jobs]
    else:
        fence = [job.id for job in jobs]
    released = False

    def node_settle(batch: list) -> None:
        nonlocal released
        if theirs == "fail":
            node_boss.call("fail", "q", batch, error)
        elif not released:
            released = True
            node_expire(node_boss, db, "q", boss.capabilities.schema_version)

    errors: list[BaseException] = []
    start = threading.Barrier(2)
    threads = [
        threading.Thread(target=_settle_in_batches, args=(python_settle, jobs, start, errors)),
        threading.Thread(target=_settle_in_batches, args=(node_settle, fence, start, errors)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    own.db.close()
    assert not errors, errors

    rows = db.run("SELECT state::text, count(*)::int AS n FROM pgboss.job WHERE name = 'q' GROUP BY 1")
    states = {row["state"]: row["n"] for row in rows}
    assert sum(states.values()) == SETTLE_JOBS
    assert set(states) <= {"completed", "failed"}
    copies = db.run(
        "SELECT count(*)::int AS n, count(DISTINCT data ->> 'n')::int AS sources FROM pgboss.job WHERE name = 'dlq'"
    )[0]
    assert copies["n"] == copies["sources"] == states.get("failed", 0)
    print(f"{ours} vs {theirs}:", states)
