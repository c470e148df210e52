"""Claiming and settling: pg-boss sends, each client fetches/completes/fails, rows must agree.

Two shapes of test (contract §4-§5, §8 #5-#12, #22):

* ``twin``: pg-boss sends the same jobs into two namespaces; our client works one, pg-boss the
  other, with the same verbs in the same order; the job tables must then agree (states,
  retry_count, outputs, the start_after window, dead-letter copies).
* ``actor``/``observer``: one client settles, the other must see the outcome: a retry is not
  fetchable before its delay and is after, a dead-lettered job can be fetched from its
  dead-letter queue, a late settle after expiry changes nothing.

Waiting for time to pass is replaced by ageing the row (``rows.age``) wherever the delay
itself was already measured; only the delay-window tests sleep, and only about a second.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from shared.db import Database
from shared.pgboss.capabilities import Capabilities
from tests.interop.actors import Actor, NodeActor, fenced_by_attempt, unfenced
from tests.interop.conftest import Names, Twin, supported, supported_queue
from tests.interop.rows import age, database_clock, expire_seconds, job_row, seconds_until_start, start_after_epoch

ERROR = {"name": "Error", "message": "boom", "stack": "Error: boom\n    at handler (worker.js:1:1)"}
TIMED_OUT = {"value": {"message": "job timed out"}}
TIMED_OUT_10 = {"value": {"message": "job failed by timeout in active state"}}
HEARTBEAT_LOST = {"value": {"message": "job heartbeat timeout"}}


def _timed_out(caps: Capabilities) -> dict[str, Any]:
    """The output expiry leaves on a job: 10.x words it differently."""
    return TIMED_OUT_10 if caps.archive else TIMED_OUT


def _shared_table(caps: Capabilities, partition: bool) -> None:
    if caps.archive and not partition:
        pytest.skip("pg-boss 10.x gives every queue its own partition: there is no shared job_common")


# Timestamps are stored to the microsecond; readings and rounding may differ by that much.
CLOCK_SLACK = 0.001


def _send_each(node: Actor, queue: str, tags: list[str], **options: Any) -> dict[str, str]:
    """One send per job, so created_on orders them (a batch insert would tie)."""
    return {tag: node.send(queue, {"tag": tag}, **options) for tag in tags}


# -- fetch ------------------------------------------------------------------------------------


def test_batch_fetch_claims_the_same_jobs_the_same_way(twin: Twin, node_actor: NodeActor, caps: Capabilities) -> None:
    def scenario(actor: Actor, names: Names) -> list[str]:
        node_actor.create_queue(names("q"))
        _send_each(node_actor, names("q"), ["a", "b", "c", "d", "e"])
        node_actor.send(names("q"), {"tag": "late"}, startAfter=60)
        node_actor.send(names("q"), {"tag": "urgent"}, priority=5)
        claims = actor.fetch(names("q"), 3)
        return sorted(claim.data["tag"] for claim in claims)

    run = twin(scenario)
    # Priority first, then creation order; a deferred job is not due. (Neither client returns
    # the batch itself in that order: UPDATE … RETURNING has none.)
    assert run.results["python"] == run.results["node"] == ["a", "b", "urgent"]
    run.assert_same()
    states = {row["data"]["tag"]: row for row in run.ours}
    for tag in ("urgent", "a", "b"):
        assert states[tag]["state"] == "active"
        assert states[tag]["started_on"] is not None
        assert (states[tag].get("heartbeat_on") is not None) == caps.heartbeats  # heartbeats: 30+
        assert states[tag]["retry_count"] == 0
    assert {states[tag]["state"] for tag in ("c", "d", "e", "late")} == {"created"}


# -- complete ---------------------------------------------------------------------------------

OUTPUTS: list[tuple[str, Any]] = [
    ("object", {"ok": True, "nested": {"list": [1, 2]}}),
    ("empty object", {}),
    ("string", "done"),
    ("number", 42),
    ("zero", 0),
    ("false", False),
    ("array", [1, "two"]),
    ("none", None),
]


def test_complete_stores_outputs_as_pg_boss_does(twin: Twin, node_actor: NodeActor) -> None:
    def scenario(actor: Actor, names: Names) -> list[int]:
        node_actor.create_queue(names("q"))
        _send_each(node_actor, names("q"), [tag for tag, _ in OUTPUTS])
        claims = {claim.data["tag"]: claim for claim in actor.fetch(names("q"), len(OUTPUTS))}
        return [actor.complete(names("q"), [claims[tag]], output) for tag, output in OUTPUTS]

    run = twin(scenario)
    assert run.results["python"] == run.results["node"] == [1] * len(OUTPUTS)
    run.assert_same()
    outputs = {row["data"]["tag"]: row["output"] for row in run.ours}
    assert outputs["object"] == {"ok": True, "nested": {"list": [1, 2]}}
    assert outputs["string"] == {"value": "done"}
    assert outputs["array"] == {"value": [1, "two"]}
    assert outputs["none"] is None


def test_completing_a_batch_settles_every_job(actor: Actor, observer: Actor, db: Database) -> None:
    observer.create_queue("q")
    ids = observer.insert("q", [{"data": {"n": n}} for n in range(10)])
    claims = actor.fetch("q", 10)
    assert sorted(claim.id for claim in claims) == sorted(ids)
    assert actor.complete("q", claims, {"batch": True}) == 10
    assert {job_row(db, "q", job_id)["state"] for job_id in ids} == {"completed"}
    # Settling again is a no-op either way: the fence needs the job still active.
    assert observer.complete("q", claims) == 0
    assert observer.fail("q", claims, ERROR) == 0


# -- fail -------------------------------------------------------------------------------------

ERRORS: list[tuple[str, Any]] = [
    ("error object", ERROR),
    ("string", "went wrong"),
    ("number", 500),
    ("none", None),
]


def test_fail_stores_errors_and_schedules_retries_as_pg_boss_does(
    twin: Twin, node_actor: NodeActor, caps: Capabilities
) -> None:
    def scenario(actor: Actor, names: Names) -> None:
        node_actor.create_queue(names("q"), retryLimit=1, retryDelay=30)
        _send_each(node_actor, names("q"), [tag for tag, _ in ERRORS])
        node_actor.send(names("q"), {"tag": "last try"}, retryLimit=0)
        claims = {claim.data["tag"]: claim for claim in actor.fetch(names("q"), len(ERRORS) + 1)}
        for tag, error in ERRORS:
            actor.fail(names("q"), [claims[tag]], error)
        actor.fail(names("q"), [claims["last try"]], ERROR)

    run = twin(scenario)
    run.assert_same()
    rows = {row["data"]["tag"]: row for row in run.ours}
    assert rows["error object"]["output"] == ERROR
    assert rows["string"]["output"] == {"value": "went wrong"}
    assert rows["none"]["output"] is None
    for tag, _ in ERRORS:
        row = rows[tag]
        assert (row["state"], row["retry_count"], row["completed_on"], row.get("heartbeat_on")) == (
            "retry",
            0,
            None,
            None,
        )
        assert row["started_on"] is not None
    assert rows["last try"]["state"] == "failed" and rows["last try"]["completed_on"] is not None


def test_python_exception_is_stored_like_a_node_error(
    python_actor: Actor, node_actor: NodeActor, node_boss: Any, db: Database
) -> None:
    python_actor.create_queue("q", retryLimit=0)
    job_id = python_actor.send("q", {"n": 1})
    [claim] = python_actor.fetch("q")
    try:
        raise ValueError("bad input")
    except ValueError as error:
        python_actor.fail("q", [claim], error)
    ours = job_row(db, "q", job_id)["output"]

    node_actor.create_queue("node", retryLimit=0)
    node_id = node_actor.send("node", {"n": 1})
    node_boss.work("node", {"behavior": "fail", "error_message": "bad input"}, pollingIntervalSeconds=0.5)
    node_boss.wait_received("node", 1)
    deadline = time.monotonic() + 10
    while job_row(db, "node", node_id)["state"] != "failed" and time.monotonic() < deadline:
        time.sleep(0.05)
    theirs = job_row(db, "node", node_id)["output"]

    assert set(ours) == set(theirs) == {"name", "message", "stack"}
    assert (ours["name"], ours["message"]) == ("ValueError", "bad input")
    assert theirs["message"] == "bad input"
    assert "ValueError: bad input" in ours["stack"]


def test_retry_waits_its_fixed_delay(actor: Actor, observer: Actor, db: Database) -> None:
    observer.create_queue("q", retryLimit=2, retryDelay=1)
    job_id = observer.send("q", {"n": 1})
    [claim] = actor.fetch("q")
    before = database_clock(db)
    actor.fail("q", [claim], ERROR)
    after = database_clock(db)
    assert job_row(db, "q", job_id)["state"] == "retry"
    # The failure happened between the two readings, and the delay counts from it.
    due = start_after_epoch(db, "q", job_id)
    assert due - after <= 1.0 + CLOCK_SLACK and due - before >= 1.0 - CLOCK_SLACK
    assert observer.fetch("q") == []
    time.sleep(max(seconds_until_start(db, "q", job_id), 0) + 0.05)
    [again] = observer.fetch("q")
    assert (again.id, again.retry_count) == (job_id, 1)


def test_retry_delay_matches_pg_boss(twin: Twin, node_actor: NodeActor, db: Database) -> None:
    def scenario(actor: Actor, names: Names) -> None:
        node_actor.create_queue(names("q"), retryLimit=3, retryDelay=40)
        node_actor.send(names("q"), {"tag": "queue delay"})
        node_actor.send(names("q"), {"tag": "own delay"}, retryDelay=90)
        node_actor.send(names("q"), {"tag": "no delay"}, retryDelay=0)
        actor.fail(names("q"), actor.fetch(names("q"), 3), ERROR)

    run = twin(scenario)
    run.assert_same()
    delays = {row["data"]["tag"]: row["start_after"] - row["started_on"] for row in run.ours}
    assert delays == pytest.approx({"queue delay": 40, "own delay": 90, "no delay": 0}, abs=1)


def test_backoff_without_delay_waits_one_to_two_seconds(
    actor: Actor, observer: Actor, db: Database, caps: Capabilities
) -> None:
    observer.create_queue("q")
    ids = observer.insert("q", [{"data": {"n": n}, "retryLimit": 1, "retryBackoff": True} for n in range(20)])
    claims = actor.fetch("q", 20)
    assert len(claims) == 20
    before = database_clock(db)
    actor.fail("q", claims, ERROR)
    after = database_clock(db)
    # Each delay lies in [1, 2) and counts from the failure, which happened between the readings;
    # 27-36 (12.6-12.25) multiply the growth by retry_delay: a zero delay retries at once.
    dues = [start_after_epoch(db, "q", job_id) for job_id in ids]
    if 27 <= caps.schema_version <= 36:
        assert all(before - CLOCK_SLACK <= due <= after + CLOCK_SLACK for due in dues), (before, after, dues)
        assert len(observer.fetch("q", 20)) == 20
        return
    assert all(due - before >= 1.0 - CLOCK_SLACK and due - after < 2.0 for due in dues), (before, after, dues)
    assert observer.fetch("q") == []


def test_backoff_doubles_and_is_capped(actor: Actor, observer: Actor, db: Database, caps: Capabilities) -> None:
    observer.create_queue("q")
    job_id = observer.send(
        "q", None, **supported(caps, {"retryLimit": 5, "retryDelay": 1, "retryBackoff": True, "retryDelayMax": 5})
    )
    waits = []
    for attempt in range(5):
        [claim] = actor.fetch("q")
        assert claim.retry_count == attempt
        before = database_clock(db)
        actor.fail("q", [claim], ERROR)
        after = database_clock(db)
        due = start_after_epoch(db, "q", job_id)
        waits.append((due - after, due - before))  # the delay lies between these two
        age(db, "q", "start_after", max(seconds_until_start(db, "q", job_id), 0) + 1)
    if caps.archive:
        # 10.x: 1·2^k·(1+U), U in [0,1), and no retryDelayMax to cap it.
        low = [1, 2, 4, 8, 16]
        high = [2, 4, 8, 16, 32]
    elif caps.schema_version <= 26:
        # 11.0-12.5 add the growth to the delay: 1 + 2^k·(1+U), U in [0,1), capped at 5.
        low = [2, 3, 5, 5, 5]
        high = [3, 5, 5, 5, 5]
    else:
        # 1·2^k·(1+U), U in [0,1), capped at 5: [1,2), [2,4), [4,5], 5, 5.
        low = [1, 2, 4, 5, 5]
        high = [2, 4, 5, 5, 5]
    for (shortest, longest), lo, hi in zip(waits, low, high, strict=True):
        assert longest >= lo - CLOCK_SLACK and shortest <= hi + CLOCK_SLACK, waits
    [last] = actor.fetch("q")
    actor.fail("q", [last], ERROR)
    row = job_row(db, "q", job_id)
    assert (row["state"], row["retry_count"]) == ("failed", 5)


def test_manual_retry_of_a_failed_job(actor: Actor, observer: Actor, db: Database, caps: Capabilities) -> None:
    observer.create_queue("q", **supported_queue(caps, {"retryLimit": 0, "deleteAfterSeconds": 60}))
    job_id = observer.send("q", {"n": 1})
    [claim] = observer.fetch("q")
    observer.fail("q", [claim], ERROR)
    assert job_row(db, "q", job_id)["completed_on"] is not None

    assert actor.retry("q", [job_id]) == 1
    row = job_row(db, "q", job_id)
    assert (row["state"], row["retry_limit"]) == ("retry", 1)
    # Ours clears completed_on on every schema; pg-boss's own retry does from 12.26 (37).
    assert (row["completed_on"] is None) == (not isinstance(actor, NodeActor) or caps.schema_version >= 37)
    assert actor.retry("q", [job_id]) == 0  # only failed jobs are retried

    [again] = observer.fetch("q")
    assert (again.id, again.retry_count) == (job_id, 1)
    assert observer.complete("q", [again]) == 1


def test_manual_retry_matches_pg_boss(twin: Twin, node_actor: NodeActor, caps: Capabilities) -> None:
    def scenario(actor: Actor, names: Names) -> None:
        node_actor.create_queue(names("q"), retryLimit=0)
        node_actor.send(names("q"), {"tag": "failed"})
        node_actor.send(names("q"), {"tag": "active"})
        node_actor.send(names("q"), {"tag": "future"}, startAfter=300)
        claims = {c.data["tag"]: c for c in node_actor.fetch(names("q"), 2)}
        node_actor.fail(names("q"), [claims["failed"]], ERROR)
        ids = [claim.id for claim in claims.values()]
        assert actor.retry(names("q"), ids) == 1

    run = twin(scenario)
    if caps.schema_version >= 37:
        run.assert_same()
        return
    # Before 12.26 pg-boss's retry kept completed_on, and its maintenance (deletion on 11.0+,
    # archive on 10.x) then removes a job retried long after it failed; ours clears it, as
    # 12.26 does. Every other column must still agree.
    [ours] = [row for row in run.ours if row["data"]["tag"] == "failed"]
    [theirs] = [row for row in run.theirs if row["data"]["tag"] == "failed"]
    assert (ours["completed_on"], theirs["completed_on"] is not None) == (None, True)
    run.assert_same(ignore=["completed_on"])


# -- dead letters -----------------------------------------------------------------------------


def _dead_letter_queues(node: Actor, names: Names, partition: bool, caps: Capabilities) -> None:
    heartbeat = {"heartbeatSeconds": 40} if caps.heartbeats else {}
    node.create_queue(names("final"))
    node.create_queue(
        names("dlq"),
        partition=partition,
        retryLimit=0,
        retryDelay=3,
        retryBackoff=True,
        expireInSeconds=77,
        retentionSeconds=999,
        deleteAfterSeconds=55,
        deadLetter=names("final"),
        **heartbeat,
    )
    node.create_queue(names("other"), expireInSeconds=3600, retryLimit=6)
    node.create_queue(
        names("q"),
        policy="short",
        deadLetter=names("dlq"),
        retryLimit=0,
        expireInSeconds=10,
        retryDelayMax=9,
        retryBackoff=True,
        partition=partition,
        **({"heartbeatSeconds": 15} if caps.heartbeats else {}),
    )


@pytest.mark.parametrize("partition", [False, True], ids=["job_common", "own-partitions"])
def test_dead_letter_copies_match_pg_boss(
    twin: Twin, node_actor: NodeActor, partition: bool, caps: Capabilities
) -> None:
    _shared_table(caps, partition)

    def scenario(actor: Actor, names: Names) -> None:
        _dead_letter_queues(node_actor, names, partition, caps)
        node_actor.send(
            names("q"),
            {"tag": "queue dlq"},
            **supported(
                caps, {"priority": 5, "singletonKey": "k1", "group": {"id": "g", "tier": "t"}, "heartbeatSeconds": 25}
            ),
        )
        if caps.dead_letter_per_job:  # a job's own deadLetter: 27+
            node_actor.send(names("q"), {"tag": "own dlq"}, deadLetter=names("other"), singletonKey="k2")
        actor.fail(names("q"), actor.fetch(names("q"), 2), ERROR)
        # The copy fails in its dead-letter queue too. It does not move on: pg-boss leaves a
        # copy's own dead_letter empty, whatever its queue says.
        [copy] = actor.fetch(names("dlq"))
        actor.fail(names("dlq"), [copy], "again")

    run = twin(scenario)
    run.assert_same()
    rows = {(row["name"], row["data"]["tag"]): row for row in run.ours}
    original = rows[("q", "queue dlq")]
    first = rows[("dlq", "queue dlq")]
    assert original["state"] == "failed" and original["dead_letter"] == "dlq"
    assert (first["state"], first["output"]) == ("failed", {"value": "again"})
    if caps.dead_letter_provenance:  # 34+
        assert (first["source_name"], first["source_id"]) == ("q", "q/queue dlq")
    if caps.provenance_survives_retry:  # 43+
        assert (first["source_output"], first["source_root_id"]) == (ERROR, "q/queue dlq")
    # The copy takes the dead letter queue's expiry and the job's singleton_key from 12.26
    # (schema 37), its priority and group from 12.28 (38); before, the defaults.
    # 10.x copies only name, data, output, retry_limit and keep_until; its queue settings reach
    # the copy as its insert defaults them.
    takes_settings, takes_priority = caps.schema_version >= 37, caps.schema_version >= 38
    if not caps.archive:
        assert (first["expire_seconds"], first["deletion_seconds"], first["keep_until_after_start"]) == (
            77 if takes_settings else 900,
            55,
            999,
        )
    assert (first["priority"], first["singleton_key"]) == (5 if takes_priority else 0, "k1" if takes_settings else None)
    assert first.get("group_id") == ("g" if takes_priority else None)
    assert (first["dead_letter"], first.get("policy")) == (None, None)
    assert not [key for key in rows if key[0] == "final"]
    if caps.dead_letter_per_job:  # 10.x and 27+: #2, the job's own dead letter wins
        assert expire_seconds(rows[("other", "own dlq")]) == (3600 if takes_settings else 900)
        assert ("dlq", "own dlq") not in rows


def test_dead_lettered_job_is_fetched_by_the_other_client(
    actor: Actor, observer: Actor, db: Database, caps: Capabilities
) -> None:
    observer.create_queue("dlq")
    observer.create_queue("q", deadLetter="dlq", retryLimit=0)
    job_id = observer.send("q", {"key": "value"})
    [claim] = actor.fetch("q")
    actor.fail("q", [claim], ERROR)
    [dead] = observer.fetch("dlq")
    assert dead.data == {"key": "value"}
    row = job_row(db, "dlq", dead.id)
    if caps.dead_letter_provenance:  # 34+
        assert (row["source_name"], str(row["source_id"]), row["source_retry_count"]) == ("q", job_id, 0)
    if caps.provenance_survives_retry:  # 43+: the failed job's output moves to source_output
        assert row["source_output"] == ERROR and row["output"] is None
    assert observer.complete("dlq", [dead]) == 1


# -- expiry, heartbeats, late settles ----------------------------------------------------------


@pytest.mark.parametrize("partition", [False, True], ids=["job_common", "own-partition"])
def test_expiry_matches_pg_boss(
    twin: Twin, node_actor: NodeActor, db: Database, partition: bool, caps: Capabilities
) -> None:
    _shared_table(caps, partition)
    timed_out = _timed_out(caps)
    # Lapsed heartbeats fail jobs too where the release has heartbeats (30+).
    beats = ["beat lost", "touched"] if caps.heartbeats else []

    def scenario(actor: Actor, names: Names) -> None:
        node_actor.create_queue(names("dlq"))
        node_actor.create_queue(
            names("q"),
            expireInSeconds=5,
            retryLimit=1,
            deadLetter=names("dlq"),
            partition=partition,
            **({"heartbeatSeconds": 10} if caps.heartbeats else {}),
        )
        # Those that go to retry wait 5 minutes, except one that runs again at once.
        _send_each(node_actor, names("q"), ["expired", *beats, "fresh"], retryDelay=300)
        node_actor.send(names("q"), {"tag": "expired twice"})
        claims = {c.data["tag"]: c for c in node_actor.fetch(names("q"), 5)}
        by_tag = {tag: [claims[tag].id] for tag in claims}
        age(db, names("q"), "started_on", 6, by_tag["expired"] + by_tag["expired twice"])
        if beats:
            age(db, names("q"), "heartbeat_on", 11, by_tag["beat lost"] + by_tag["touched"])
            assert node_actor.touch(names("q"), [claims["touched"]]) == 1
        actor.expire(names("q"))
        # The job that went to retry runs again and times out for good this time.
        [again] = node_actor.fetch(names("q"), 5)
        assert (again.data["tag"], again.retry_count) == ("expired twice", 1)
        age(db, names("q"), "started_on", 6, [again.id])
        actor.expire(names("q"))

    run = twin(scenario)
    run.assert_same()
    rows = {(row["name"], row["data"]["tag"]): row for row in run.ours}
    assert (rows[("q", "expired")]["state"], rows[("q", "expired")]["output"]) == ("retry", timed_out)
    if beats:
        assert (rows[("q", "beat lost")]["state"], rows[("q", "beat lost")]["output"]) == (
            "retry",
            HEARTBEAT_LOST,
        )
        assert rows[("q", "touched")]["state"] == "active"
    assert rows[("q", "fresh")]["state"] == "active"
    assert rows[("q", "expired twice")]["state"] == "failed"
    assert ("dlq", "expired twice") in rows
    if caps.provenance_survives_retry:  # 43+
        assert rows[("dlq", "expired twice")]["source_output"] == timed_out


def test_expiry_by_one_client_of_the_others_claim(
    actor: Actor, observer: Actor, db: Database, caps: Capabilities
) -> None:
    observer.create_queue("q", expireInSeconds=2, retryLimit=1)
    job_id = observer.send("q", {"n": 1})
    [claim] = observer.fetch("q")
    actor.expire("q")
    assert job_row(db, "q", job_id)["state"] == "active"  # not yet past expire_seconds
    age(db, "q", "started_on", 3)
    actor.expire("q")
    row = job_row(db, "q", job_id)
    assert (row["state"], row["output"]) == ("retry", _timed_out(caps))

    # #22: the worker that lost its claim settles late; the fence makes that a no-op.
    if not fenced_by_attempt(observer):
        pytest.skip(unfenced(observer))
    assert observer.complete("q", [claim], {"late": True}) == 0
    assert observer.fail("q", [claim], ERROR) == 0
    assert job_row(db, "q", job_id)["state"] == "retry"
    [again] = actor.fetch("q")
    assert again.retry_count == 1
    assert observer.complete("q", [claim]) == 0  # still the stale attempt
    assert observer.touch("q", [claim]) == 0
    assert actor.complete("q", [again], {"ok": 1}) == 1
    assert job_row(db, "q", job_id)["output"] == {"ok": 1}


@pytest.mark.since(30, "heartbeats")
def test_heartbeat_loss_and_touch_across_clients(actor: Actor, observer: Actor, db: Database) -> None:
    observer.create_queue("q", heartbeatSeconds=10, retryLimit=0)
    ids = observer.insert("q", [{"data": {"n": n}} for n in range(2)])
    claims = observer.fetch("q", 2)
    age(db, "q", "heartbeat_on", 11)
    assert observer.touch("q", [claims[0]]) == 1
    actor.expire("q")
    states = {claim.id: job_row(db, "q", claim.id) for claim in claims}
    assert states[claims[0].id]["state"] == "active"
    assert (states[claims[1].id]["state"], states[claims[1].id]["output"]) == ("failed", HEARTBEAT_LOST)
    assert sorted(ids) == sorted(states)
