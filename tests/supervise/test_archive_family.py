"""pg-boss 10.x's supervisor and timekeeper (schemas 21-24), run by ours.

Each scenario runs twice in one database of the release's schema: once with the
release's own Node doing the background work, once with our Supervisor, and the rows
must agree. Then a Node 10.x supervisor and two of ours run together over many
intervals: no job expires twice, no cron slot is sent twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pg8000.native
import pytest

from shared.config import Settings
from shared.db import Database
from shared.pgboss.client import PgBoss
from shared.pgboss.supervisor import PASSES, Intervals, Plan, Summary, Supervisor
from shared.supervision import plan_from_settings
from tests.conftest import SCHEMA, create_database, url_for
from tests.interop.rows import age, differences, normalize, raw_rows
from tests.support import releases
from tests.support.node_boss import NodeBoss

# One release of each 10.x schema.
RELEASES = {"10.0.0": 21, "10.0.6": 22, "10.1.1": 23, "10.1.6": 24, "10.4.2": 24}
SEND_IT = "__pgboss__send-it"
HOUR = 3600


@dataclass
class Release:
    version: str
    url: str
    db: Database

    def node(self, **options: Any) -> NodeBoss:
        settings: dict[str, Any] = {"supervise": False, "schedule": False, "migrate": False} | options
        return NodeBoss(self.url, SCHEMA, package_dir=releases.package_dir(self.version), **settings)

    def ours(self, *passes: str, **plan: Any) -> Summary:
        return Supervisor(PgBoss(self.db, SCHEMA), Plan(passes=frozenset(passes), **plan)).run()


@pytest.fixture(params=list(RELEASES))
def release(request: pytest.FixtureRequest, admin: pg8000.native.Connection) -> Iterator[Release]:
    releases.install()
    name = create_database(admin)
    url = url_for(name)
    releases.install_schema(url, SCHEMA, request.param)
    db = Database(url)
    assert PgBoss(db, SCHEMA).schema_version() == RELEASES[request.param]
    yield Release(request.param, url, db)
    db.close()
    admin.run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _archived(db: Database, prefix: str) -> list[dict[str, Any]]:
    rows = db.run(
        f"""SELECT substr(name, length(:p) + 1) AS name, state::text AS state, CAST(data AS text) AS data,
          CAST(output AS text) AS output, retry_count, archived_on > now() - interval '1 hour' AS fresh
        FROM {SCHEMA}.archive WHERE left(name, length(:p)) = :p ORDER BY 1, 3""",
        {"p": prefix},
    )
    return rows


def _scenario(node: NodeBoss, db: Database, p: str) -> None:
    """Jobs for each part of 10.x's maintenance: expiry into retry and into a dead letter,
    finished jobs either side of the archive interval, a queued job past keep_until, and
    archived jobs either side of deleteAfter."""
    node.call("createQueue", p + "dead")
    node.call("createQueue", p + "q", {"retryLimit": 0, "deadLetter": p + "dead"})
    node.call("createQueue", p + "r", {"retryLimit": 2})
    expired = [node.call("send", p + "q", {"tag": f"expires-{i}"}) for i in range(2)]
    retried = node.call("send", p + "r", {"tag": "expires-retried"})
    node.call("fetch", p + "q", {"batchSize": 2})
    node.call("fetch", p + "r")
    age(db, p + "q", "started_on", HOUR, expired)
    age(db, p + "r", "started_on", HOUR, [retried])
    old, recent = node.call("send", p + "r", {"tag": "done-old"}), node.call("send", p + "r", {"tag": "done-new"})
    for job in node.call("fetch", p + "r", {"batchSize": 2}):
        if job["id"] in (old, recent):
            node.call("complete", p + "r", job["id"], {"ok": job["id"] == old})
    age(db, p + "r", "completed_on", 13 * HOUR, [old])
    age(db, p + "r", "completed_on", HOUR, [recent])
    stale = node.call("send", p + "r", {"tag": "queued-stale"})
    age(db, p + "r", "keep_until", 15 * 24 * HOUR, [stale])
    node.call("send", p + "r", {"tag": "queued"})
    for tag, days in (("archived-old", 8), ("archived-new", 6)):
        job_id = node.call("send", p + "r", {"tag": tag})
        db.run(
            f"""WITH moved AS (DELETE FROM {SCHEMA}.job WHERE name = :q AND id = CAST(:id AS uuid) RETURNING *)
            INSERT INTO {SCHEMA}.archive
            SELECT (jsonb_populate_record(NULL::{SCHEMA}.archive, to_jsonb(moved)
              || jsonb_build_object('state', 'completed', 'archived_on', now() - make_interval(days => :days)))).*
            FROM moved""",
            {"q": p + "r", "id": job_id, "days": days},
        )


def test_maintenance_matches_the_release(release: Release) -> None:
    db = release.db
    with release.node() as node:
        _scenario(node, db, "py_")
        summary = release.ours(*PASSES)
        _scenario(node, db, "js_")
        node.call("maintain")
    assert summary.counts["maintain"] == {
        "expired": 3,
        "retried": 1,
        "failed": 2,
        "dead_lettered": 2,
        "archived": 2,
        "deleted": 1,
    }
    for name in ("monitor", "flows", "bam"):
        assert "10.x" in summary.skipped[name]
    ours, theirs = normalize(raw_rows(db, "py_"), "py_"), normalize(raw_rows(db, "js_"), "js_")
    assert len(ours) == 7  # 2 failed, 2 dead letter copies, 1 retry, 1 completed, 1 queued
    problems = differences(ours, theirs)
    assert not problems, f"our rows differ from pg-boss {release.version}'s:\n" + "\n".join(problems)
    archived = _archived(db, "py_")
    assert [row["data"] for row in archived] == [
        '{"tag": "archived-new"}',
        '{"tag": "done-old"}',
        '{"tag": "queued-stale"}',
    ]
    assert archived == _archived(db, "js_")


def _finished(node: NodeBoss, db: Database, p: str) -> None:
    """Jobs completed and failed 90 s and 150 s ago, and archived ones 50 and 70 minutes ago."""
    node.call("createQueue", p + "q", {"retryLimit": 0})
    ids = [node.call("send", p + "q", {"tag": tag}) for tag in ("c90", "c150", "f90", "f150")]
    for job in node.call("fetch", p + "q", {"batchSize": 4}):
        tag = job["data"]["tag"]
        node.call("complete" if tag[0] == "c" else "fail", p + "q", job["id"], {"tag": tag})
    for job_id, seconds in zip(ids, (90, 150, 90, 150), strict=True):
        age(db, p + "q", "completed_on", seconds, [job_id])
    for tag, minutes in (("a50", 50), ("a70", 70)):
        job_id = node.call("send", p + "q", {"tag": tag})
        db.run(
            f"""WITH moved AS (DELETE FROM {SCHEMA}.job WHERE name = :q AND id = CAST(:id AS uuid) RETURNING *)
            INSERT INTO {SCHEMA}.archive
            SELECT (jsonb_populate_record(NULL::{SCHEMA}.archive, to_jsonb(moved)
              || jsonb_build_object('state', 'completed', 'archived_on', now() - make_interval(mins => :minutes)))).*
            FROM moved""",
            {"q": p + "q", "id": job_id, "minutes": minutes},
        )


def test_configured_intervals_match_node_configured_the_same(release: Release) -> None:
    """The SUPERVISE_V10_* settings are 10.x's archiveCompletedAfterSeconds,
    archiveFailedAfterSeconds and deleteAfterSeconds."""
    db = release.db
    settings = Settings.from_environ(
        {
            "SUPERVISE_V10_ARCHIVE_COMPLETED_AFTER_SECONDS": "60",
            "SUPERVISE_V10_ARCHIVE_FAILED_AFTER_SECONDS": "120",
            "SUPERVISE_V10_DELETE_AFTER_SECONDS": "3600",
        }
    )
    plan = replace(plan_from_settings(settings, 30), passes=frozenset({"maintain"}))
    node_options = {"archiveCompletedAfterSeconds": 60, "archiveFailedAfterSeconds": 120, "deleteAfterSeconds": 3600}
    with release.node(**node_options) as node:
        _finished(node, db, "py_")
        summary = Supervisor(PgBoss(db, SCHEMA), plan).run()
        _finished(node, db, "js_")
        node.call("maintain")
    counts = summary.counts["maintain"]
    assert (counts["archived"], counts["deleted"], counts["expired"]) == (3, 1, 0)
    left = [row["data"]["tag"] for row in db.run(f"SELECT data FROM {SCHEMA}.job WHERE name = 'py_q'")]
    assert left == ["f90"]
    ours, theirs = _archived(db, "py_"), _archived(db, "js_")
    assert [row["data"] for row in ours] == [f'{{"tag": "{tag}"}}' for tag in ("a50", "c150", "c90", "f150")]
    assert ours == theirs
    assert normalize(raw_rows(db, "py_"), "py_") and not differences(
        normalize(raw_rows(db, "py_"), "py_"), normalize(raw_rows(db, "js_"), "js_")
    )


def test_maintenance_is_claimed_as_the_release_claims_it(release: Release) -> None:
    """One run per maintenanceIntervalSeconds, Node's or ours, through version.maintained_on."""
    with release.node() as node:
        node.call("createQueue", "q")
    first = release.ours("maintain")
    assert "maintain" not in first.skipped
    again = release.ours("maintain")
    assert again.skipped["maintain"] == "claimed elsewhere or not due"
    # Node's own claim (trySetMaintenanceTime) finds the interval taken, too.
    claim = (
        "UPDATE pgboss.version SET maintained_on = now() WHERE"
        " EXTRACT(EPOCH FROM (now() - COALESCE(maintained_on, now() - interval '1 week'))) > 120 RETURNING true"
    )
    assert release.db.run(claim) == []
    release.db.run("UPDATE pgboss.version SET maintained_on = now() - interval '121 seconds'")
    assert "maintain" not in release.ours("maintain").skipped


