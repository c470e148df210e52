"""``Supervisor``: pg-boss's background passes, run from a scheduled call instead of Node.

A pg-boss deployment stays healthy only while something runs what a Node instance with
``supervise: true`` and ``schedule: true`` runs on timers. These are the same passes,
with pg-boss 12.38's SQL semantics (statements in ``supervision_sql``):

* ``monitor`` — per queue, claimed through ``queue.monitor_claim_on``: cached counts
  (what ``getQueue``/``getQueues`` report) and, with ``queue_stats`` (pg-boss's
  persistQueueStats), throughput counters and ``queue_stats`` snapshots, then expired and heartbeat-lost jobs failed
  through the fail chain (retry, backoff, dead letter) in batches of 1000;
* ``maintain`` — per queue, claimed through ``queue.maintain_on``: retention deletion in
  walks of 10,000 keys, the retained count, orphaned ``job_dependency`` rows; a queue
  the budget cut short gets its claim back;
* ``flows`` — claimed through ``version.flow_on``: children of completed parents are
  released, 1000 parents a batch, at most 100 batches per chunk of queues;
* ``cron`` — claimed through ``version.cron_on``: every schedule's due occurrences filed
  as ``__pgboss__send-it`` jobs, one per 60 s slot;
* ``send_it`` — the send-it worker: those jobs become jobs of their target queues, and
  ``schedule.last_job_id`` records what each schedule produced;
* ``bam`` — claimed through ``version.bam_on``: the index builds pg-boss's migrations
  left in the ``bam`` table to run in the background (one at a time, oldest first).

Claims and advisory locks are pg-boss's own, so Node supervisors and any number of
these can run at once and each interval's work is done once. Each pass refuses to run
on a schema it has not been proven on, and every pass stops between batches when the
call's time budget is spent.

pg-boss 10.x (schemas 21-24) supervises differently, and there these run its passes:

* ``maintain`` — claimed through ``version.maintained_on`` (every 120 s): jobs active
  past ``started_on + expire_in`` failed through the fail chain, finished jobs past
  their archive interval (and queued ones past ``keep_until``) moved to ``archive``,
  archived jobs past ``deleteAfter`` deleted — each under the schema's advisory lock;
* ``cron`` — claimed through ``version.cron_on``: each schedule whose latest cron
  occurrence is under 60 s old files one ``__pgboss__send-it`` job, singleton key the
  schedule's name, in the current 60 s ``singleton_on`` slot;
* ``send_it`` — those jobs become jobs of their target queues.

10.x keeps no cached counts (its monitor only emits an event), and has no flows and no
background index builds, so ``monitor``, ``flows`` and ``bam`` have nothing to do there.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.config import SUPERVISION_PASSES
from shared.pgboss import cron, sql, supervision_sql
from shared.pgboss.client import PgBoss
from shared.pgboss.errors import QueueNotFound
from shared.pgboss.models import SendOptions

log = logging.getLogger(__name__)

SEND_IT_QUEUE = "__pgboss__send-it"
PASSES = SUPERVISION_PASSES
# Schema versions each pass has been proven on against that schema's own pg-boss release
# (tests/supervise, run per release with TEST_PGBOSS_RELEASE; 10.x in
# tests/supervise/test_archive_family.py). 44 and 45 have no installable release to
# prove anything against.
PROVEN_SCHEMAS: dict[str, frozenset[int]] = {name: frozenset({46}) for name in PASSES}
# The flow resolver is the same statement from 12.22 (33) to 12.35 (43); 12.38 also moves
# a released child's start_after.
PROVEN_SCHEMAS["flows"] = frozenset(range(33, 44)) | {46}
# 12.35's timekeeper (43) files and forwards occurrences as 12.38's does; 12.31-12.33
# (41-42) file cron occurrences through singletonSeconds instead.
PROVEN_SCHEMAS["cron"] = PROVEN_SCHEMAS["send_it"] = frozenset({43, 46})
# 12.30-12.35 (40-43) claim queues through monitor_claim_on as 12.38 does, count without
# blocked and retained counts and sweep retention in one statement per chunk, with the
# same predicate; queue_stats is written on 46 only.
PROVEN_SCHEMAS["monitor"] = PROVEN_SCHEMAS["maintain"] = frozenset(range(40, 44)) | {46}
# Retention is the same from 12.21 (32) to 12.34; 12.19 (31) swept differently, and 12.20
# shares its schema.
PROVEN_SCHEMAS["maintain"] = PROVEN_SCHEMAS["maintain"] | frozenset(range(32, 40))
# pg-boss 10.x's own passes, proven against 10.0.0 (21), 10.0.6 (22), 10.1.1 (23), 10.1.6
# and 10.4.2 (24).
ARCHIVE_FAMILY = frozenset(range(21, 25))
PROVEN_SCHEMAS["maintain"] = PROVEN_SCHEMAS["maintain"] | ARCHIVE_FAMILY
PROVEN_SCHEMAS["cron"] = PROVEN_SCHEMAS["cron"] | ARCHIVE_FAMILY
PROVEN_SCHEMAS["send_it"] = PROVEN_SCHEMAS["send_it"] | ARCHIVE_FAMILY
# Why a pass has nothing to do on pg-boss 10.x.
ARCHIVE_FAMILY_ABSENT = {
    "monitor": "pg-boss 10.x keeps no cached counts; its expiry runs in maintain",
    "flows": "pg-boss 10.x has no flows",
    "bam": "pg-boss 10.x has no background index builds",
}

# pg-boss 12.38's sizes: queues per claim, expiry and flow batches, retention walks.
QUEUE_CHUNK = 100
FLOW_BATCHES_PER_CHUNK = 100
FLOW_BATCH_SIZE = 1000
SEND_IT_BATCH = 50
# pg-boss counts a finished job into retained_count once it is this old (DELTA_LAG).
RETAINED_LAG_MS = 10_000
# A throughput window longer than this starts afresh (pg-boss's DELTA_RESET_MAX), unless
# counting passes are further apart than half of it.
DELTA_RESET_MAX_SECONDS = 2 * 60 * 60
QUEUE_STATS_DELETION_BATCH = 10_000
# The index a bam command builds (pg-boss's bamCommandIndexName()).
_BUILT_INDEX = re.compile(r'CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+(?:IF\s+NOT\s+EXISTS\s+)?"?(\w+)"?', re.I)
# Options stored on a schedule row that are the schedule's own, never send() options.
_SCHEDULE_ONLY_OPTIONS = ("tz", "key", "missed", "db")
# The job options pg-boss 10.x's insert() reads from a send-it document (it ignores the rest).
_ARCHIVE_FAMILY_INSERT_OPTIONS = (
    "priority", "startAfter", "retryLimit", "retryDelay", "retryBackoff", "singletonKey", "singletonSeconds",
    "expireInSeconds", "deadLetter",
)  # fmt: skip


@dataclass(frozen=True)
class Intervals:
    """Seconds between two runs of each claimed pass, across every instance (pg-boss's defaults)."""

    monitor: float = 60
    maintain: float = 86_400
    flows: float = 5
    cron: float = 30
    bam: float = 60
    # pg-boss 10.x's maintenanceIntervalSeconds: its expire, archive and drop pass.
    archive_family_maintain: float = 120


@dataclass(frozen=True)
class Plan:
    """What one call runs: which passes, how often they may run, how long the call may take."""

    passes: frozenset[str] = frozenset(PASSES)
    intervals: Intervals = Intervals()
    budget_seconds: float = 20.0
    deletion_batch: int = 10_000
    dependency_batch: int = 10_000
    # pg-boss's persistQueueStats / queueStatRetentionDays: throughput counters on the
    # queue rows and one queue_stats snapshot per counted queue, kept this many days.
    queue_stats: bool = False
    queue_stat_retention_days: int = 7
    # pg-boss 10.x's archiveCompletedAfterSeconds, archiveFailedAfterSeconds (the completed
    # interval when None) and deleteAfter, at 10.x's defaults.
    archive_completed_seconds: float = 12 * 60 * 60
    archive_failed_seconds: float | None = None
    delete_after_seconds: float = 7 * 24 * 60 * 60


@dataclass
class Summary:
    """What each pass did; ``skipped`` says why a pass did nothing at all."""

    counts: dict[str, dict[str, int]] = field(default_factory=lambda: {name: {} for name in PASSES})
    skipped: dict[str, str] = field(default_factory=dict)

    def add(self, pass_name: str, key: str, amount: int = 1) -> None:
        bucket = self.counts[pass_name]
        bucket[key] = bucket.get(key, 0) + amount

    def as_dict(self) -> dict[str, Any]:
        answer: dict[str, Any] = {name: dict(self.counts[name]) for name in PASSES}
        for name, reason in self.skipped.items():
            answer[name]["skipped"] = reason
        return answer


class Supervisor:
    """Runs the due passes of one pg-boss schema within a time budget."""

    def __init__(self, boss: PgBoss, plan: Plan, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.boss = boss
        self.plan = plan
        self.clock = clock
        self._deadline = 0.0

    def run(self) -> Summary:
        """One round of every enabled pass whose claim this instance wins."""
        summary = Summary()
        self._deadline = self.clock() + self.plan.budget_seconds
        version = self.boss.schema_version()
        archive_family = version in ARCHIVE_FAMILY
        steps: dict[str, Callable[[Summary], None]] = {
            "monitor": self._monitor,
            "maintain": self._maintain_archive_family if archive_family else self._maintain,
            "flows": self._flows,
            "cron": self._cron_archive_family if archive_family else self._cron,
            "send_it": self._send_it_archive_family if archive_family else self._send_it,
            "bam": self._bam,
        }
        for name, step in steps.items():
            if name not in self.plan.passes:
                summary.skipped[name] = "turned off"
            elif archive_family and name in ARCHIVE_FAMILY_ABSENT:
                summary.skipped[name] = ARCHIVE_FAMILY_ABSENT[name]
            elif version not in PROVEN_SCHEMAS[name]:
                summary.skipped[name] = f"schema version {version} is not supported by this pass"
            elif name == "monitor" and self.plan.queue_stats and version != 46:
                summary.skipped[name] = f"queue_stats is not written on schema version {version}"
            elif self._out_of_time():
                summary.skipped[name] = "time budget spent"
            else:
                step(summary)
        return summary

    # -- helpers ----------------------------------------------------------------------

    def _out_of_time(self) -> bool:
        return self.clock() >= self._deadline

    def _run(self, statement: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return self.boss.db.run(self._sql(statement), params or {})

    def _sql(self, statement: str) -> str:
        return supervision_sql.render(statement, self.boss.schema, job_now=self.boss.capabilities.has_job_now)

    def _chunks(self) -> Iterator[tuple[str, list[str]]]:
        """Every queue's name in chunks of 100, grouped by the table its jobs live in."""
        tables: dict[str, list[str]] = {}
        for row in self._run(supervision_sql.QUEUE_TABLES):
            tables.setdefault(row["table_name"], []).append(row["name"])
        for table, names in tables.items():
            for start in range(0, len(names), QUEUE_CHUNK):
                yield table, names[start : start + QUEUE_CHUNK]

    def _claim_version(self, statement: str, seconds: float) -> bool:
        return bool(self._run(statement, {"seconds": seconds}))

    def _locked(self, lock: str, statement: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """One statement in its own transaction under pg-boss's advisory lock for that work."""
        with self.boss.db.transaction() as tx:
            tx.run(sql.advisory_lock(), {"key": self.boss.schema + lock})
            return tx.run(self._sql(statement), params)

    def _locked_batch(self, lock: str, statement: str, params: dict[str, Any]) -> dict[str, Any]:
        """One batch of a sweep under its lock; the batch's one answer row."""
        return self._locked(lock, statement, params)[0]

    # -- monitor ----------------------------------------------------------------------

    def _monitor(self, summary: Summary) -> None:
        snapshots = False
        for _table, names in self._chunks():
            if self._out_of_time():
                summary.add("monitor", "left_for_later", len(names))
                continue
            claimed = self._run(supervision_sql.CLAIM_MONITOR, {"names": names, "seconds": self.plan.intervals.monitor})
            summary.add("monitor", "not_due_or_claimed_elsewhere", len(names) - len(claimed))
            if not claimed:
                continue
            queues = [row["name"] for row in claimed]
            if claimed[0]["refresh_stats"]:
                counted = self._count(queues, summary)
                snapshots = snapshots or bool(counted)
            for name in queues:
                try:
                    outcome = self.boss.fail_expired(name)
                except QueueNotFound:
                    continue
                summary.add("monitor", "expired", len(outcome.retried) + len(outcome.failed))
                summary.add("monitor", "retried", len(outcome.retried))
                summary.add("monitor", "failed", len(outcome.failed))
                summary.add("monitor", "dead_lettered", len(outcome.dead_lettered))
            summary.add("monitor", "queues", len(queues))
        if snapshots and self.plan.queue_stats:
            self._expire_queue_stats(summary)

    def _count(self, queues: list[str], summary: Summary) -> list[dict[str, Any]]:
        """Cached counts of the claimed queues and, with queue_stats on, their throughput
        and a snapshot each; the queues counted (none when another instance held the lock)."""
        params: dict[str, Any] = {"names": queues, "lock_key": self.boss.schema + "queue-stats"}
        if not self.boss.capabilities.retained_count:
            counted = self._run(supervision_sql.REFRESH_QUEUE_COUNTS_WITHOUT_RETAINED, params)
        elif not self.plan.queue_stats:
            counted = self._run(supervision_sql.REFRESH_QUEUE_COUNTS, params)
        else:
            params["reset_seconds"] = max(DELTA_RESET_MAX_SECONDS, 2 * self.plan.intervals.monitor)
            counted = self._run(supervision_sql.REFRESH_QUEUE_COUNTS_AND_THROUGHPUT, params)
        summary.add("monitor", "counted", len(counted))
        summary.add("monitor", "counts_locked_elsewhere", len(queues) - len(counted))
        if not counted or not self.plan.queue_stats:
            return counted
        if self._queue_stats_partitioned():
            self._run(supervision_sql.ENSURE_QUEUE_STATS_PARTITIONS)
        written = [row["name"] for row in counted]
        self._locked("queue-stats-insert", supervision_sql.INSERT_QUEUE_STATS, {"names": written})
        summary.add("monitor", "snapshots", len(written))
        late = [row["name"] for row in counted if row["true_up"]]
        if late:
            raised = self._run(
                supervision_sql.TRUE_UP_QUEUE_STATS,
                {"names": late, "lock_key": self.boss.schema + "queue-stats"},
            )
            summary.add("monitor", "snapshots_trued_up", raised[0]["raised"] if raised else 0)
        return counted

    def _queue_stats_partitioned(self) -> bool:
        rows = self._run(supervision_sql.QUEUE_STATS_PARTITIONED, {"schema_name": self.boss.schema})
        return bool(rows and rows[0]["partitioned"])

    def _expire_queue_stats(self, summary: Summary) -> None:
        """queue_stats retention: whole days dropped, or old rows deleted in batches."""
        days = self.plan.queue_stat_retention_days
        if self._queue_stats_partitioned():
            self._run(supervision_sql.DROP_OLD_QUEUE_STATS_PARTITIONS.replace("{days}", str(int(days))))
            return
        after: str | None = None
        while not self._out_of_time():
            row = self._run(
                supervision_sql.DELETE_OLD_QUEUE_STATS,
                {"days": days, "after": after, "batch_size": QUEUE_STATS_DELETION_BATCH},
            )[0]
            summary.add("monitor", "snapshots_deleted", row["deleted"])
            if row["cursor"] is None:
                return
            after = row["cursor"]

    # -- maintain ---------------------------------------------------------------------

    def _maintain(self, summary: Summary) -> None:
        for table, names in self._chunks():
            if self._out_of_time():
                summary.add("maintain", "left_for_later", len(names))
                continue
            claimed = self._run(
                supervision_sql.CLAIM_MAINTAIN, {"names": names, "seconds": self.plan.intervals.maintain}
            )
            summary.add("maintain", "not_due_or_claimed_elsewhere", len(names) - len(claimed))
            if not claimed:
                continue
            queues = [row["name"] for row in claimed]
            finished = 0
            try:
                while finished < len(queues) and self._maintain_queue(table, queues[finished], summary):
                    finished += 1
            finally:
                if finished < len(queues):
                    self._run(
                        supervision_sql.RELEASE_MAINTAIN,
                        {"names": queues[finished:], "claimed_on": claimed[0]["claimed_on"]},
                    )
                    summary.add("maintain", "unfinished", len(queues) - finished)
            summary.add("maintain", "queues", finished)

    def _maintain_queue(self, table: str, name: str, summary: Summary) -> bool:
        """Retention, retained count and dependency cleanup of one queue; whether all of it ran."""
        now_ms = int(self._run(supervision_sql.DATABASE_TIME)[0]["time"])
        retained_before = now_ms - RETAINED_LAG_MS
        tally = {"retained": 0, "deleted": 0, "deleted_retained": 0}
        retained_count = self.boss.capabilities.retained_count
        deletion_batch = (
            supervision_sql.DELETION_BATCH if retained_count else supervision_sql.DELETION_BATCH_WITHOUT_RETAINED
        )

        def deletion(after: str | None) -> dict[str, Any]:
            params = {
                "name": name,
                "after": after,
                "batch_size": self.plan.deletion_batch,
                "retained_before": retained_before,
            }
            row = self._locked_batch(table + "deletion", deletion_batch, params)
            tally["retained"] += row["retained"]
            tally["deleted"] += row["deleted"]
            tally["deleted_retained"] += row["deleted_retained"]
            return row

        done = False
        try:
            done = self._walk(deletion)
        finally:
            summary.add("maintain", "deleted", tally["deleted"])
            if retained_count and not done and tally["deleted"]:
                params = {"name": name, "retained": tally["deleted_retained"], "deleted": tally["deleted"]}
                self._run(supervision_sql.REDUCE_RETAINED_COUNT, params)
        if done and retained_count:
            params = {"name": name, "retained": tally["retained"], "retained_before": retained_before}
            self._run(supervision_sql.SET_RETAINED_COUNT, params)
        walked = done
        for statement in (supervision_sql.CLEANUP_CHILD_DEPENDENCIES, supervision_sql.CLEANUP_PARENT_DEPENDENCIES):

            def cleanup(after: str | None, statement: str = statement) -> dict[str, Any]:
                params = {"name": name, "after": after, "batch_size": self.plan.dependency_batch}
                row = self._locked_batch(table + "cleanupDependencies", statement, params)
                summary.add("maintain", "dependencies_deleted", row["deleted"])
                return row

            walked = self._walk(cleanup) and walked
        return walked

    def _walk(self, batch: Callable[[str | None], dict[str, Any]]) -> bool:
        """Run a key walk batch by batch; whether it reached the end inside the budget."""
        after: str | None = None
        while not self._out_of_time():
            row = batch(after)
            if row["cursor"] is None:
                return True
            after = row["cursor"]
        return False

    # -- flows ------------------------------------------------------------------------

    def _flows(self, summary: Summary) -> None:
        if not self._claim_version(supervision_sql.CLAIM_FLOW, self.plan.intervals.flows):
            summary.skipped["flows"] = "claimed elsewhere or not due"
            return
        resolve = (
            supervision_sql.RESOLVE_FLOWS
            if self.boss.schema_version() >= 46
            else supervision_sql.RESOLVE_FLOWS_KEEPING_START_AFTER
        )
        for _table, names in self._chunks():
            for _ in range(FLOW_BATCHES_PER_CHUNK):
                if self._out_of_time():
                    summary.add("flows", "left_for_later")
                    return
                row = self._run(resolve, {"names": names})[0]
                summary.add("flows", "parents_resolved", row["resolved"])
                summary.add("flows", "released", row["released"])
                if row["resolved"] < FLOW_BATCH_SIZE:
                    break

    # -- cron -------------------------------------------------------------------------

    def _cron(self, summary: Summary) -> None:
        [claim] = self._run(supervision_sql.CLAIM_CRON, {"seconds": self.plan.intervals.cron})
        if not claim["claimed"]:
            summary.skipped["cron"] = "claimed elsewhere or not due"
            return
        now: datetime = claim["now"]
        prior: datetime | None = claim["prior_cron_on"]
        window_start = now - cron.OCCURRENCE_WINDOW
        occurrences: list[dict[str, Any]] = []
        relabelled: list[dict[str, str]] = []
        for row in self._run(supervision_sql.GET_SCHEDULES, {"name": None}):
            summary.add("cron", "schedules")
            name, key, expression, tz = row["name"], row["key"], row["cron"], row["timezone"]
            options = json.loads(row["options"]) if row["options"] else {}
            try:
                due = cron.due_occurrences(expression, row["kind"], tz, now)
            except (cron.InvalidSchedule, ValueError) as error:
                log.warning("schedule %s (key %r) could not be evaluated and was skipped: %s", name, key, error)
                summary.add("cron", "invalid")
                continue
            slots = {cron.slot(instant) for instant in due.occurrences}
            missed = self._missed(row, options, due.kind, prior, window_start)
            if missed is not None:
                slots.add(cron.slot(missed))
            if due.kind != row["kind"]:
                relabelled.append({"name": name, "key": key, "kind": due.kind, "cron": expression})
            data = json.loads(row["data"]) if row["data"] is not None else None
            for slot in sorted(slots):
                document = {"name": name, "key": key, "data": data, "options": options, "slot": slot}
                occurrences.append({"data": document, "singleton_key": cron.occurrence_key(name, key), "slot": slot})
        if occurrences:
            self._ensure_send_it_queue()
            filed = self._run(
                supervision_sql.INSERT_OCCURRENCES,
                {"name": SEND_IT_QUEUE, "occurrences": json.dumps(occurrences)},
            )
            summary.add("cron", "slots_filed", len(filed))
            summary.add("cron", "slots_already_filed", len(occurrences) - len(filed))
        if relabelled:
            self._run(supervision_sql.SET_SCHEDULE_KINDS, {"kinds": json.dumps(relabelled)})

    @staticmethod
    def _missed(
        row: dict[str, Any], options: dict[str, Any], kind: str, prior: datetime | None, window_start: datetime
    ) -> datetime | None:
        """With ``missed: 'once'``, the latest occurrence in the gap since the last pass."""
        if options.get("missed") != "once" or prior is None:
            return None
        start = max(prior, row["created_on"]) if row["created_on"] is not None else prior
        if start >= window_start:
            return None
        try:
            return cron.latest_between(row["cron"], kind, row["timezone"], start, window_start)
        except (cron.InvalidSchedule, ValueError):
            return None

    def _ensure_send_it_queue(self) -> None:
        if self.boss.get_queue(SEND_IT_QUEUE) is None:
            self.boss.create_queue(SEND_IT_QUEUE)

    # -- send-it worker ---------------------------------------------------------------

    def _send_it(self, summary: Summary) -> None:
        if self.boss.get_queue(SEND_IT_QUEUE) is None:
            return
        while not self._out_of_time():
            jobs = self._run(supervision_sql.FETCH_OCCURRENCES, {"name": SEND_IT_QUEUE, "limit": SEND_IT_BATCH})
            if not jobs:
                return
            fired: dict[tuple[str, str], tuple[str, str]] = {}
            for job in jobs:
                document = job["data"] if isinstance(job["data"], dict) else {}
                sent = self._forward(document)
                summary.add("send_it", "sent" if sent else "not_sent")
                key, slot = document.get("key"), document.get("slot")
                if sent is None or not isinstance(key, str):
                    continue
                filed = slot if isinstance(slot, str) else cron.slot(datetime.now(UTC))
                target = (document["name"], key)
                if target not in fired or fired[target][0] <= filed:
                    fired[target] = (filed, sent)
            if fired:
                records = [{"name": name, "key": key, "job_id": job_id} for (name, key), (_, job_id) in fired.items()]
                self._run(supervision_sql.SET_SCHEDULE_LAST_JOB_IDS, {"fired": json.dumps(records)})
            self._run(
                supervision_sql.COMPLETE_OCCURRENCES,
                {"name": SEND_IT_QUEUE, "ids": [str(job["id"]) for job in jobs]},
            )
            if len(jobs) < SEND_IT_BATCH:
                return

    def _forward(self, document: dict[str, Any]) -> str | None:
        """Send one occurrence's job to its queue; its id, or None when it was not sent."""
        options = {
            key: value for key, value in (document.get("options") or {}).items() if key not in _SCHEDULE_ONLY_OPTIONS
        }
        try:
            return self.boss.send(document["name"], document.get("data"), SendOptions.model_validate(options))
        except Exception as error:  # one bad schedule must not cost the others their jobs
            log.warning(
                "schedule %s (key %r) fired but its job was not sent: %s",
                document.get("name"),
                document.get("key"),
                error,
            )
            return None

    # -- pg-boss 10.x ---------------------------------------------------------------------

    def _maintain_archive_family(self, summary: Summary) -> None:
        """10.x's maintenance: expire, archive, drop, each under the schema's own lock."""
        if not self._run(
            supervision_sql.CLAIM_MAINTAIN_ARCHIVE_FAMILY, {"seconds": self.plan.intervals.archive_family_maintain}
        ):
            summary.skipped["maintain"] = "claimed elsewhere or not due"
            return
        for row in self._run(supervision_sql.QUEUE_NAMES):
            if self._out_of_time():
                summary.add("maintain", "left_for_later")
                return
            try:
                outcome = self.boss.fail_expired(row["name"])
            except QueueNotFound:
                continue
            summary.add("maintain", "expired", len(outcome.retried) + len(outcome.failed))
            summary.add("maintain", "retried", len(outcome.retried))
            summary.add("maintain", "failed", len(outcome.failed))
            summary.add("maintain", "dead_lettered", len(outcome.dead_lettered))
        if self._out_of_time():
            summary.add("maintain", "left_for_later")
            return
        completed = self.plan.archive_completed_seconds
        failed = self.plan.archive_failed_seconds if self.plan.archive_failed_seconds is not None else completed
        [archived] = self._locked(
            "", supervision_sql.ARCHIVE_FINISHED, {"completed_seconds": completed, "failed_seconds": failed}
        )
        summary.add("maintain", "archived", archived["archived"])
        [dropped] = self._locked(
            "", supervision_sql.DROP_ARCHIVED, {"delete_after_seconds": self.plan.delete_after_seconds}
        )
        summary.add("maintain", "deleted", dropped["dropped"])

    def _cron_archive_family(self, summary: Summary) -> None:
        """10.x's timekeeper: a schedule is due while its latest cron occurrence is under
        60 s old, and files one send-it job under its name in the current minute's slot."""
        claimed = self._run(supervision_sql.CLAIM_CRON_ARCHIVE_FAMILY, {"seconds": self.plan.intervals.cron})
        if not claimed:
            summary.skipped["cron"] = "claimed elsewhere or not due"
            return
        now: datetime = claimed[0]["now"]
        due: list[dict[str, Any]] = []
        for row in self._run(supervision_sql.GET_SCHEDULES_ARCHIVE_FAMILY):
            summary.add("cron", "schedules")
            try:
                occurrences = cron.due_occurrences(row["cron"], cron.CRON, row["timezone"], now).occurrences
            except (cron.InvalidSchedule, ValueError) as error:
                log.warning("schedule %s could not be evaluated and was skipped: %s", row["name"], error)
                summary.add("cron", "invalid")
                continue
            if occurrences:
                due.append(row)
        if not due:
            return
        self._ensure_send_it_queue()
        for row in due:
            options = json.loads(row["options"]) if row["options"] else {}
            data = json.loads(row["data"]) if row["data"] is not None else None
            document = {"name": row["name"], "data": data, **options}
            filed = self.boss.send(
                SEND_IT_QUEUE, document, SendOptions(singleton_key=row["name"], singleton_seconds=60)
            )
            summary.add("cron", "slots_filed" if filed else "slots_already_filed")

    def _send_it_archive_family(self, summary: Summary) -> None:
        """10.x's send-it worker: each job's document is inserted into its target queue."""
        if self.boss.get_queue(SEND_IT_QUEUE) is None:
            return
        while not self._out_of_time():
            jobs = self._run(
                supervision_sql.FETCH_OCCURRENCES_ARCHIVE_FAMILY, {"name": SEND_IT_QUEUE, "limit": SEND_IT_BATCH}
            )
            if not jobs:
                return
            for job in jobs:
                document = job["data"] if isinstance(job["data"], dict) else {}
                # Up to 10.1.5 Node files the schedule's options nested under "options", where
                # its insert never reads them; they are left unread here too, so a job sends
                # the same whichever worker takes it.
                options = {key: document[key] for key in _ARCHIVE_FAMILY_INSERT_OPTIONS if key in document}
                sent = self._forward({"name": document.get("name"), "data": document.get("data"), "options": options})
                summary.add("send_it", "sent" if sent else "not_sent")
            self._run(
                supervision_sql.COMPLETE_OCCURRENCES_ARCHIVE_FAMILY,
                {"name": SEND_IT_QUEUE, "ids": [job["id"] for job in jobs]},
            )
            if len(jobs) < SEND_IT_BATCH:
                return

    # -- background index builds -------------------------------------------------------

    def _bam(self, summary: Summary) -> None:
        if self.boss.db.through_transaction_pooler:
            # CREATE INDEX CONCURRENTLY refuses to run inside a transaction block, and through
            # a transaction pooler every statement runs in one.
            summary.skipped["bam"] = "index builds need a session: DATABASE_URL is a transaction pooler (port 6543)"
            return
        if not self._claim_version(supervision_sql.CLAIM_BAM, self.plan.intervals.bam):
            summary.skipped["bam"] = "claimed elsewhere or not due"
            return
        pending_only = False
        while not self._out_of_time():
            with self.boss.db.transaction() as tx:
                tx.run(sql.advisory_lock(), {"key": self.boss.schema + "bamClaim"})
                claimed = tx.run(
                    self._sql(supervision_sql.CLAIM_BAM_COMMAND),
                    {"pending_only": pending_only, "schema_name": self.boss.schema},
                )
            if not claimed:
                return
            pending_only = True
            [command] = claimed
            try:
                self._build(command)
            except Exception as error:  # recorded on the row, retried by a later pass
                self._run(supervision_sql.SET_BAM_FAILED, {"id": command["id"], "error": str(error)})
                summary.add("bam", "failed")
            else:
                self._run(supervision_sql.SET_BAM_COMPLETED, {"id": command["id"]})
                summary.add("bam", "completed")

    def _build(self, command: dict[str, Any]) -> None:
        """Run one bam command, healing an invalid index an earlier attempt left behind."""
        match = _BUILT_INDEX.match(command["command"].strip())
        index = match.group(1) if match else None
        if index is not None and command["reattempt"]:
            state = self._index_state(index)
            if state and state["invalid"]:
                self._run(supervision_sql.BAM_DROP_INVALID_INDEX.replace("{index}", index))
            elif state:
                return  # built by the attempt that did not live to record it
        tagged = supervision_sql.BAM_TAGGED_COMMAND.replace("{id}", command["id"])
        self.boss.db.run(tagged.replace("{command}", command["command"]))
        if index is not None:
            state = self._index_state(index)
            if not state or state["invalid"]:
                raise RuntimeError(f"index {index} is {'invalid' if state else 'missing'} after the build")

    def _index_state(self, index: str) -> dict[str, Any] | None:
        rows = self._run(supervision_sql.BAM_INDEX_STATE, {"schema_name": self.boss.schema, "index_name": index})
        return rows[0] if rows else None
