"""What the installed pg-boss schema can do, read once from the database.

pg-boss's schema grew from version 25 (pg-boss 11.0) to 46 (12.38) by adding columns,
tables and functions. The client renders every statement for the schema it finds
instead of keeping one copy per release: a feature is on when its column or function
is present, and the few behaviours that changed without a new column (the retry
backoff formula, which columns a dead-letter copy and a retry carry) are keyed on the
schema version, as pg-boss's own releases changed them.

Schemas 21-24 (pg-boss 10.x) have an older shape that 11.0 rebuilt without a
migration: jobs expire by an ``expire_in`` interval, queues keep ``retention_minutes``
and ``partition_name``, finished jobs move to an ``archive`` table, and there is no
``retry_delay_max`` or ``deletion_seconds``. ``archive`` marks that shape; the same
statements are rendered for it.

``Capabilities`` is the one object other modules ask: ``schema_version`` and one
boolean per feature. It is detected per client (one statement), and again when a
statement finds the schema changed under it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

# The schema versions this package works with: pg-boss 10.0.0 (21) to 12.38.0 (46).
# 28, 44 and 45 have no release one can install (12.10.0 is unlisted, 12.36.0 and
# 12.37.0 were never published); they are accepted because every difference they
# make is a column detected below.
OLDEST_SCHEMA = 21
NEWEST_SCHEMA = 46
SUPPORTED_SCHEMA_VERSIONS: frozenset[int] = frozenset(range(OLDEST_SCHEMA, NEWEST_SCHEMA + 1))

# The pg-boss releases that install each schema version (first..last).
RELEASES: Mapping[int, str] = {
    21: "10.0.0..10.0.5",
    22: "10.0.6..10.1.0",
    23: "10.1.1..10.1.4",
    24: "10.1.5..10.4.2",
    25: "11.0.0..11.0.8",
    26: "11.1.0..12.5.4",
    27: "12.6.0..12.9.0",
    28: "12.10.0",
    29: "12.11.0..12.11.2",
    30: "12.12.0..12.18.3",
    31: "12.19.0..12.20.0",
    32: "12.21.0..12.21.1",
    33: "12.22.0",
    34: "12.23.0..12.23.1",
    35: "12.24.0",
    36: "12.24.1..12.25.1",
    37: "12.26.0..12.27.0",
    38: "12.28.0..12.28.1",
    39: "12.29.0",
    40: "12.30.0",
    41: "12.31.0..12.32.0",
    42: "12.33.0..12.34.0",
    43: "12.35.0",
    44: "12.36.0",
    45: "12.37.0",
    46: "12.38.0",
}
SUPPORTED_RELEASES = "10.0.0..12.38.0"


def releases_of(schema_version: int) -> str:
    """The pg-boss releases that install this schema version, or ``unknown``."""
    return RELEASES.get(schema_version, "unknown")


@dataclass(frozen=True)
class Capabilities:
    """One installed pg-boss schema: its version and the features it has.

    Feature flags name pg-boss behaviour, not columns, so callers need not know where
    each one lives.
    """

    schema_version: int
    job_columns: frozenset[str]
    queue_columns: frozenset[str]
    version_columns: frozenset[str]
    has_job_now: bool

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Capabilities:
        """From the answer of ``sql.capabilities()``."""
        return cls(
            schema_version=int(row["version"]),
            job_columns=_names(row["job_columns"]),
            queue_columns=_names(row["queue_columns"]),
            version_columns=_names(row["version_columns"]),
            has_job_now=bool(row["has_job_now"]),
        )

    @property
    def supported(self) -> bool:
        return self.schema_version in SUPPORTED_SCHEMA_VERSIONS

    @property
    def releases(self) -> str:
        return releases_of(self.schema_version)

    # -- features ---------------------------------------------------------------------

    @property
    def archive(self) -> bool:
        """pg-boss 10.x's shape (schemas 21-24): ``expire_in`` interval, ``archive`` table,
        ``retention_minutes``, one partition per queue, no ``retry_delay_max`` or
        ``deletion_seconds``."""
        return "expire_in" in self.job_columns

    @property
    def create_queue_idempotent(self) -> bool:
        """``create_queue`` leaves an existing queue alone (24, 10.1.5); 21-23 raise."""
        return self.schema_version >= 24

    @property
    def exclusive_policy(self) -> bool:
        """Queue policy ``exclusive`` (schema 26, pg-boss 11.1)."""
        return self.schema_version >= 26

    @property
    def groups(self) -> bool:
        """Job groups (``group {id, tier}``) (schema 27, 12.6)."""
        return "group_id" in self.job_columns

    @property
    def dead_letter_per_job(self) -> bool:
        """A job's own ``deadLetter`` instead of its queue's (10.x, then again from
        schema 27, 12.6; 11.0-12.5 took it from the queue only)."""
        return self.archive or self.schema_version >= 27

    @property
    def key_strict_fifo_policy(self) -> bool:
        """Queue policy ``key_strict_fifo`` (schema 28, 12.10)."""
        return self.schema_version >= 28

    @property
    def heartbeats(self) -> bool:
        """``heartbeatSeconds`` on jobs and queues, ``touch`` and the heartbeat sweep (30, 12.12)."""
        return "heartbeat_on" in self.job_columns

    @property
    def flows(self) -> bool:
        """Job dependencies: blocked jobs are not fetched (schema 31, 12.19)."""
        return "blocked" in self.job_columns

    @property
    def complete_releases_children(self) -> bool:
        """Schemas 31-32 release a completed parent's children in the complete statement;
        from 33 (12.22) a background resolver does, claimed through ``version.flow_on``."""
        return self.flows and "flow_on" not in self.version_columns

    @property
    def notify(self) -> bool:
        """Queues with ``notify``: an insert NOTIFYs the schema's channel (schema 32, 12.21)."""
        return "notify" in self.queue_columns

    @property
    def dead_letter_provenance(self) -> bool:
        """Dead-letter copies record ``source_*`` columns (schema 34, 12.23)."""
        return "source_name" in self.job_columns

    @property
    def provenance_survives_retry(self) -> bool:
        """A retried job keeps its ``source_*`` columns and the dead-letter copy keeps the
        failed job's output in ``source_output`` (schema 43, 12.35)."""
        return "source_root_id" in self.job_columns

    @property
    def trace_context(self) -> bool:
        """Jobs carry ``trace_context`` through retries and dead letters (schema 44)."""
        return "trace_context" in self.job_columns

    @property
    def upsert_by_key(self) -> bool:
        """Jobs may be upserted by key; resume clears the flag (schema 45)."""
        return "upsert_by_key" in self.job_columns

    @property
    def retained_count(self) -> bool:
        """Queues count retained jobs; resume and delete keep the count (schema 46, 12.38)."""
        return "retained_count" in self.queue_columns

    @property
    def retention_per_job(self) -> bool:
        """A job's own ``retentionSeconds`` (10.x as a ``keepUntil`` interval, then from
        schema 26, 11.1; 11.0 took a ``keepUntil`` date)."""
        return self.archive or self.schema_version >= 26

    @property
    def retry_delay_max(self) -> bool:
        """``retryDelayMax`` caps backed-off retries (schema 25, 11.0)."""
        return "retry_delay_max" in self.job_columns

    @property
    def deletion_per_job(self) -> bool:
        """A job's own ``deleteAfterSeconds`` (schema 25, 11.0; 10.x deletes archived
        jobs after one instance-wide interval)."""
        return "deletion_seconds" in self.job_columns

    def send_options_missing(self, given: Collection[str]) -> list[str]:
        """The pg-boss send options among ``given`` that this schema does not have."""
        needs = {
            "group": self.groups,
            "deadLetter": self.dead_letter_per_job,
            "heartbeatSeconds": self.heartbeats,
            "retentionSeconds": self.retention_per_job,
            "retryDelayMax": self.retry_delay_max,
            "deleteAfterSeconds": self.deletion_per_job,
        }
        return [option for option in given if not needs.get(option, True)]

    def queue_options_missing(self, given: Mapping[str, Any], policy: str) -> list[str]:
        """The pg-boss queue options (and policy) among ``given`` that this schema lacks.

        10.x stores retention in whole minutes and gives every queue its own partition,
        so a ``retentionSeconds`` that is not whole minutes and ``partition: false`` (the
        shared table of 11.0+) are refused there rather than rounded or ignored.
        """
        needs = {
            "heartbeatSeconds": self.heartbeats,
            "notify": self.notify,
            "retryDelayMax": self.retry_delay_max,
            "deleteAfterSeconds": self.deletion_per_job,
            "warningQueueSize": not self.archive,
        }
        missing = [option for option in given if not needs.get(option, True)]
        if self.archive and given.get("retentionSeconds", 60) % 60:
            missing.append("retentionSeconds other than whole minutes")
        if self.archive and given.get("partition") is False:
            missing.append("partition false")
        if (policy == "exclusive" and not self.exclusive_policy) or (
            policy == "key_strict_fifo" and not self.key_strict_fifo_policy
        ):
            missing.append(f"policy {policy}")
        return missing


def _names(value: Any) -> frozenset[str]:
    """Column names as the driver returns a text[] (a list, or None for no table)."""
    return frozenset(value or ())
