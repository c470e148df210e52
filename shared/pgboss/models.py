"""Domain types of the pg-boss client: what its verbs take and return.

Options are pydantic models so the ``enqueue`` function can turn a bad option into a
per-field 422 with the same rules pg-boss 12.38 enforces in Node (``attorney.js``);
a job that Node would refuse must not get into the table through Python either.
Rows come back as frozen dataclasses built in one place each (``from_row``).
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from enum import Enum
from typing import Annotated, Any, Self
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from shared.pgboss.errors import DuplicateJobId

# pg-boss's rule for queue (and dead-letter queue) names. JavaScript's \w is ASCII-only
# and its $ does not match before a trailing newline, hence ASCII and fullmatch here.
QUEUE_NAME_PATTERN = r"^[\w.\-/]+$"
_QUEUE_NAME = re.compile(r"[\w.\-/]+", re.ASCII)
# Queues pg-boss keeps for itself (cron forwarding); only Node works them.
INTERNAL_QUEUE_PREFIX = "__pgboss__"
# pg-boss's ceiling for expireInSeconds: 24 hours, inclusive.
MAX_EXPIRE_SECONDS = 24 * 60 * 60

# Integers are Postgres `integer` columns: out-of-range values are refused here, per field,
# rather than by the database as one opaque error.
StrictInt = Annotated[int, Field(strict=True, ge=-(2**31), le=2**31 - 1)]
StrictBool = Annotated[bool, Field(strict=True)]


class JobState(str, Enum):  # noqa: UP042 - the shared API names (str, Enum)
    """pg-boss's ``job_state`` enum, in its declaration (and therefore sort) order."""

    CREATED = "created"
    RETRY = "retry"
    ACTIVE = "active"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


class QueuePolicy(str, Enum):  # noqa: UP042 - like JobState
    """pg-boss's queue policies; each is enforced by a unique index and by fetch."""

    STANDARD = "standard"
    SHORT = "short"
    SINGLETON = "singleton"
    STATELY = "stately"
    EXCLUSIVE = "exclusive"
    KEY_STRICT_FIFO = "key_strict_fifo"


def check_queue_name(name: Any, what: str = "queue name") -> str:
    """``name`` if pg-boss would accept it as a queue name, else ``ValueError``."""
    if not isinstance(name, str) or not _QUEUE_NAME.fullmatch(name):
        raise ValueError(
            f"{what} can only contain alphanumeric characters, underscores, hyphens, periods, or forward slashes"
        )
    return name


class _Options(BaseModel):
    """pg-boss's camelCase option names on the wire, snake_case in Python."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    def wire(self) -> dict[str, Any]:
        """The options that were given, under pg-boss's names (what ``create_queue`` takes)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class _RetryAndLifetime(_Options):
    """Options shared by jobs and queues; pg-boss validates them the same way for both."""

    retry_limit: StrictInt | None = Field(None, alias="retryLimit", ge=0)
    retry_delay: StrictInt | None = Field(None, alias="retryDelay", ge=0)
    retry_backoff: StrictBool | None = Field(None, alias="retryBackoff")
    retry_delay_max: StrictInt | None = Field(None, alias="retryDelayMax", ge=0)
    expire_in_seconds: StrictInt | None = Field(None, alias="expireInSeconds", ge=1, le=MAX_EXPIRE_SECONDS)
    retention_seconds: StrictInt | None = Field(None, alias="retentionSeconds", ge=1)
    delete_after_seconds: StrictInt | None = Field(None, alias="deleteAfterSeconds", ge=0)
    dead_letter: str | None = Field(None, alias="deadLetter")
    heartbeat_seconds: StrictInt | None = Field(None, alias="heartbeatSeconds", ge=10)

    @field_validator("dead_letter")
    @classmethod
    def _dead_letter_name(cls, value: str | None) -> str | None:
        return None if value is None else check_queue_name(value, "deadLetter")

    @field_validator("retry_delay_max")
    @classmethod
    def _delay_max_needs_backoff(cls, value: int | None, info: ValidationInfo) -> int | None:
        # pg-boss checks this within one options object: a job's retryDelayMax needs the
        # job's own retryBackoff, even when its queue already backs off.
        if value is not None and info.data.get("retry_backoff") is not True:
            raise ValueError("retryDelayMax can only be set if retryBackoff is true")
        return value