def _wait_for(db: Database, queue: str, seconds: float = 30) -> list[dict[str, Any]]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rows = db.run(f"SELECT * FROM {SCHEMA}.job WHERE name = :q", {"q": queue})
        if rows:
            return rows
        time.sleep(0.2)
    raise AssertionError(f"no job reached {queue} in {seconds} s")


def test_a_node_schedule_fires_from_ours_as_from_node(release: Release) -> None:
    """boss.schedule() rows of 10.x fire from our cron and send-it passes, and the send-it
    job and the target job match the ones 10.x's own timekeeper writes."""
    db = release.db
    with release.node() as node:
        for p in ("py_", "js_"):
            node.call("createQueue", p + "tick", {"retryLimit": 4})
            node.call("schedule", p + "tick", "* * * * *", {"n": 1}, {"tz": "Europe/Paris", "priority": 2})
        node.call("unschedule", "js_tick")
    summary = release.ours("cron", "send_it")
    assert summary.counts["cron"] == {"schedules": 1, "slots_filed": 1}
    assert summary.counts["send_it"] == {"sent": 1}
    again = release.ours("cron", "send_it", intervals=Intervals(cron=1))
    assert again.skipped["cron"] == "claimed elsewhere or not due"
    [ours] = _wait_for(db, "py_tick")
    ours_send_it = db.run(f"SELECT * FROM {SCHEMA}.job WHERE name = :q", {"q": SEND_IT})
    with release.node() as node:
        node.call("unschedule", "py_tick")
        node.call("schedule", "js_tick", "* * * * *", {"n": 1}, {"tz": "Europe/Paris", "priority": 2})
    db.run(f"DELETE FROM {SCHEMA}.job WHERE name = :q", {"q": SEND_IT})
    db.run("UPDATE pgboss.version SET cron_on = NULL")
    with release.node(schedule=True, cronMonitorIntervalSeconds=1, cronWorkerIntervalSeconds=1):
        [theirs] = _wait_for(db, "js_tick")
        time.sleep(1.5)
        theirs_send_it = db.run(f"SELECT * FROM {SCHEMA}.job WHERE name = :q", {"q": SEND_IT})
    assert (ours["data"], ours["priority"], ours["retry_limit"]) == ({"n": 1}, 2, 4)
    # Up to 10.1.5 the schedule's options are filed nested in the send-it job, where the
    # insert does not read them; from 10.1.6 they are spread and apply, as ours apply on
    # every 10.x.
    spread = releases.version_key(release.version) >= (10, 1, 6)
    applied = 2 if spread else 0
    assert (theirs["data"], theirs["priority"], theirs["retry_limit"]) == ({"n": 1}, applied, 4)
    for column in ("singleton_key", "singleton_on", "policy", "expire_in", "dead_letter"):
        assert ours[column] == theirs[column], column
    [filed] = ours_send_it
    node_filed = [row for row in theirs_send_it if row["data"]["name"] == "js_tick"]
    assert node_filed and {row["singleton_key"] for row in node_filed} <= {"js_tick", None}
    if releases.version_key(release.version) >= (10, 1, 0):
        # 10.1.0 onwards files the job under the schedule's name in the minute's slot, as we do.
        [node_row] = node_filed
        assert filed["singleton_key"] == "py_tick" and node_row["singleton_key"] == "js_tick"
        assert filed["singleton_on"] is not None and node_row["singleton_on"] is not None
        assert filed["singleton_on"].second == 0 and node_row["singleton_on"].second == 0
    if spread:
        assert {k: v for k, v in filed["data"].items() if k != "name"} == {
            k: v for k, v in node_row["data"].items() if k != "name"
        }
    assert filed["state"] == "completed"


