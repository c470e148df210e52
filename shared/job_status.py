"""What ``jobs`` accepts and answers: a caller's read of its jobs, as pg-boss's
``getJobById`` and ``findJobs`` give them to Node.

The query is a URL's parameters (a GET has no body), validated like a body: unknown or
repeated parameters, an id that is not a uuid, a limit out of range are a 422 naming
the parameter (``loc`` ``["query", NAME]``), and nothing reaches PostgreSQL in a form it
would refuse. A job answers under the names ``getJobById`` uses in Node (``retryCount``,
``startedOn``, ``output``, ...), so a service can read the same job from either side;
timestamps are ISO-8601 in UTC, to the microsecond PostgreSQL keeps. On pg-boss 10.x a
finished job moves to the ``archive`` table; it is read from there the same way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel
from werkzeug.datastructures import MultiDict

from shared.errors import InvalidRequest, MalformedRequest, field_errors
from shared.intake import MAX_KEY_BYTES, check_json, invalid
from shared.pgboss.client import FIND_JOBS_LIMIT, FIND_JOBS_MAX_LIMIT, PgBoss
from shared.pgboss.errors import JobNotFound, QueueNotFound
from shared.pgboss.models import JobDetails, JobState, check_queue_name

# --- the query ------------------------------------------------------------------


class JobsQuery(BaseModel):
    """``?queue=Q&id=ID`` reads one job; ``?queue=Q`` with any filters lists jobs."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="JobsQuery")

    queue: str = Field(description="The queue the job was sent to (ids are unique per queue only).")
    id: UUID | None = Field(None, description="One job: answers the job itself, or 404.")
    ids: list[UUID] | None = Field(
        None,
        min_length=1,
        max_length=FIND_JOBS_MAX_LIMIT,
        description=f"Comma-separated job ids (at most {FIND_JOBS_MAX_LIMIT}); lists those that exist.",
    )
    singleton_key: str | None = Field(None, alias="singletonKey", min_length=1, description="Jobs sent with this key.")
    data: dict[str, Any] | None = Field(
        None, description='A JSON object; jobs whose data contains it, e.g. {"documentId": 42}.'
    )
    queued: bool = Field(False, description="true: only jobs not yet active (created or retry).")
    after: UUID | None = Field(None, description="The `next` of the previous page: the jobs after that one.")
    limit: int = Field(
        FIND_JOBS_LIMIT, ge=1, le=FIND_JOBS_MAX_LIMIT, description="Most jobs one page lists, oldest first."
    )

    @field_validator("queue")
    @classmethod
    def _queue_name(cls, value: str) -> str:
        return check_queue_name(value)

    @field_validator("ids", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return [part.strip() for part in value.split(",")] if isinstance(value, str) else value

    @field_validator("data", mode="before")
    @classmethod
    def _json_object(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            parsed = json.loads(value, parse_constant=_no_constant)
        except (ValueError, RecursionError):
            parsed = None
        if not isinstance(parsed, dict):
            raise ValueError('must be a JSON object, e.g. {"documentId": 42}')
        return parsed

    @model_validator(mode="after")
    def _one_or_a_list(self) -> JobsQuery:
        listing = {"ids", "singleton_key", "data", "queued", "after", "limit"} & self.model_fields_set
        if self.id is not None and listing:
            names = sorted(type(self).model_fields[name].alias or name for name in listing)
            raise ValueError(f"id reads one job and takes no list parameters ({', '.join(names)}); use ids= to list")
        return self


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_query(args: MultiDict[str, str]) -> JobsQuery:
    """The query a request's parameters make, or ``InvalidRequest`` naming each problem."""
    repeated = [
        {"loc": ["query", name], "msg": "given more than once", "type": "repeated"}
        for name in args
        if len(args.getlist(name)) > 1
    ]
    if repeated:
        raise invalid(repeated)
    values = args.to_dict()
    for name, value in values.items():
        _check_text(value, ["query", name])
    try:
        query = JobsQuery.model_validate(values)
    except ValidationError as exc:
        raise invalid(field_errors(exc, ["query"])) from None
    if query.singleton_key is not None and len(query.singleton_key.encode("utf-8")) > MAX_KEY_BYTES:
        raise invalid([_error("singletonKey", f"must be at most {MAX_KEY_BYTES} bytes of UTF-8", "string_too_long")])
    if query.data is not None:
        _check_text(query.data, ["query", "data"])
    return query


def _check_text(value: Any, loc: list[str | int]) -> None:
    """``check_json``'s refusals (NUL, surrogates: PostgreSQL stores neither; nesting too
    deep, numbers out of range) at ``loc``: a query has no body to be malformed."""
    try:
        check_json(value)
    except InvalidRequest as refused:
        raise invalid([{**error, "loc": [*loc, *error["loc"]]} for error in refused.errors]) from None
    except MalformedRequest as refused:
        raise invalid([{"loc": loc, "msg": refused.message, "type": "value_error"}]) from None


def _error(name: str, msg: str, kind: str) -> dict[str, Any]:
    return {"loc": ["query", name], "msg": msg, "type": kind}


# --- the answers ------------------------------------------------------------------


class JobStatus(BaseModel):
    """One job as pg-boss's ``getJobById`` returns it in Node, field for field."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    id: str
    name: str
    data: Any
    state: JobState = Field(description="pg-boss's job state.")
    priority: int
    retry_count: int = Field(description="Attempts before the current one (0 on the first).")
    retry_limit: int
    retry_delay: int
    retry_backoff: bool
    retry_delay_max: int | None
    expire_in_seconds: int
    heartbeat_seconds: int | None
    group_id: str | None
    group_tier: str | None
    policy: str | None
    singleton_key: str | None
    singleton_on: datetime | None
    delete_after_seconds: int | None = Field(description="null on pg-boss 10.x, which has no such setting.")
    dead_letter: str | None
    start_after: datetime
    started_on: datetime | None
    created_on: datetime
    completed_on: datetime | None
    keep_until: datetime
    heartbeat_on: datetime | None
    output: Any = Field(description="What the handler returned (completed) or its error (retry, failed).")
    blocked: bool
    blocking: bool
    pending_dependencies: int
    source_name: str | None
    source_id: str | None
    source_created_on: datetime | None
    source_retry_count: int | None
    source_output: Any
    source_root_id: str | None

    @classmethod
    def of(cls, job: JobDetails) -> JobStatus:
        values: dict[str, Any] = {name: getattr(job, name) for name in cls.model_fields if hasattr(job, name)}
        values["expire_in_seconds"] = job.expire_seconds
        values["delete_after_seconds"] = job.deletion_seconds
        return cls(**values)

    def wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class JobPage(BaseModel):
    """A list read: the jobs, oldest first, and ``next`` to pass as ``after`` for more."""

    model_config = ConfigDict(title="JobPage")

    jobs: list[JobStatus]
    next: str | None = Field(description="The last job's id when the page is full (pass it as after=); else null.")


# --- reading ------------------------------------------------------------------------


def read(boss: PgBoss, query: JobsQuery) -> Mapping[str, Any]:
    """The answer to ``query``: one job, or a page of them.

    ``QueueNotFound`` or ``JobNotFound`` (404) when what it names is not there; an
    ``after`` that names a job no longer in the queue is a 422 on ``after``.
    """
    if query.id is not None:
        job = boss.get_job(query.queue, query.id, include_metadata=True)
        if job is None:
            if boss.get_queue(query.queue) is None:
                raise QueueNotFound(query.queue)
            raise JobNotFound(query.queue, str(query.id))
        assert isinstance(job, JobDetails)
        return JobStatus.of(job).wire()
    try:
        jobs = boss.find_jobs(
            query.queue,
            ids=query.ids,
            key=query.singleton_key,
            data=query.data,
            queued=query.queued,
            after=query.after,
            limit=query.limit,
        )
    except JobNotFound as gone:
        raise invalid([_error("after", f"{gone.message}; list again from the start", "job_not_found")]) from None
    full = len(jobs) == query.limit
    return JobPage(jobs=[JobStatus.of(job) for job in jobs], next=jobs[-1].id if full else None).model_dump(
        mode="json", by_alias=True
    )
