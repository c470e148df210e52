"""What ``enqueue`` and ``webhook`` accept and answer, as pydantic models, and the checks around them.

Job options are pg-boss's own ``SendOptions`` (camelCase names, unknown ones refused);
this module only adds the envelope (``name``/``data``/``options`` or ``jobs``), the
Supabase webhook payload, the answer shapes (which ``scripts/generate_openapi.py``
turns into ``openapi.yaml``), and the checks that keep a client's body from ever
reaching PostgreSQL in a form it would refuse with an error that is ours (500).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from shared.errors import InvalidRequest, MalformedRequest, describe, field_errors
from shared.pgboss.client import PgBoss
from shared.pgboss.errors import QueueNotFound
from shared.pgboss.models import JobRequest, SendOptions, check_queue_name, repeated_ids

# Deeper JSON than this is refused (400) before anything walks it recursively.
MAX_JSON_DEPTH = 100
# singletonKey and group ids are btree-indexed by pg-boss; PostgreSQL refuses an index
# entry over 2704 bytes, so a longer key would fail the insert with an error of ours.
MAX_KEY_BYTES = 1024

Loc = list[str | int]
# The kinds of change a Supabase database webhook reports.
EventType = Literal["INSERT", "UPDATE", "DELETE"]


# --- requests -------------------------------------------------------------------


class JobIn(BaseModel):
    """One job: a queue name, its data (any JSON value) and pg-boss send options."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="Job")

    name: str = Field(description="Queue name; the queue must exist unless CREATE_MISSING_QUEUES is on.")
    data: Any = Field(None, description="The job's data, handed to the worker exactly as sent.")
    options: SendOptions = Field(default_factory=SendOptions)

    @field_validator("name")
    @classmethod
    def _queue_name(cls, value: str) -> str:
        return check_queue_name(value)

    def request(self) -> JobRequest:
        return JobRequest(name=self.name, data=self.data, options=self.options)