def test_send_it_jobs_node_filed_send_as_from_node(release: Release) -> None:
    """A send-it job the release's timekeeper filed (options nested up to 10.1.5, spread
    from 10.1.6) becomes the same target job from our worker as from Node's."""
    db = release.db
    with release.node() as node:
        for p in ("py_", "js_"):
            node.call("createQueue", p + "tick")
            node.call("schedule", p + "tick", "* * * * *", {"n": 2}, {"priority": 3, "retryLimit": 5})
    with release.node(schedule=True, cronMonitorIntervalSeconds=1, cronWorkerIntervalSeconds=1):
        [theirs] = _wait_for(db, "js_tick")
    # Node's timekeeper, stopped now, filed the py_ schedule's send-it job too; if its worker
    # took that as well, file it afresh as Node would have.
    db.run(f"DELETE FROM {SCHEMA}.job WHERE name = 'py_tick'")
    filed = db.run(
        f"SELECT data FROM {SCHEMA}.job WHERE name = :q AND data->>'name' = 'py_tick' ORDER BY created_on LIMIT 1",
        {"q": SEND_IT},
    )[0]["data"]
    db.run(f"DELETE FROM {SCHEMA}.job WHERE name = :q", {"q": SEND_IT})
    PgBoss(db, SCHEMA).send(SEND_IT, filed)
    assert release.ours("send_it").counts["send_it"] == {"sent": 1}
    [ours] = db.run(f"SELECT * FROM {SCHEMA}.job WHERE name = 'py_tick'")
    for column in ("data", "priority", "retry_limit", "policy", "expire_in", "singleton_key"):
        assert ours[column] == theirs[column], column
    spread = releases.version_key(release.version) >= (10, 1, 6)
    assert (ours["priority"], ours["retry_limit"]) == ((3, 5) if spread else (0, 2))


