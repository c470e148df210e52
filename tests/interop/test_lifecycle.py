"""Delays, priorities, throttling, cancel/resume and deletion across both clients.

Contract §8: #3 (delayTest), #4 (priorityTest), #15 (throttleTest), #17 (cancelTest,
resumeTest), #18 (deleteTest). One client writes, the other must see the effect, both ways.

Not covered, and why:

* ``minPriority``/``maxPriority`` (priorityTest): fetch filters that only Node workers take;
  our ``fetch`` has no such option, so there is nothing of ours to compare. Node's filter
  over jobs we sent is still checked below.
* Retention deletion (#18) runs only in Node's maintenance pass; our client has no sweep, so
  that scenario runs one way: we send and settle, pg-boss's maintenance deletes.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from shared.db import Database
from shared.pgboss.capabilities import Capabilities
from tests.interop.actors import Actor, NodeActor, fenced_by_attempt, release_maintenance_claim, unfenced
from tests.interop.conftest import Names, Twin
from tests.interop.rows import age, job_row, seconds_until_start, state_of
from tests.support.node_boss import NodeBoss
from tests.support.releases import version_key

ERROR = {"name": "Error", "message": "boom", "stack": "Error: boom"}
SLOT = 300


def _clear_of_slot_edge(db: Database, seconds: int = SLOT, margin: float = 3.0) -> None:
    """Wait until the current throttle slot has ``margin`` seconds left, so a test's sends all
    land in one slot (pg-boss's own tests use 300 s slots for the same reason)."""
    left = db.run(
        "SELECT (:s - mod(extract(epoch FROM clock_timestamp())::numeric, :s))::float8 AS left",
        {"s": seconds},
    )[0]["left"]
    if left < margin:
        time.sleep(left + 0.1)


# -- #3 delays ---------------------------------------------------------------------------------


def test_delayed_job_waits_for_start_after(actor: Actor, observer: Actor, db: Database) -> None:
    observer.create_queue("q")
    # A UTC time ending in Z: before 12.28 pg-boss reads no other date form.
    at = (datetime.now(UTC) + timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    by_seconds = actor.send("q", {"by": "seconds"}, startAfter=1)
    by_date = actor.send("q", {"by": "date"}, startAfter=at)
    assert observer.fetch("q", 5) == []
    time.sleep(max(seconds_until_start(db, "q", by_seconds), seconds_until_start(db, "q", by_date), 0) + 0.05)
    claims = observer.fetch("q", 5)
    assert sorted(c.id for c in claims) == sorted([by_seconds, by_date])


# -- #4 priority -------------------------------------------------------------------------------


def test_fetch_order_is_priority_then_age(actor: Actor, observer: Actor) -> None:
    observer.create_queue("q")
    order = [("low", 1), ("high", 5), ("mid", 3), ("high later", 5), ("none", 0), ("negative", -1)]
    for tag, priority in order:
        actor.send("q", {"tag": tag}, priority=priority)
    fetched = [observer.fetch("q")[0].data["tag"] for _ in order]
    assert fetched == ["high", "high later", "mid", "low", "none", "negative"]


def test_node_priority_filters_apply_to_our_jobs(python_actor: Actor, node_actor: NodeActor) -> None:
    if version_key(node_actor.release) < (12, 15):
        pytest.skip(f"pg-boss {node_actor.release} has no minPriority/maxPriority fetch options (from 12.15.0)")
    python_actor.create_queue("q")
    for priority in (1, 5, 10):
        python_actor.send("q", {"p": priority}, priority=priority)
    assert [c.data["p"] for c in node_actor.fetch("q", 5, minPriority=6)] == [10]
    assert [c.data["p"] for c in node_actor.fetch("q", 5, maxPriority=2)] == [1]


# -- #15 throttle and debounce ------------------------------------------------------------------


def test_throttle_allows_one_job_per_slot(actor: Actor, observer: Actor, db: Database) -> None:
    observer.create_queue("q")
    _clear_of_slot_edge(db)
    first = actor.send("q", {"n": 1}, singletonSeconds=SLOT)
    assert first
    assert observer.send("q", {"n": 2}, singletonSeconds=SLOT) is None
    assert actor.send("q", {"n": 3}, singletonSeconds=SLOT) is None
    assert observer.send("q", {"n": 4}, singletonSeconds=SLOT, singletonKey="other")
    slot = db.run(
        "SELECT singleton_on = 'epoch'::timestamp + make_interval(secs => :s * floor(extract(epoch FROM"
        " created_on) / :s)) AS aligned FROM pgboss.job WHERE id = CAST(:id AS uuid)",
        {"s": SLOT, "id": first},
    )
    assert slot == [{"aligned": True}]


def test_finished_job_keeps_its_slot_until_cancelled(actor: Actor, observer: Actor, db: Database) -> None:
    observer.create_queue("q")
    _clear_of_slot_edge(db)
    first = actor.send("q", None, singletonKey="a", singletonSeconds=SLOT)
    [claim] = observer.fetch("q")
    assert observer.complete("q", [claim]) == 1
    assert actor.send("q", None, singletonKey="a", singletonSeconds=SLOT) is None
    assert observer.send("q", None, singletonKey="a", singletonSeconds=SLOT) is None
    # A cancelled job frees its slot (i4 leaves cancelled jobs out); completed ones cannot be.
    second = observer.send("q", None, singletonKey="b", singletonSeconds=SLOT)
    assert actor.cancel("q", [second, first]) == 1
    assert actor.send("q", None, singletonKey="b", singletonSeconds=SLOT)


def test_debounce_files_the_second_job_in_the_next_slot(actor: Actor, observer: Actor, db: Database) -> None:
    observer.create_queue("q")
    _clear_of_slot_edge(db)
    first = actor.send("q", {"n": 1}, singletonSeconds=SLOT, singletonNextSlot=True)
    second = observer.send("q", {"n": 2}, singletonSeconds=SLOT, singletonNextSlot=True)
    assert first and second
    assert actor.send("q", {"n": 3}, singletonSeconds=SLOT, singletonNextSlot=True) is None
    assert observer.send("q", {"n": 4}, singletonSeconds=SLOT, singletonNextSlot=True) is None
    rows = db.run(
        "SELECT id::text, extract(epoch FROM singleton_on)::float8 AS slot,"
        " extract(epoch FROM start_after)::float8 AS start"
        " FROM pgboss.job WHERE name = 'q' ORDER BY singleton_on"
    )
    assert [row["id"] for row in rows] == [first, second]
    assert rows[1]["slot"] - rows[0]["slot"] == SLOT
    # Due about a second after its slot opens: S - whole seconds elapsed + 1, from the send.
    assert 1.0 <= rows[1]["start"] - rows[1]["slot"] < 2.2
    assert observer.fetch("q", 5)[0].id == first
    assert actor.fetch("q", 5) == []


def test_throttled_rows_match_pg_boss(twin: Twin, db: Database) -> None:
    _clear_of_slot_edge(db)

    def scenario(actor: Actor, names: Names) -> list[bool]:
        actor.create_queue(names("q"))
        sent = [
            actor.send(names("q"), {"tag": f"throttle {n}"}, singletonSeconds=SLOT, singletonKey="k") for n in range(2)
        ]
        sent += [
            actor.send(names("q"), {"tag": f"debounce {n}"}, singletonSeconds=SLOT, singletonNextSlot=True)
            for n in range(3)
        ]
        return [job_id is not None for job_id in sent]

    run = twin(scenario)
    assert run.results["python"] == run.results["node"] == [True, False, True, True, False]
    run.assert_same()


# -- #17 cancel and resume -----------------------------------------------------------------------


def test_cancel_and_resume(actor: Actor, observer: Actor, db: Database) -> None:
    observer.create_queue("q")
    pending = observer.send("q", {"n": 1}, startAfter=60)
    queued = observer.send("q", {"n": 2})
    done = observer.send("q", {"n": 3}, priority=9)
    [claim] = observer.fetch("q")
    assert claim.id == done
    observer.complete("q", [claim])

    assert actor.cancel("q", [pending, queued, done]) == 2  # a completed job stays completed
    for job_id in (pending, queued):
        row = job_row(db, "q", job_id)
        assert row["state"] == "cancelled" and row["completed_on"] is not None
    assert state_of(db, "q", done) == "completed"
    assert observer.fetch("q", 5) == []

    assert observer.resume("q", [pending, queued, done]) == 2
    for job_id in (pending, queued):
        row = job_row(db, "q", job_id)
        assert (row["state"], row["completed_on"]) == ("created", None)
    assert seconds_until_start(db, "q", queued) <= 0  # start_after moved up to now
    assert 0 < seconds_until_start(db, "q", pending) <= 60  # a future start is kept
    [claim] = actor.fetch("q", 5)
    assert claim.id == queued


def test_cancelling_an_active_job_fences_its_worker(actor: Actor, observer: Actor, db: Database) -> None:
    observer.create_queue("q")
    job_id = observer.send("q")
    [claim] = observer.fetch("q")
    assert actor.cancel("q", [job_id]) == 1
    assert observer.complete("q", [claim]) == 0
    assert actor.resume("q", [job_id]) == 1
    [again] = observer.fetch("q")
    # It ran before, so the new claim is a new attempt.
    assert (again.id, again.retry_count) == (job_id, 1)
    if not fenced_by_attempt(observer):
        pytest.skip(unfenced(observer))
    assert observer.complete("q", [claim]) == 0
    assert observer.complete("q", [again]) == 1


def test_cancel_resume_rows_match_pg_boss(twin: Twin, node_actor: NodeActor) -> None:
    def scenario(actor: Actor, names: Names) -> list[int]:
        node_actor.create_queue(names("q"))
        ids = [
            node_actor.send(names("q"), {"tag": tag}, startAfter=delay, priority=priority)
            for tag, delay, priority in (("now", 0, 0), ("later", 120, 0), ("active", 0, 1), ("kept", 0, 0))
        ]
        [claim] = node_actor.fetch(names("q"))
        assert claim.id == ids[2]
        return [actor.cancel(names("q"), ids[:3]), actor.resume(names("q"), ids[1:])]

    run = twin(scenario)
    assert run.results["python"] == run.results["node"] == [3, 2]
    run.assert_same()


# -- #18 deletion ---------------------------------------------------------------------------------


def test_pg_boss_maintenance_deletes_what_we_finished(
    python_actor: Actor, node_boss: NodeBoss, db: Database, caps: Capabilities
) -> None:
    if caps.archive:
        pytest.skip(
            "pg-boss 10.x has no deleteAfterSeconds: its maintenance moves finished jobs to its archive"
            " table after one instance-wide interval (tests/versions/test_archive_family.py covers that)"
        )
    # A job's own retentionSeconds (26+); on 25 the queues' retention sets the same keep_until.
    retention = {"retentionSeconds": 1}
    per_job, per_queue = (retention, {}) if caps.retention_per_job else ({}, retention)
    python_actor.create_queue("q", deleteAfterSeconds=1, **per_queue)
    python_actor.create_queue("keep", deleteAfterSeconds=0, **per_queue)
    gone = python_actor.send("q", {"n": 1})
    own_setting = python_actor.send("keep", {"n": 2}, deleteAfterSeconds=1)
    kept = python_actor.send("keep", {"n": 3})
    never_ran = python_actor.send("q", {"n": 4}, priority=-1, **per_job)
    running = python_actor.send("keep", {"n": 5}, priority=-1, **per_job)
    for queue, count in (("q", 1), ("keep", 2)):
        claims = python_actor.fetch(queue, count)
        assert python_actor.complete(queue, claims) == count
    [active] = python_actor.fetch("keep")
    assert active.id == running
    for queue in ("q", "keep"):
        age(db, queue, "completed_on", 2)
        age(db, queue, "keep_until", 2)
        release_maintenance_claim(db, queue)
        node_boss.call("supervise", queue)
    assert job_row(db, "q", gone) is None
    assert job_row(db, "keep", own_setting) is None  # the job's own deleteAfterSeconds counts
    if caps.schema_version >= 27:  # 12.8: deleteAfterSeconds 0 means never
        assert state_of(db, "keep", kept) == "completed"
    else:  # 11.0-12.5: 0 means no delay
        assert job_row(db, "keep", kept) is None
    assert job_row(db, "q", never_ran) is None  # queued past keep_until: dropped
    assert state_of(db, "keep", running) == "active"  # active jobs are never dropped


def test_delete_jobs_in_any_state(actor: Actor, observer: Actor, db: Database) -> None:
    observer.create_queue("q", retryLimit=0)
    ids = observer.insert("q", [{"data": {"n": n}} for n in range(4)])
    claims = observer.fetch("q", 3)
    observer.complete("q", claims[:1])
    observer.fail("q", claims[1:2])
    assert actor.delete("q", ids) == 4
    assert actor.delete("q", ids) == 0
    assert db.run("SELECT count(*) AS n FROM pgboss.job")[0]["n"] == 0
    assert observer.complete("q", claims[2:]) == 0


@pytest.mark.parametrize("verb", ["cancel", "resume", "retry", "delete"])
def test_job_verbs_address_jobs_by_queue_and_id(verb: str, actor: Actor, observer: Actor, db: Database) -> None:
    """Ids are unique per queue only: a verb on queue A never touches the same id in queue B."""
    observer.create_queue("a", retryLimit=0)
    observer.create_queue("b", retryLimit=0)
    shared_id = observer.send("a", {"q": "a"})
    assert observer.send("b", {"q": "b"}, id=shared_id) == shared_id
    for queue in ("a", "b"):
        if verb == "retry":
            observer.fail(queue, observer.fetch(queue), ERROR)
        elif verb == "resume":
            observer.cancel(queue, [shared_id])
    before = job_row(db, "b", shared_id)
    assert getattr(actor, verb)("a", [shared_id]) == 1
    assert job_row(db, "b", shared_id) == before
