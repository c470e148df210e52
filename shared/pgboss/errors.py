"""Errors of the pg-boss client, placed in the package's one exception tree.

They speak of pg-boss's own terms (queues, options by their wire names, a job's
position in a batch), never of a request: the same refusal can come from an HTTP
body, a webhook route or Python code, and only the caller knows which.
"""

from __future__ import annotations

from collections.abc import Iterable

from shared.errors import NotFound, Refused, SchemaNotReady, echo
from shared.pgboss.capabilities import SUPPORTED_RELEASES, releases_of


class SchemaMissing(SchemaNotReady):
    """pg-boss is not installed in the configured schema."""

    code = "schema_missing"

    def __init__(self, schema: str) -> None:
        self.schema = schema
        super().__init__(f"pg-boss schema {schema!r} is missing (no {schema}.version table)")


class UnsupportedSchemaVersion(SchemaNotReady):
    """pg-boss's schema is at a version this package has not been proven against."""

    code = "unsupported_schema_version"

    def __init__(self, found: int, supported: Iterable[int]) -> None:
        self.found = found
        self.supported = tuple(sorted(supported))
        low, high = self.supported[0], self.supported[-1]
        super().__init__(
            f"pg-boss schema version {found} (pg-boss {releases_of(found)}) is unsupported;"
            f" supported range is {low}..{high} (pg-boss {SUPPORTED_RELEASES})"
        )


class QueueNotFound(NotFound):
    """The named pg-boss queue does not exist."""

    code = "queue_not_found"

    def __init__(self, queue: str) -> None:
        self.queue = queue
        super().__init__(f"queue {echo(queue)} does not exist")


class JobNotFound(NotFound):
    """No job with this id in the named queue: never sent there, or deleted since
    (pg-boss deletes finished jobs once their retention ends; 10.x from its archive)."""

    code = "job_not_found"

    def __init__(self, queue: str, job_id: str) -> None:
        self.queue = queue
        self.job_id = job_id
        super().__init__(f"job {job_id} does not exist in queue {echo(queue)}")


class InvalidQueue(Refused):
    """A queue pg-boss would refuse to create (bad name, or its own dead letter queue)."""

    code = "invalid_queue"

    def __init__(self, queue: str, option: str, message: str) -> None:
        super().__init__(message, queue=queue, option=option)


class SingletonKeyRequired(Refused):
    """A job for a key_strict_fifo queue came without a singletonKey."""

    code = "singleton_key_required"
    problem = "missing"

    def __init__(self, queue: str, job_index: int | None) -> None:
        message = f"queue {echo(queue)} has policy key_strict_fifo; every job needs a singletonKey"
        super().__init__(message, queue=queue, option="singletonKey", job_index=job_index)


class DuplicateJobId(Refused):
    """Two jobs of one batch carry the same id for the same queue."""

    code = "duplicate_job_id"
    problem = "duplicate_id"

    def __init__(self, queue: str, job_index: int, first_index: int) -> None:
        self.first_index = first_index
        message = f"repeats the id of jobs[{first_index}] in the same queue"
        super().__init__(message, queue=queue, option="id", job_index=job_index)


class InternalQueue(Refused):
    """pg-boss's own queues (``__pgboss__*``) are worked by pg-boss in Node only."""

    code = "internal_queue"

    def __init__(self, queue: str) -> None:
        super().__init__(f"queue {echo(queue)} is internal to pg-boss and cannot be fetched from", queue=queue)


class SchedulesNotSupported(Refused):
    """Schedules are written only on schemas whose pg-boss schedule() they were proven against."""

    code = "schedules_not_supported"
    problem = "not_supported"

    def __init__(self, version: int, supported: str) -> None:
        super().__init__(f"schedules need pg-boss schema {supported}; this database has schema {version}")


class OptionNotSupported(Refused):
    """An option the installed pg-boss schema does not have; refused, never dropped."""

    code = "option_not_supported"
    problem = "not_supported"

    def __init__(
        self,
        option: str,
        schema_version: int,
        releases: str,
        *,
        queue: str | None = None,
        job_index: int | None = None,
    ) -> None:
        self.schema_version = schema_version
        message = (
            f"option {option!r} is not supported by the installed pg-boss schema version {schema_version}"
            f" (pg-boss {releases}); it needs a newer pg-boss"
        )
        super().__init__(message, queue=queue, option=option.split(" ")[0], job_index=job_index)