def _our_loop(url: str, stop: threading.Event, errors: list[BaseException], passes: frozenset[str]) -> None:
    db = Database(url)
    try:
        plan = Plan(passes=passes, intervals=Intervals(archive_family_maintain=1, cron=1), budget_seconds=5)
        while not stop.is_set():
            Supervisor(PgBoss(db, SCHEMA), plan).run()
            time.sleep(0.05)
    except BaseException as error:  # reported by the test
        errors.append(error)
    finally:
        db.close()


@pytest.mark.parametrize("version", ["10.0.0", "10.4.2"])
def test_with_a_node_supervisor_nothing_is_done_twice(version: str, admin: pg8000.native.Connection) -> None:
    """Node 10.x supervising (and, from 10.1.0, scheduling) at one-second intervals next to
    two of our supervisors: every expired job fails once, each cron slot sends once.
    10.0.x's own timekeeper files send-it jobs with no singleton slot (so it can send a slot
    twice by itself); there, only our instances schedule."""
    releases.install()
    name = create_database(admin)
    url = url_for(name)
    try:
        releases.install_schema(url, SCHEMA, version)
        db = Database(url)
        node_schedules = releases.version_key(version) >= (10, 1, 0)
        with NodeBoss(url, SCHEMA, package_dir=releases.package_dir(version), supervise=False, migrate=False) as n:
            n.call("createQueue", "dlq")
            n.call("createQueue", "work", {"retryLimit": 0, "deadLetter": "dlq", "expireInSeconds": 1})
            n.call("createQueue", "cron")
            n.call("schedule", "cron", "* * * * * *", {"tick": True})
            for batch in range(3):
                n.call("insert", [{"name": "work", "data": {"n": batch * 20 + i}} for i in range(20)])
            assert len(n.call("fetch", "work", {"batchSize": 60})) == 60
        stop = threading.Event()
        errors: list[BaseException] = []
        passes = frozenset({"maintain", "cron", "send_it"})
        threads = [threading.Thread(target=_our_loop, args=(url, stop, errors, passes)) for _ in range(2)]
        options = {
            "supervise": True,
            "schedule": node_schedules,
            "migrate": False,
            "maintenanceIntervalSeconds": 1,
            "cronMonitorIntervalSeconds": 1,
            "cronWorkerIntervalSeconds": 1,
        }
        with NodeBoss(url, SCHEMA, package_dir=releases.package_dir(version), **options):
            for thread in threads:
                thread.start()
            time.sleep(8)
            stop.set()
            for thread in threads:
                thread.join(30)
        assert errors == []
        work = db.run(
            f"SELECT state::text AS state, count(*)::int AS n FROM {SCHEMA}.job WHERE name = 'work' GROUP BY 1"
        )
        assert work == [{"state": "failed", "n": 60}]
        copies = db.run(f"SELECT data->>'n' AS n, count(*)::int AS c FROM {SCHEMA}.job WHERE name = 'dlq' GROUP BY 1")
        assert len(copies) == 60 and all(row["c"] == 1 for row in copies)
        slots = db.run(f"SELECT singleton_on, count(*)::int AS n FROM {SCHEMA}.job WHERE name = '{SEND_IT}' GROUP BY 1")
        assert slots and all(row["n"] == 1 and row["singleton_on"] is not None for row in slots)
        sent = db.run(f"SELECT count(*)::int AS n FROM {SCHEMA}.job WHERE name = 'cron'")[0]["n"]
        forwarded = db.run(
            f"SELECT count(*)::int AS n FROM {SCHEMA}.job WHERE name = '{SEND_IT}' AND state = 'completed'"
        )[0]["n"]
        assert sent == forwarded >= 1
        db.close()
    finally:
        admin.run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
