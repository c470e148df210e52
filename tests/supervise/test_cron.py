"""Cron: our evaluation agrees with pg-boss's, and schedules cross between Node and Python.

* The occurrences we compute for cron and rrule expressions in several zones equal
  pg-boss 12.38's own ``previewSchedule()`` from the same instant.
* A schedule written by Node's ``boss.schedule()`` fires from our cron pass and send-it
  worker (one job per slot however often the pass runs), and a schedule written with
  ``Schedules`` fires from Node's timekeeper.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from shared.db import Database
from shared.pgboss import cron
from shared.pgboss.client import PgBoss
from shared.pgboss.schedules import Schedules
from shared.pgboss.supervisor import Intervals
from tests.supervise.conftest import RunPasses, node_timekeeper, queue_jobs, wait_for_jobs
from tests.support.node_boss import NodeBoss

pytestmark = pytest.mark.since(43, "12.35's timekeeper")

EXPRESSIONS = [
    ("* * * * *", "UTC"),
    ("*/7 * * * *", "America/New_York"),
    ("30 9 * * 1-5", "Europe/Berlin"),
    ("0 0 1,15 * *", "Asia/Kolkata"),
    ("15 */5 * * * *", "UTC"),
    ("0 2 * * 0", "Australia/Sydney"),
    ("FREQ=MINUTELY;INTERVAL=7", "UTC"),
    ("FREQ=DAILY;BYHOUR=9;BYMINUTE=30", "Europe/Berlin"),
    ("FREQ=MONTHLY;BYDAY=-1FR;BYHOUR=17", "America/Los_Angeles"),
    ("DTSTART:20260101T080000\nRRULE:FREQ=WEEKLY;BYDAY=MO,WE", "Asia/Tokyo"),
    ("FREQ=HOURLY;INTERVAL=5;BYMINUTE=10", "UTC"),
]
# cron-parser skips a run whose wall time repeats when DST ends (Sydney, 2026-04-05
# 02:00); croniter runs it. Every other occurrence agrees.
KNOWN_DIFFERENCES = {("0 2 * * 0", "Australia/Sydney")}


def test_occurrences_equal_pg_boss_preview(node_boss: NodeBoss) -> None:
    start = datetime(2026, 3, 7, 13, 45, 12, tzinfo=UTC)
    disagree = set()
    for expression, tz in EXPRESSIONS:
        options = {"tz": tz, "count": 8, "from": {"$date": start.isoformat()}}
        theirs = node_boss.call("previewSchedule", expression, options)
        ours = [instant.isoformat().replace("+00:00", ".000Z") for instant in cron.preview(expression, tz, start, 8)]
        if ours != theirs:
            disagree.add((expression, tz))
    assert disagree == KNOWN_DIFFERENCES


def test_a_node_schedule_fires_once_per_slot_from_our_passes(
    node_boss: NodeBoss, boss: PgBoss, db: Database, supervise: RunPasses
) -> None:
    node_boss.call("createQueue", "reports", {})
    node_boss.call("schedule", "reports", "* * * * *", {"kind": "minutely"}, {"key": "k_1", "retryLimit": 4})
    often = Intervals(cron=1)
    first = supervise("cron", "send_it", intervals=often)
    time.sleep(1.1)
    second = supervise("cron", "send_it", intervals=often)
    assert first.counts["cron"]["slots_filed"] == 1
    assert second.counts["cron"].get("slots_filed", 0) + second.counts["cron"].get("slots_already_filed", 0) <= 1
    jobs = queue_jobs(db, "reports")
    minute_slots = {row["data"]["slot"] for row in queue_jobs(db, "__pgboss__send-it")}
    assert len(jobs) == len(minute_slots) >= 1
    assert jobs[0]["data"] == {"kind": "minutely"}
    [row] = db.run("SELECT retry_limit FROM pgboss.job WHERE name = 'reports' LIMIT 1")
    assert row["retry_limit"] == 4
    [schedule] = node_boss.call("getSchedules", "reports")
    assert schedule["lastJobId"] == str(jobs[-1]["id"])
    forwarded = db.run("SELECT singleton_key, state FROM pgboss.job WHERE name = '__pgboss__send-it'")
    assert {(row["singleton_key"], row["state"]) for row in forwarded} == {("reports__k_1", "completed")}


def test_a_python_schedule_fires_from_node(database_url: str, boss: PgBoss, db: Database) -> None:
    boss.create_queue("nightly")
    Schedules(boss).schedule("nightly", "* * * * *", {"from": "python"}, key="py", tz="Europe/Paris")
    with node_timekeeper(database_url) as node:
        [stored] = node.call("getSchedules", "nightly")
        assert (stored["key"], stored["timezone"], stored["kind"]) == ("py", "Europe/Paris", "cron")
        wait_for_jobs(db, "nightly")
    jobs = queue_jobs(db, "nightly")
    assert [row["data"] for row in jobs] == [{"from": "python"}]
    assert Schedules(boss).list()[0].last_job_id == str(jobs[0]["id"])


def test_bad_schedules_are_refused(boss: PgBoss) -> None:
    boss.create_queue("q")
    schedules = Schedules(boss)
    with pytest.raises(cron.InvalidSchedule, match="time zone"):
        schedules.schedule("q", "* * * * *", tz="Mars/Olympus")
    with pytest.raises(cron.InvalidSchedule, match="no occurrence left"):
        schedules.schedule("q", "DTSTART:20200101T000000\nRRULE:FREQ=DAILY;COUNT=2")
    with pytest.raises(cron.InvalidSchedule):
        schedules.schedule("q", "61 * * * *")
    assert schedules.list() == []
    assert not schedules.unschedule("q")