class BatchIn(BaseModel):
    """Several jobs, inserted in one statement: all of them or none."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="Batch")

    jobs: list[JobIn] = Field(min_length=1, description="At most ENQUEUE_MAX_BATCH jobs.")

    @field_validator("jobs", mode="before")
    @classmethod
    def _batch_size(cls, value: Any, info: ValidationInfo) -> Any:
        limit = (info.context or {}).get("max_batch")
        if limit is not None and isinstance(value, list) and len(value) > limit:
            raise ValueError(f"a batch holds at most {limit} jobs; this one has {len(value)}")
        return value


class DatabaseEvent(BaseModel):
    """The payload of a Supabase database webhook; fields it may add later are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True, title="DatabaseEvent")

    type: EventType
    table: str = Field(min_length=1)
    schema_name: str = Field(alias="schema", min_length=1)
    record: dict[str, Any] | None = Field(
        None, validate_default=True, description="The new row; required for INSERT and UPDATE."
    )
    old_record: dict[str, Any] | None = Field(
        None, validate_default=True, description="The previous row; required for UPDATE and DELETE."
    )

    @field_validator("record")
    @classmethod
    def _record_present(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None and info.data.get("type") in ("INSERT", "UPDATE"):
            raise ValueError(f"an {info.data['type']} event carries the new row in record")
        return value

    @field_validator("old_record")
    @classmethod
    def _old_record_present(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None and info.data.get("type") in ("UPDATE", "DELETE"):
            raise ValueError(f"an {info.data['type']} event carries the previous row in old_record")
        return value

    @property
    def row(self) -> dict[str, Any]:
        """The row the event is about: the new one, or the deleted one for DELETE."""
        return (self.old_record if self.type == "DELETE" else self.record) or {}


# --- answers --------------------------------------------------------------------


class Created(BaseModel):
    """201 from ``enqueue``: the new job's id."""

    id: str


class Deduplicated(BaseModel):
    """200 from ``enqueue``: pg-boss suppressed the job (singleton, throttle or same id)."""

    deduplicated: Literal[True] = True


class BatchResult(BaseModel):
    """``enqueue`` batch (201 when any job was created, 200 when all were deduplicated).

    ``ids`` is aligned with the request's ``jobs``; ``null`` marks a job pg-boss
    suppressed, and ``deduplicated`` counts them.
    """

    ids: list[str | None]
    deduplicated: int


class Accepted(BaseModel):
    """``webhook`` answer (202 when any job was created, 200 when all were duplicates).

    One job per matching route: ``routes`` names them, ``ids`` is aligned with it and
    holds ``null`` where the job already existed (a repeated delivery).
    """

    ids: list[str | None]
    routes: list[str]
    deduplicated: int


class Ignored(BaseModel):
    """200 from ``webhook``: no route matches the event; nothing was enqueued."""

    ignored: Literal[True] = True


class FieldError(BaseModel):
    """One reason a body was refused: where (``loc``) and why (``msg``)."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    """Every refusal (``shared.http.error_response``); ``errors`` only on 422."""

    error: str = Field(description="The error kind, e.g. invalid_request, unauthenticated.")
    message: str
    errors: list[FieldError] | None = None


# --- parsing --------------------------------------------------------------------


def parse_enqueue(body: Any, *, max_batch: int) -> tuple[list[JobRequest], bool]:
    """The jobs a request asks for, and whether it was a batch; ``InvalidRequest`` if not valid."""
    check_json(body)
    if not isinstance(body, dict):
        raise invalid([{"loc": [], "msg": "the body must be a JSON object", "type": "object_type"}])
    batch = "jobs" in body
    model = BatchIn if batch else JobIn
    try:
        parsed = model.model_validate(body, context={"max_batch": max_batch})
    except ValidationError as exc:
        raise invalid(field_errors(exc)) from None
    jobs = parsed.jobs if isinstance(parsed, BatchIn) else [parsed]
    requests = [job.request() for job in jobs]
    repeats = {repeat.job_index: repeat for repeat in repeated_ids(requests)}
    errors = []
    for index, job in enumerate(jobs):
        where = options_loc(index, batch)
        errors += key_errors(job.options, where)
        if index in repeats:
            errors.append({"loc": [*where, "id"], "msg": repeats[index].message, "type": repeats[index].problem})
    if errors:
        raise invalid(errors)
    return requests, batch


def options_loc(index: int, batch: bool) -> Loc:
    """Where an enqueue body carries the options of its ``index``-th job."""
    return ["jobs", index, "options"] if batch else ["options"]


def parse_event(body: Any) -> DatabaseEvent:
    check_json(body)
    if not isinstance(body, dict):
        raise invalid([{"loc": [], "msg": "the body must be a JSON object", "type": "object_type"}])
    try:
        return DatabaseEvent.model_validate(body)
    except ValidationError as exc:
        raise invalid(field_errors(exc)) from None


def submit(boss: PgBoss, jobs: Sequence[JobRequest], *, create_missing_queues: bool) -> list[str | None]:
    """Insert ``jobs`` in one round trip; with ``create_missing_queues``, create unknown queues first.

    A missing queue (or dead-letter queue) makes the whole insert fail, so nothing is
    written before the queue is created and the insert is repeated.
    """
    created: set[str] = set()
    while True:
        try:
            return boss.insert(jobs)
        except QueueNotFound as missing:
            if not create_missing_queues or missing.queue in created:
                raise
            boss.create_queue(missing.queue, None)
            created.add(missing.queue)


# --- checks ---------------------------------------------------------------------


def check_json(value: Any) -> None:
    """Refuse JSON that PostgreSQL's jsonb or a UTF-8 encoder would refuse later.

    Walks without recursion: nesting deeper than ``MAX_JSON_DEPTH`` is a 400, as is
    ``NaN``/``Infinity`` (not JSON; Python's parser accepts them, jsonb does not).
    A NUL character or an unpaired surrogate (``\\ud800``) in a string or key is a 422
    naming where it is: jsonb cannot store either.
    """
    stack: list[tuple[Any, Loc]] = [(value, [])]
    while stack:
        item, loc = stack.pop()
        if len(loc) > MAX_JSON_DEPTH:
            raise MalformedRequest(f"JSON nests deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(item, dict):
            for key, child in item.items():
                _check_string(key, [*loc, key])
                stack.append((child, [*loc, key]))
        elif isinstance(item, list):
            stack.extend((child, [*loc, index]) for index, child in enumerate(item))
        elif isinstance(item, str):
            _check_string(item, loc)
        elif isinstance(item, float) and not math.isfinite(item):
            raise MalformedRequest("JSON numbers must be finite (no NaN, Infinity or overflow)")


def _check_string(text: str, loc: Loc) -> None:
    if "\x00" in text:
        raise invalid([{"loc": loc, "msg": "text must not contain NUL (\\u0000)", "type": "string_nul"}])
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid(
            [{"loc": loc, "msg": "text contains an unpaired UTF-16 surrogate", "type": "string_surrogate"}]
        ) from None


def key_errors(options: SendOptions, prefix: Loc) -> list[dict[str, Any]]:
    """Indexed keys longer than ``MAX_KEY_BYTES`` in UTF-8."""
    keys: list[tuple[Loc, str | None]] = [(["singletonKey"], options.singleton_key)]
    if options.group is not None:
        keys += [(["group", "id"], options.group.id), (["group", "tier"], options.group.tier)]
    return [
        {"loc": [*prefix, *loc], "msg": f"must be at most {MAX_KEY_BYTES} bytes of UTF-8", "type": "string_too_long"}
        for loc, value in keys
        if value is not None and len(value.encode("utf-8")) > MAX_KEY_BYTES
    ]


def invalid(errors: list[dict[str, Any]]) -> InvalidRequest:
    """A 422 whose message (also the log line's reason) names the first few problems."""
    return InvalidRequest(f"invalid request: {describe(errors, whole='body', most=3)}", errors)
