"""send/insert: the rows pg-boss 12.38 writes, its dedupe rules, atomic batches, NOTIFY."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pg8000.native
import pytest

from shared.db import Database
from shared.pgboss.client import PgBoss
from shared.pgboss.errors import DuplicateJobId, QueueNotFound, SingletonKeyRequired
from shared.pgboss.models import JobRequest, SendOptions
from tests.pgboss.conftest import job_row, job_rows, seconds_until


def test_queue_settings_are_copied_into_the_job(boss: PgBoss, db: Database, queue: Callable[..., str]) -> None:
    queue("dlq")
    queue(
        "configured",
        policy="short",
        retryLimit=4,
        retryDelay=7,
        retryBackoff=True,
        retryDelayMax=30,
        expireInSeconds=60,
        retentionSeconds=3600,
        deleteAfterSeconds=120,
        deadLetter="dlq",
        heartbeatSeconds=20,
    )
    job_id = boss.send("configured", {"doc": 1})
    row = job_row(db, "configured", job_id)
    assert row["data"] == {"doc": 1}
    assert (row["state"], row["priority"], row["retry_count"], row["policy"]) == ("created", 0, 0, "short")
    assert (row["retry_limit"], row["retry_delay"], row["retry_backoff"], row["retry_delay_max"]) == (
        4,
        7,
        True,
        30,
    )
    assert (row["expire_seconds"], row["deletion_seconds"], row["dead_letter"]) == (60, 120, "dlq")
    assert row["heartbeat_seconds"] == 20
    assert row["keep_until"] - row["start_after"] == timedelta(seconds=3600)
    assert row["start_after"] == row["created_on"]
    assert (row["blocked"], row["blocking"], row["pending_dependencies"]) == (False, False, 0)
    for column in (
        "singleton_key",
        "singleton_on",
        "group_id",
        "group_tier",
        "started_on",
        "completed_on",
        "output",
        "heartbeat_on",
        "source_name",
        "trace_context",
        "upsert_by_key",
    ):
        assert row[column] is None, column


def test_every_send_option_lands_in_its_column(boss: PgBoss, db: Database, queue: Callable[..., str]) -> None:
    queue("opts")
    queue("opts_dlq")
    job_id = str(uuid.uuid4())
    at = datetime(2030, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
    options = SendOptions.model_validate(
        {
            "id": job_id,
            "priority": 9,
            "startAfter": at.isoformat(),
            "singletonKey": "key",
            "singletonSeconds": 60,
            "retryLimit": 0,
            "retryDelay": 2,
            "retryBackoff": True,
            "retryDelayMax": 8,
            "expireInSeconds": 30,
            "retentionSeconds": 100,
            "deleteAfterSeconds": 0,
            "deadLetter": "opts_dlq",
            "heartbeatSeconds": 15,
            "group": {"id": "g1", "tier": "gold"},
        }
    )
    assert boss.send("opts", ["a", "list"], options) == job_id
    row = job_row(db, "opts", job_id)
    assert row["data"] == ["a", "list"]
    assert (row["priority"], row["start_after"], row["singleton_key"]) == (9, at, "key")
    assert row["singleton_on"] is not None and row["singleton_on"].second == 0
    assert (row["retry_limit"], row["retry_delay"], row["retry_backoff"], row["retry_delay_max"]) == (
        0,
        2,
        True,
        8,
    )
    assert (row["expire_seconds"], row["deletion_seconds"], row["dead_letter"]) == (30, 0, "opts_dlq")
    assert row["keep_until"] == at + timedelta(seconds=100)
    assert (row["heartbeat_seconds"], row["group_id"], row["group_tier"]) == (15, "g1", "gold")


def test_start_after_seconds_delay_the_job(boss: PgBoss, db: Database, queue: Callable[..., str]) -> None:
    queue("later")
    job_id = boss.send("later", None, SendOptions(startAfter=90))
    assert 88 < seconds_until(db, "later", job_id) <= 90
    row = job_row(db, "later", job_id)
    assert row["keep_until"] - row["start_after"] == timedelta(days=14)
    assert boss.fetch("later") == []


def test_data_keeps_its_json_type(boss: PgBoss, db: Database, queue: Callable[..., str]) -> None:
    queue("types")
    for data in (None, "text", 0, 1.5, True, [1, {"a": None}], {"nested": {"x": [1, 2]}}):
        assert job_row(db, "types", boss.send("types", data))["data"] == data


@pytest.mark.parametrize(
    ("policy", "outcomes"),
    [
        # send, duplicate, fetch, send, duplicate: which sends made a job
        ("standard", [True, True, True, True]),
        ("short", [True, False, True, False]),
        ("singleton", [True, True, True, True]),
        ("stately", [True, False, True, False]),
        ("exclusive", [True, False, False, False]),
        ("key_strict_fifo", [True, True, True, True]),
    ],
)
def test_each_policy_dedupes_sends_as_pg_boss_does(
    boss: PgBoss, queue: Callable[..., str], policy: str, outcomes: list[bool]
) -> None:
    queue("p", policy=policy)
    options = SendOptions(singletonKey="K")
    made = [boss.send("p", {"n": 1}, options) is not None, boss.send("p", {"n": 2}, options) is not None]
    assert len(boss.fetch("p")) == 1
    made += [boss.send("p", {"n": 3}, options) is not None, boss.send("p", {"n": 4}, options) is not None]
    assert made == outcomes


def test_policies_are_scoped_by_singleton_key(boss: PgBoss, queue: Callable[..., str]) -> None:
    queue("scoped", policy="exclusive")
    assert boss.send("scoped", None, SendOptions(singletonKey="a")) is not None
    assert boss.send("scoped", None, SendOptions(singletonKey="b")) is not None
    assert boss.send("scoped", None) is not None
    assert boss.send("scoped", None) is None


def test_key_strict_fifo_jobs_need_a_key(boss: PgBoss, db: Database, queue: Callable[..., str]) -> None:
    queue("fifo", policy="key_strict_fifo")
    queue("std")
    with pytest.raises(SingletonKeyRequired) as caught:
        boss.insert([JobRequest("std"), JobRequest("fifo", {"no": "key"})])
    assert (caught.value.queue, caught.value.option, caught.value.job_index) == ("fifo", "singletonKey", 1)
    assert job_rows(db, "std") == []


def test_throttle_allows_one_job_per_slot_and_key(boss: PgBoss, db: Database, queue: Callable[..., str]) -> None:
    queue("throttled")
    first = boss.send("throttled", None, SendOptions(singletonSeconds=3600, singletonKey="k"))
    assert first is not None
    assert boss.send("throttled", None, SendOptions(singletonSeconds=3600, singletonKey="k")) is None
    assert boss.send("throttled", None, SendOptions(singletonSeconds=3600, singletonKey="other")) is not None
    assert boss.send("throttled", None, SendOptions(singletonSeconds=3600)) is not None
    slot = job_row(db, "throttled", first)["singleton_on"]
    now = db.run("SELECT now() AT TIME ZONE 'UTC' AS t")[0]["t"]
    epoch = (now - datetime(1970, 1, 1)).total_seconds()
    assert slot == datetime(1970, 1, 1) + timedelta(seconds=epoch // 3600 * 3600)


def test_a_completed_job_still_holds_its_slot(boss: PgBoss, queue: Callable[..., str]) -> None:
    queue("held")
    options = SendOptions(singletonSeconds=3600, singletonKey="k")
    assert boss.send("held", None, options) is not None
    (job,) = boss.fetch("held")
    assert boss.complete("held", [(job, None)]) == [job.id]
    assert boss.send("held", None, options) is None


def test_cancelling_frees_a_throttle_slot(boss: PgBoss, queue: Callable[..., str]) -> None:
    queue("slot")
    options = SendOptions(singletonSeconds=3600, singletonKey="k")
    first = boss.send("slot", None, options)
    assert boss.send("slot", None, options) is None
    assert boss.cancel("slot", [first]) == 1
    assert boss.send("slot", None, options) is not None


def test_debounce_files_the_next_job_in_the_next_slot(boss: PgBoss, db: Database, queue: Callable[..., str]) -> None:
    queue("debounced")
    options = SendOptions(singletonSeconds=3600, singletonKey="k", singletonNextSlot=True)
    first = boss.send("debounced", {"n": 1}, options)
    second = boss.send("debounced", {"n": 2}, options)
    assert first is not None and second is not None
    assert boss.send("debounced", {"n": 3}, options) is None
    one, two = job_row(db, "debounced", first), job_row(db, "debounced", second)
    assert two["singleton_on"] - one["singleton_on"] == timedelta(hours=1)
    next_slot = two["singleton_on"].replace(tzinfo=UTC)
    assert next_slot + timedelta(seconds=1) <= two["start_after"] < next_slot + timedelta(seconds=2)
    assert two["keep_until"] - two["start_after"] == timedelta(days=14)
    assert one["start_after"] == one["created_on"]


def test_a_job_id_already_in_the_queue_is_a_duplicate(boss: PgBoss, queue: Callable[..., str]) -> None:
    queue("ids")
    queue("other_ids")
    job_id = str(uuid.uuid4())
    assert boss.send("ids", 1, SendOptions(id=job_id)) == job_id
    assert boss.send("ids", 2, SendOptions(id=job_id)) is None
    assert boss.send("other_ids", 3, SendOptions(id=job_id)) == job_id  # ids are unique per queue


def test_missing_queue_is_an_error_not_a_duplicate(boss: PgBoss, db: Database, queue: Callable[..., str]) -> None:
    queue("present")
    with pytest.raises(QueueNotFound) as caught:
        boss.send("absent", {"x": 1})
    assert caught.value.queue == "absent"
    with pytest.raises(QueueNotFound) as caught:
        boss.send("present", {"x": 1}, SendOptions(deadLetter="no_dlq"))
    assert caught.value.queue == "no_dlq"
    assert job_rows(db, "present") == []


def test_a_batch_is_all_or_nothing(boss: PgBoss, db: Database, queue: Callable[..., str]) -> None:
    queue("a")
    queue("b")
    with pytest.raises(QueueNotFound) as caught:
        boss.insert([JobRequest("a", 1), JobRequest("b", 2), JobRequest("missing", 3), JobRequest("a", 4)])
    assert caught.value.queue == "missing"
    assert job_rows(db, "a") == [] and job_rows(db, "b") == []


def test_insert_results_align_with_the_requests(boss: PgBoss, db: Database, queue: Callable[..., str]) -> None:
    queue("aligned", policy="short")
    queue("plain")
    given = str(uuid.uuid4())
    ids = boss.insert(
        [
            JobRequest("aligned", {"n": 0}, SendOptions(singletonKey="x")),
            JobRequest("plain", {"n": 1}, SendOptions(id=given)),
            JobRequest("aligned", {"n": 2}, SendOptions(singletonKey="x")),
            JobRequest("aligned", {"n": 3}, SendOptions(singletonKey="y")),
            JobRequest("plain", {"n": 4}),
        ]
    )
    assert ids[1] == given and ids[2] is None
    assert all(ids[i] is not None for i in (0, 1, 3, 4))
    for position in (0, 3):
        assert job_row(db, "aligned", ids[position])["data"] == {"n": position}
    assert job_row(db, "plain", ids[4])["data"] == {"n": 4}
    assert boss.insert([]) == []


def test_duplicate_ids_in_one_batch_are_refused(boss: PgBoss, queue: Callable[..., str]) -> None:
    queue("dups")
    job_id = str(uuid.uuid4())
    with pytest.raises(DuplicateJobId) as caught:
        boss.insert([JobRequest("dups", 1, SendOptions(id=job_id)), JobRequest("dups", 2, SendOptions(id=job_id))])
    assert (caught.value.queue, caught.value.job_index, caught.value.first_index) == ("dups", 1, 0)


@pytest.fixture
def listener(database_url: str, boss: PgBoss) -> Iterator[pg8000.native.Connection]:
    connection = Database(database_url)._connect()
    connection.run(f'LISTEN "{boss.notify_channel}"')
    yield connection
    connection.close()


def notifications(connection: pg8000.native.Connection) -> list[tuple[str, str]]:
    connection.run("SELECT 1")
    found = [(channel, payload) for _, channel, payload in connection.notifications]
    connection.notifications.clear()
    return found


def test_notify_channel_matches_pg_boss(boss: PgBoss) -> None:
    assert boss.notify_channel == "pgboss_454650302e472074f72063fd"


def test_runnable_jobs_on_notify_queues_wake_listeners(
    boss: PgBoss, queue: Callable[..., str], listener: pg8000.native.Connection
) -> None:
    queue("loud", notify=True)
    queue("loud2", notify=True)
    queue("quiet")
    channel = boss.notify_channel
    boss.send("quiet", 1)
    assert notifications(listener) == []
    boss.send("loud", 1, SendOptions(startAfter=60))
    assert notifications(listener) == []
    boss.insert([JobRequest("loud", 1), JobRequest("loud", 2), JobRequest("loud2", 3), JobRequest("quiet", 4)])
    assert sorted(notifications(listener)) == [(channel, "loud"), (channel, "loud2")]
