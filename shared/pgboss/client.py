"""``PgBoss``: the one object that reads and writes pg-boss's tables.

Function modules call its verbs and get domain objects back; they never see SQL or
a cursor. Statements come from ``shared.pgboss.sql``, rendered for the installed
schema's ``Capabilities`` (detected once, on first use, and again when a statement
finds the schema changed). Every row it writes is the row the installed pg-boss
release would have written for the same call, so Node workers, a Node supervisor and
this package can work the same queues at once. An option the installed schema lacks
is refused (``OptionNotSupported``), never dropped.

Database errors that mean something to a caller become typed errors: a missing or
different schema for every statement (``_schema_errors``), and what only a verb can
explain for that verb (``_queue_errors``: a missing queue, a key_strict_fifo job
without a key). Fetch adds pg-boss's one tolerated failure, a lost race for a policy
slot, which is an empty fetch.

Retrying belongs to ``Database``: a statement is marked safe to repeat when running it
twice does no harm, and the database repeats it once on a fresh connection.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from uuid import UUID

from shared.db import Database, Row
from shared.errors import DatabaseError
from shared.pgboss import encoding, sql
from shared.pgboss.capabilities import SUPPORTED_SCHEMA_VERSIONS, Capabilities
from shared.pgboss.errors import (
    InternalQueue,
    InvalidQueue,
    JobNotFound,
    OptionNotSupported,
    QueueNotFound,
    SchemaMissing,
    SingletonKeyRequired,
    UnsupportedSchemaVersion,
)
from shared.pgboss.models import (
    INTERNAL_QUEUE_PREFIX,
    FailOutcome,
    Job,
    JobDetails,
    JobRequest,
    Queue,
    QueueOptions,
    QueuePolicy,
    SendOptions,
    check_queue_name,
)

# findJobs' page size when none is given, and the largest this client reads at once
# (pg-boss allows 100,000; a page that large is for a script, not a status read).
FIND_JOBS_LIMIT = 100
FIND_JOBS_MAX_LIMIT = 1000

# pg-boss's monitor fails expired jobs in batches of this many, one transaction each.
EXPIRY_BATCH_SIZE = 1000

# A schema that is not there at all, or one whose tables or functions are not the ones
# these statements were written for.
_SCHEMA_ABSENT = {"3F000", "42P01"}
_SCHEMA_DIFFERENT = {"42703", "42883"}
_UNIQUE_VIOLATION = "23505"
_FOREIGN_KEY_VIOLATION = "23503"
_CHECK_VIOLATION = "23514"
_KEY_STRICT_FIFO_CHECK = "job_key_strict_fifo_singleton_key_check"

_SINGLETON_POLICIES = {QueuePolicy.SINGLETON, QueuePolicy.STATELY}


class PgBoss:
    """Client of one pg-boss schema in one database."""

    def __init__(self, db: Database, schema: str = "pgboss", *, queue_cache_seconds: float = 60.0) -> None:
        self.db = db
        self.schema = schema
        self.queue_cache_seconds = queue_cache_seconds
        sql.quoted_schema(schema)
        self._capabilities: Capabilities | None = None
        self._detected_at = 0.0
        self._queues: dict[str, tuple[float, Queue]] = {}

    @property
    def notify_channel(self) -> str:
        """The LISTEN/NOTIFY channel pg-boss (32+) uses for this schema's notify queues."""
        return "pgboss_" + hashlib.sha224(self.schema.encode()).hexdigest()[:24]

    # -- schema -----------------------------------------------------------------------

    def detect(self) -> Capabilities:
        """Read the installed schema's capabilities now, supported or not.

        Raises ``SchemaMissing`` when pg-boss is absent.
        """
        rows = self.db.run(
            sql.schema_installed(),
            {"version_table": f"{sql.quoted_schema(self.schema)}.version"},
            safe_to_retry=True,
        )
        if not rows[0]["installed"]:
            raise SchemaMissing(self.schema)
        return Capabilities.from_row(self.db.run(sql.capabilities(self.schema), safe_to_retry=True)[0])

    @property
    def capabilities(self) -> Capabilities:
        """The installed schema's capabilities, detected on first use and kept for
        ``queue_cache_seconds``, so a pg-boss upgrade by the Node app is noticed as
        soon as a queue's changed settings would be.

        Raises ``UnsupportedSchemaVersion`` for a schema outside the supported range.
        """
        stale = time.monotonic() - self._detected_at >= self.queue_cache_seconds
        if self._capabilities is None or stale:
            return self.check_schema()
        return self._capabilities

    def schema_version(self) -> int:
        """The installed schema version; raises ``SchemaMissing`` when pg-boss is absent."""
        return self.detect().schema_version

    def check_schema(self) -> Capabilities:
        """Detect the schema again and keep it, after checking this package supports it."""
        caps = self.detect()
        self._detected_at = time.monotonic()
        if not caps.supported:
            self._capabilities = None
            raise UnsupportedSchemaVersion(caps.schema_version, SUPPORTED_SCHEMA_VERSIONS)
        if caps != self._capabilities:
            self._capabilities = caps
            self._queues.clear()
        return caps

    # -- queues -----------------------------------------------------------------------

    def get_queue(self, name: str) -> Queue | None:
        """The queue's configuration, cached for ``queue_cache_seconds`` like pg-boss does."""
        cached = self._queues.get(name)
        if cached is not None and time.monotonic() - cached[0] < self.queue_cache_seconds:
            return cached[1]
        rows = self._run(sql.get_queue(self.capabilities, self.schema), {"name": name}, safe_to_retry=True)
        if not rows:
            self._forget(name)
            return None
        return self._remember(Queue.from_row(rows[0]))

    def get_queues(self) -> list[Queue]:
        """Every queue, with job counts computed now (pg-boss's stats columns lag)."""
        statement = sql.get_queues(self.capabilities, self.schema)
        return [Queue.from_row(row) for row in self._run(statement, {}, safe_to_retry=True)]

    def create_queue(self, name: str, options: QueueOptions | None = None) -> Queue:
        """Create the queue through pg-boss's ``create_queue`` function; idempotent.

        Runs like Node's ``createQueue()``: in a transaction holding the ``create-queue``
        advisory lock. An existing queue is left unchanged and returned as it is.
        """
        options = options or QueueOptions()
        try:
            check_queue_name(name)
        except ValueError as error:
            raise InvalidQueue(name, "name", str(error)) from None
        if options.dead_letter == name:
            raise InvalidQueue(name, "deadLetter", "deadLetter cannot be the queue itself")
        caps = self.capabilities
        wire = options.wire()
        for option in caps.queue_options_missing(wire, options.policy.value):
            raise OptionNotSupported(option, caps.schema_version, caps.releases, queue=name)
        if caps.archive:
            wire = encoding.archive_queue_options(wire)
        params = {"name": name, "options": encoding.encode(wire)}
        try:
            with self._queue_errors([name, options.dead_letter or name]), self.db.transaction() as tx:
                tx.run(sql.advisory_lock(), {"key": self.schema + "create-queue"})
                tx.run(sql.create_queue(caps, self.schema), params)
                row = tx.run(sql.get_queue(caps, self.schema), {"name": name})[0]
        except DatabaseError as error:
            # Before 24 (10.1.5) create_queue raises for an existing queue, and 10.x's Node
            # createQueue takes no lock: a Node app created it between our check and insert.
            if error.sqlstate != _UNIQUE_VIOLATION or caps.create_queue_idempotent:
                raise
            self._forget(name)
            return self._require_queue(name)
        return self._remember(Queue.from_row(row))

    def _require_queue(self, name: str) -> Queue:
        queue = self.get_queue(name)
        if queue is None:
            raise QueueNotFound(name)
        return queue

    def _remember(self, queue: Queue) -> Queue:
        self._queues[queue.name] = (time.monotonic(), queue)
        return queue

    def _forget(self, name: str) -> None:
        self._queues.pop(name, None)

    # -- sending ----------------------------------------------------------------------

    def send(self, name: str, data: Any = None, options: SendOptions | None = None) -> str | None:
        """Queue one job; its id, or None when pg-boss's dedupe rules suppressed it."""
        return self.insert([JobRequest(name, data, options or SendOptions())])[0]

    def insert(self, jobs: Sequence[JobRequest]) -> list[str | None]:
        """Queue a batch in one statement, all or nothing; ids aligned with ``jobs``.

        ``None`` marks a job suppressed by a policy, throttle/debounce slot or an id
        already in its queue. A missing queue or dead letter queue anywhere raises
        ``QueueNotFound``, a key_strict_fifo job without a key ``SingletonKeyRequired``
        naming the job; either way nothing is written.
        """
        if not jobs:
            return []
        caps = self.capabilities
        for index, job in enumerate(jobs):
            for option in caps.send_options_missing(job.options.wire()):
                raise OptionNotSupported(option, caps.schema_version, caps.releases, queue=job.name, job_index=index)
        rows = encoding.job_rows(jobs)
        params = {"jobs": encoding.encode(rows), "channel": self.notify_channel}
        names = [job.name for job in jobs] + [job.options.dead_letter for job in jobs if job.options.dead_letter]
        debounced = any(job.options.singleton_next_slot for job in jobs)
        statement = sql.insert_jobs(caps, self.schema, debounce=debounced)
        try:
            with self._queue_errors(names, jobs):
                [answer] = self._run(statement, params)
        except DatabaseError as error:
            if error.sqlstate != _FOREIGN_KEY_VIOLATION:
                raise
            # Every queue named exists by now (else QueueNotFound): one was created after the
            # statement began, by a caller racing us. The statement wrote nothing; run it again.
            with self._queue_errors(names, jobs):
                [answer] = self._run(statement, params)
        return [job_id or None for job_id in answer["ids"].split(",")]

    # -- working ----------------------------------------------------------------------

    def fetch(
        self,
        name: str,
        batch_size: int = 1,
        *,
        group_concurrency: int | Mapping[str, Any] | None = None,
        include_metadata: bool = False,
    ) -> list[Job]:
        """Claim up to ``batch_size`` jobs as the installed pg-boss's ``fetch()`` would.

        ``group_concurrency`` caps active jobs per ``group.id`` across every worker that
        applies the same limit (an int, or ``{"default": n, "tiers": {tier: m}}``); a
        schema without groups (before 27) has no grouped jobs, so it limits nothing.
        Losing a race for a singleton slot yields an empty batch, as in pg-boss. Repeated
        once on a fresh connection when the first answer was lost: jobs that lost claim
        went to nobody either way (pg-boss's expiry retries them), and asking again claims
        others, never the same.
        """
        if name.startswith(INTERNAL_QUEUE_PREFIX):
            raise InternalQueue(name)
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError("batch_size must be an integer >= 1")
        group_limit, group_tiers = encoding.group_limits(group_concurrency)
        policy = self._require_queue(name).policy
        params = {
            "name": name,
            "limit": batch_size,
            "group_limit": group_limit,
            "group_tiers": group_tiers,
        }
        caps = self.capabilities
        statement = sql.fetch_jobs(
            caps,
            self.schema,
            policy=policy.value,
            grouped=group_limit is not None and caps.groups,
            detailed=include_metadata,
        )
        if policy in _SINGLETON_POLICIES:
            params["policy"] = policy.value
        try:
            rows = self._run(statement, params, safe_to_retry=True)
        except DatabaseError as error:
            # pg-boss 12.38 treats a unique violation during fetch as an empty fetch:
            # another worker won the policy slot between our probe and our claim.
            if error.sqlstate == _UNIQUE_VIOLATION:
                return []
            raise
        shape = JobDetails if include_metadata else Job
        return [shape.from_row(row) for row in rows]

    def complete(self, name: str, results: Sequence[tuple[Job, Any]]) -> list[str]:
        """Complete fetched jobs with their outputs; the ids that were still held.

        Fenced on each job's fetched attempt, so a job that expired or was claimed again
        since is left alone, and a repeat after a lost answer changes nothing. Outputs
        are stored as pg-boss stores them.
        """
        if not results:
            return []
        self._require_queue(name)
        params = {"name": name, "jobs": encoding.encode(encoding.settle_rows(results))}
        statement = sql.complete_jobs(self.capabilities, self.schema)
        return [str(row["id"]) for row in self._run(statement, params, safe_to_retry=True)]

    def fail(self, name: str, failures: Sequence[tuple[Job, Any]]) -> FailOutcome:
        """Fail fetched jobs with their errors: retry, fail for good, dead-letter.

        Fenced like ``complete`` (so safe to repeat); each error is stored via ``error_output``.
        """
        if not failures:
            return FailOutcome()
        self._require_queue(name)
        params = {"name": name, "jobs": encoding.encode(encoding.settle_rows(failures))}
        return _outcome(self._run(sql.fail_jobs(self.capabilities, self.schema), params, safe_to_retry=True))

    def fail_expired(self, name: str) -> FailOutcome:
        """Fail the queue's timed-out and (30+) heartbeat-lost jobs, as pg-boss's monitor does.

        Each batch of up to 1000 runs in its own transaction under the advisory lock
        pg-boss takes for the same sweep of the queue's table (10.x: the schema's own lock,
        which its supervisor holds while it expires every queue), so this can run next to
        a Node supervisor without failing a job twice.
        """
        table = self._require_queue(name).table_name
        caps = self.capabilities
        sweeps = [(sql.fail_expired(caps, self.schema, heartbeat=False), "failJobsByTimeout")]
        if caps.heartbeats:
            sweeps.append((sql.fail_expired(caps, self.schema, heartbeat=True), "failJobsByHeartbeat"))
        rows: list[Row] = []
        for statement, lock in sweeps:
            key = self.schema if caps.archive else self.schema + table + lock
            while True:
                with self._schema_errors(), self.db.transaction() as tx:
                    tx.run(sql.advisory_lock(), {"key": key})
                    batch = tx.run(statement, {"name": name, "limit": EXPIRY_BATCH_SIZE})
                rows.extend(row for row in batch if row["id"] is not None)
                if batch[0]["picked"] < EXPIRY_BATCH_SIZE:
                    break
        return _outcome(rows)

    def touch(self, name: str, jobs: Sequence[Job]) -> int:
        """Refresh the heartbeat of jobs still held by their fetched attempt (idempotent);
        how many were. Before schema 30 there is no heartbeat: it only counts the held ones."""
        if not jobs:
            return 0
        self._require_queue(name)
        params = {"name": name, "jobs": encoding.encode(encoding.attempt_rows(jobs))}
        return len(self._run(sql.touch_jobs(self.capabilities, self.schema), params, safe_to_retry=True))

    # -- managing ---------------------------------------------------------------------

    def cancel(self, name: str, ids: Collection[str | UUID]) -> int:
        """Cancel jobs that have not finished (active ones too); how many were."""
        return self._by_ids(sql.cancel_jobs, name, ids)

    def resume(self, name: str, ids: Collection[str | UUID]) -> int:
        """Queue cancelled jobs again; how many were."""
        return self._by_ids(sql.resume_jobs, name, ids, count_column="changed")

    def retry(self, name: str, ids: Collection[str | UUID]) -> int:
        """Give failed jobs one more attempt; how many were."""
        return self._by_ids(sql.retry_jobs, name, ids)

    def delete_jobs(self, name: str, ids: Collection[str | UUID]) -> int:
        """Delete jobs in any state; how many were."""
        return self._by_ids(sql.delete_jobs, name, ids, count_column="changed")

    def get_job(self, name: str, id: str | UUID, *, include_metadata: bool = False) -> Job | None:
        """One job by queue and id (ids are unique per queue only), or None."""
        try:
            (job_id,) = encoding.job_ids([id])
        except ValueError:
            return None
        statement = sql.get_job(self.capabilities, self.schema)
        rows = self._run(statement, {"name": name, "id": job_id}, safe_to_retry=True)
        if not rows:
            return None
        return (JobDetails if include_metadata else Job).from_row(rows[0])

    def find_jobs(
        self,
        name: str,
        *,
        ids: Collection[str | UUID] | None = None,
        key: str | None = None,
        data: Any = None,
        queued: bool = False,
        after: str | UUID | None = None,
        limit: int = FIND_JOBS_LIMIT,
    ) -> list[JobDetails]:
        """pg-boss's ``findJobs()``: the queue's jobs matching every filter given, oldest
        first, at most ``limit``: by ``ids``, by singleton ``key``, whose data contains
        ``data`` (JSON containment; None filters nothing), not yet active (``queued``).
        ``after`` (the last id of the previous page) reads the next page.

        Raises ``QueueNotFound`` for a queue that does not exist, ``JobNotFound`` when
        ``after`` names a job no longer in the queue (the page would silently end there),
        ``ValueError`` for an id that is not a uuid or a limit out of range.
        """
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= FIND_JOBS_MAX_LIMIT:
            raise ValueError(f"limit must be an integer from 1 to {FIND_JOBS_MAX_LIMIT}")
        (anchor,) = encoding.job_ids([after]) if after is not None else (None,)
        params: dict[str, Any] = {"name": name, "limit": limit}
        if ids is not None:
            params["ids"] = encoding.job_ids(ids)
        if key is not None:
            params["key"] = key
        if data is not None:
            params["data"] = encoding.encode(data)
        if anchor is not None:
            params["after"] = anchor
        self._require_queue(name)
        statement = sql.find_jobs(
            self.capabilities,
            self.schema,
            by_ids=ids is not None,
            by_key=key is not None,
            by_data=data is not None,
            queued=queued,
            after=anchor is not None,
        )
        rows = self._run(statement, params, safe_to_retry=True)
        if not rows and anchor is not None and self.get_job(name, anchor) is None:
            raise JobNotFound(name, anchor)
        return [JobDetails.from_row(row) for row in rows]

    def _by_ids(
        self,
        builder: Callable[[Capabilities, str], str],
        name: str,
        ids: Collection[str | UUID],
        count_column: str | None = None,
    ) -> int:
        if not ids:
            return 0
        self._require_queue(name)
        statement = builder(self.capabilities, self.schema)
        rows = self._run(statement, {"name": name, "ids": encoding.job_ids(ids)})
        return int(rows[0][count_column]) if count_column else len(rows)

    # -- statements and their errors ---------------------------------------------------

    def _run(self, statement: str, params: Mapping[str, Any], *, safe_to_retry: bool = False) -> list[Row]:
        """Run one statement; a missing or different schema becomes a typed error here."""
        with self._schema_errors():
            return self.db.run(statement, params, safe_to_retry=safe_to_retry)

    @contextmanager
    def _schema_errors(self) -> Iterator[None]:
        """3F000/42P01: pg-boss is not installed in the schema; 42703/42883: a column or
        function is missing, i.e. the schema is at a version we do not support."""
        try:
            yield
        except DatabaseError as error:
            if error.sqlstate in _SCHEMA_ABSENT:
                raise SchemaMissing(self.schema) from error
            if error.sqlstate in _SCHEMA_DIFFERENT:
                # The schema changed under us (pg-boss was upgraded): detect it again.
                self._capabilities = None
                self.check_schema()
            raise

    @contextmanager
    def _queue_errors(self, queues: Sequence[str], jobs: Sequence[JobRequest] = ()) -> Iterator[None]:
        """Translate what a caller can act on when writing jobs or queues, naming the culprit.

        23503: a job or queue named a queue (or dead letter queue) that does not exist;
        on 10.x a job for a missing queue finds no partition of ``job`` (23514).
        23514 from key_strict_fifo's check: a job for such a queue had no singletonKey.
        """
        try:
            with self._schema_errors():
                yield
        except DatabaseError as error:
            if error.sqlstate in (_FOREIGN_KEY_VIOLATION, _CHECK_VIOLATION):
                missing = self._missing_queue(queues)
                if missing is not None:
                    raise QueueNotFound(missing) from error
            if error.sqlstate == _CHECK_VIOLATION and _KEY_STRICT_FIFO_CHECK in error.message:
                raise self._keyless_job(jobs) from error
            raise

    def _missing_queue(self, names: Sequence[str]) -> str | None:
        existing = {
            row["name"]
            for row in self.db.run(sql.existing_queues(self.schema), {"names": sorted(set(names))}, safe_to_retry=True)
        }
        missing = sorted(set(names) - existing)
        for name in missing:
            self._forget(name)
        return missing[0] if missing else None

    def _keyless_job(self, jobs: Sequence[JobRequest]) -> SingletonKeyRequired:
        """The refusal for the first job without a key whose queue is key_strict_fifo."""
        keyless = [(index, job.name) for index, job in enumerate(jobs) if job.options.singleton_key is None]
        for name in dict.fromkeys(name for _, name in keyless):
            self._forget(name)
            queue = self.get_queue(name)
            if queue is not None and queue.policy is QueuePolicy.KEY_STRICT_FIFO:
                return SingletonKeyRequired(name, next(index for index, job_name in keyless if job_name == name))
        return SingletonKeyRequired(", ".join(sorted({name for _, name in keyless})), None)


def _outcome(rows: Sequence[Row]) -> FailOutcome:
    """A FailOutcome from the rows a fail statement reports (id, state, dead_letter_id)."""
    return FailOutcome(
        retried=tuple(str(row["id"]) for row in rows if row["state"] == "retry"),
        failed=tuple(str(row["id"]) for row in rows if row["state"] == "failed"),
        dead_lettered=tuple(str(row["dead_letter_id"]) for row in rows if row["dead_letter_id"]),
    )