class Group(_Options):
    """A job's concurrency group; limits are applied by each fetcher, not stored."""

    id: str = Field(min_length=1)
    tier: str | None = Field(None, min_length=1)


class SendOptions(_RetryAndLifetime):
    """pg-boss 12.38's ``send()`` options that a Python caller needs.

    Settings left out fall back to the queue's own, exactly as pg-boss copies them.
    ``startAfter`` is a whole number of seconds or an ISO-8601 date time (one without a
    zone is UTC, as pg-boss pins it). ``singletonNextSlot`` is pg-boss's debounce
    (``sendDebounced``): when the current ``singletonSeconds`` slot is taken the job is
    filed in the next slot instead.

    Refused pg-boss send options, and why:

    * ``db`` — hands Node's own connection to pg-boss; meaningless here.
    * ``startAfter`` as a Postgres interval phrase (``'5 minutes'``) — seconds or a date
      time say the same thing without depending on Postgres's interval parser.
    * Anything else pg-boss does not document for ``send()`` (trace context, slot
      pinning, ``upsert``'s ``match``) is internal to pg-boss and rejected as unknown.
    """

    id: UUID | None = None
    priority: StrictInt | None = None
    start_after: StrictInt | datetime | None = Field(None, alias="startAfter")
    singleton_key: str | None = Field(None, alias="singletonKey", min_length=1)
    singleton_seconds: StrictInt | None = Field(None, alias="singletonSeconds", ge=1)
    singleton_next_slot: StrictBool | None = Field(None, alias="singletonNextSlot")
    group: Group | None = None

    @field_validator("start_after", mode="before")
    @classmethod
    def _start_after(cls, value: Any) -> Any:
        if isinstance(value, bool | float):
            raise ValueError("startAfter must be seconds (an integer >= 0) or an ISO-8601 date time")
        if isinstance(value, int) and value < 0:
            raise ValueError("startAfter seconds must be >= 0")
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                raise ValueError("startAfter must be seconds (an integer >= 0) or an ISO-8601 date time") from None
        if isinstance(value, datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    @field_validator("singleton_next_slot")
    @classmethod
    def _next_slot_needs_seconds(cls, value: bool | None, info: ValidationInfo) -> bool | None:
        if value and info.data.get("singleton_seconds") is None:
            raise ValueError("singletonNextSlot requires singletonSeconds")
        return value


class QueueOptions(_RetryAndLifetime):
    """pg-boss 12.38's ``createQueue()`` options, validated as pg-boss does."""

    policy: QueuePolicy = QueuePolicy.STANDARD
    warning_queue_size: StrictInt | None = Field(None, alias="warningQueueSize", ge=1)
    partition: StrictBool | None = None
    notify: StrictBool | None = None


@dataclass(frozen=True)
class JobRequest:
    """One job for ``PgBoss.insert``."""

    name: str
    data: Any = None
    options: SendOptions = SendOptions()  # noqa: RUF009 - frozen, so one shared default is safe


def repeated_ids(requests: Sequence[JobRequest]) -> list[DuplicateJobId]:
    """Each job of a batch whose id an earlier job of the same queue already has.

    pg-boss refuses such a batch: which of the two rows would be kept would depend on
    row order.
    """
    first: dict[tuple[str, UUID], int] = {}
    repeats = []
    for index, request in enumerate(requests):
        if request.options.id is not None:
            earliest = first.setdefault((request.name, request.options.id), index)
            if earliest != index:
                repeats.append(DuplicateJobId(request.name, index, earliest))
    return repeats


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: Any) -> tuple[str, ...]:
    """A row class's field names, asked once per fetched row: ``fields()`` rebuilds them on every call."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(field.name for field in fields(cls))
    return names


@dataclass(frozen=True)
class Job:
    """A fetched job; ``retry_count`` is the attempt that settling it is fenced on."""

    id: str
    name: str
    data: Any
    retry_count: int
    retry_limit: int
    expire_seconds: int
    heartbeat_seconds: int | None
    started_on: datetime | None
    group_id: str | None
    group_tier: str | None
    priority: int
    singleton_key: str | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        return cls(**cls._values(row))

    @classmethod
    def _values(cls, row: Mapping[str, Any]) -> dict[str, Any]:
        """The row's columns for this class's fields, decoded to their Python types."""
        values = {name: row[name] for name in _field_names(cls)}
        values["id"] = str(values["id"])
        started_on = values["started_on"]
        if isinstance(started_on, float):  # a fetch sends epoch seconds (see sql._JOB_COLUMNS)
            values["started_on"] = datetime.fromtimestamp(started_on, UTC)
        return values


@dataclass(frozen=True)
class JobDetails(Job):
    """A job with every column of its row, for ``include_metadata``."""

    state: JobState
    retry_delay: int
    retry_backoff: bool
    retry_delay_max: int | None
    start_after: datetime
    singleton_on: datetime | None
    deletion_seconds: int | None
    created_on: datetime
    completed_on: datetime | None
    keep_until: datetime
    output: Any
    dead_letter: str | None
    policy: str | None
    heartbeat_on: datetime | None
    blocked: bool
    blocking: bool
    pending_dependencies: int
    source_name: str | None
    source_id: str | None
    source_created_on: datetime | None
    source_retry_count: int | None
    source_output: Any
    source_root_id: str | None
    trace_context: Any
    upsert_by_key: bool | None

    @classmethod
    def _values(cls, row: Mapping[str, Any]) -> dict[str, Any]:
        values = super()._values(row)
        values["state"] = JobState(values["state"])
        for key in ("source_id", "source_root_id"):
            if values[key] is not None:
                values[key] = str(values[key])
        return values


@dataclass(frozen=True)
class QueueCounts:
    """Live job counts of a queue, computed from the job table (not pg-boss's stats)."""

    queued: int
    active: int
    deferred: int
    total: int


@dataclass(frozen=True)
class Queue:
    """A queue row's configuration; every job copies it at insert time."""

    name: str
    policy: QueuePolicy
    retry_limit: int
    retry_delay: int
    retry_backoff: bool
    retry_delay_max: int | None
    expire_seconds: int
    retention_seconds: int
    deletion_seconds: int | None
    dead_letter: str | None
    heartbeat_seconds: int | None
    notify: bool
    partition: bool
    table_name: str
    counts: QueueCounts | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Queue:
        values = {field.name: row[field.name] for field in fields(cls) if field.name != "counts"}
        values["policy"] = QueuePolicy(values["policy"])
        counts = None
        if "queued_count" in row:
            counts = QueueCounts(
                queued=int(row["queued_count"]),
                active=int(row["active_count"]),
                deferred=int(row["deferred_count"]),
                total=int(row["total_count"]),
            )
        return cls(**values, counts=counts)


@dataclass(frozen=True)
class FailOutcome:
    """What a fail did: ids now in ``retry``, ids now ``failed``, new dead-letter job ids."""

    retried: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    dead_lettered: tuple[str, ...] = ()


def error_output(error: BaseException | Mapping[str, Any] | str | None) -> dict[str, Any] | None:
    """The stored ``output`` of a failure, in the shape pg-boss's dashboards read.

    An exception becomes ``{name, message, stack}`` like Node's serialized ``Error``;
    a mapping is stored as it is; any other value is wrapped as ``{"value": ...}``;
    ``None`` stores nothing.
    """
    if error is None:
        return None
    if isinstance(error, BaseException):
        return {
            "name": type(error).__name__,
            "message": str(error),
            "stack": "".join(traceback.format_exception(error)).rstrip(),
        }
    if isinstance(error, Mapping):
        return dict(error)
    return {"value": error}
