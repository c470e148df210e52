"""What ``schedules`` accepts and answers, as pydantic models, and the checks around them.

A schedule is pg-boss's: a queue, a cron or rrule expression evaluated in an IANA zone,
the data and send options of the job each occurrence sends, a ``key`` to keep several
schedules on one queue apart, and the ``missed`` policy. ``shared.pgboss.schedules``
writes and reads the rows; this module is the HTTP envelope around it, and
``scripts/generate_openapi.py`` turns the models into ``openapi.yaml``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.errors import InvalidRequest, describe, field_errors
from shared.intake import check_json, invalid, key_errors
from shared.pgboss import cron
from shared.pgboss.models import SendOptions, check_queue_name
from shared.pgboss.schedules import Schedule, Schedules

# Schedule keys are part of the send-it slot key pg-boss indexes; as for singletonKey.
MAX_KEY_BYTES = 1024


class ScheduleIn(BaseModel):
    """Create a schedule, or replace the one with the same ``name`` and ``key``."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="ScheduleIn")

    name: str = Field(description="The queue each occurrence sends a job to; it must exist.")
    cron: str = Field(
        description="A cron expression (five fields, or six with seconds first) or an RFC 5545 rule "
        "(`FREQ=DAILY;BYHOUR=9`, optionally with `DTSTART:`), as pg-boss's schedule() takes it."
    )
    data: Any = Field(None, description="The data of every job the schedule sends.")
    options: SendOptions = Field(default_factory=SendOptions, description="Send options of every job it sends.")
    key: str = Field("", description="Tells several schedules of one queue apart.")
    tz: str = Field("UTC", description="The IANA time zone the expression is read in.")
    missed: Literal["skip", "once"] | None = Field(
        None, description="`once`: after an outage, send the latest occurrence that was missed."
    )

    @field_validator("name")
    @classmethod
    def _queue_name(cls, value: str) -> str:
        return check_queue_name(value)

    @field_validator("key")
    @classmethod
    def _key_length(cls, value: str) -> str:
        if len(value.encode("utf-8")) > MAX_KEY_BYTES:
            raise ValueError(f"must be at most {MAX_KEY_BYTES} bytes of UTF-8")
        return value

    @field_validator("tz")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            cron.zone(value)
        except cron.InvalidSchedule as error:
            raise ValueError(str(error)) from None
        return value


class ScheduleOut(BaseModel):
    """A schedule as pg-boss's getSchedules() gives it to Node."""

    model_config = ConfigDict(frozen=True, title="Schedule", populate_by_name=True)

    name: str
    key: str
    kind: Literal["cron", "rrule"]
    cron: str
    timezone: str
    data: Any
    options: dict[str, Any]
    created_on: datetime = Field(alias="createdOn")
    updated_on: datetime = Field(alias="updatedOn")
    last_job_id: str | None = Field(alias="lastJobId", description="The job its latest occurrence sent.")


class ScheduleList(BaseModel):
    """Every schedule (of one queue, with ``name``), by queue and key."""

    model_config = ConfigDict(frozen=True, title="ScheduleList")

    schedules: list[ScheduleOut]


class Removed(BaseModel):
    """The schedule that was removed."""

    model_config = ConfigDict(frozen=True, title="Removed")

    removed: dict[str, str] = Field(description="`{name, key}` of the removed schedule.")


def parse(body: Any) -> ScheduleIn:
    """The schedule a POST asks for; ``InvalidRequest`` (422) naming each bad field."""
    check_json(body)
    if not isinstance(body, dict):
        raise invalid([{"loc": [], "msg": "the body must be a JSON object", "type": "object_type"}])
    try:
        parsed = ScheduleIn.model_validate(body)
    except ValidationError as exc:
        raise invalid(field_errors(exc)) from None
    errors = key_errors(parsed.options, ["options"])
    if errors:
        raise invalid(errors)
    return parsed


def save(book: Schedules, wanted: ScheduleIn) -> ScheduleOut:
    """Write the schedule as pg-boss's schedule() does; the row as stored.

    A missing queue is ``QueueNotFound`` (404). An expression pg-boss would refuse is a
    422 at ``cron``: it is checked against the database's clock, so a rule whose last
    occurrence has passed is refused too.
    """
    try:
        book.schedule(
            wanted.name, wanted.cron, wanted.data, wanted.options, key=wanted.key, tz=wanted.tz, missed=wanted.missed
        )
    except cron.InvalidSchedule as error:
        raise invalid([{"loc": ["cron"], "msg": str(error), "type": "value_error"}]) from None
    [stored] = [row for row in book.list(wanted.name) if row.key == wanted.key]
    return answer(stored)


def answer(row: Schedule) -> ScheduleOut:
    return ScheduleOut(
        name=row.name,
        key=row.key,
        kind="rrule" if row.kind == cron.RRULE else "cron",
        cron=row.cron,
        timezone=row.timezone,
        data=row.data,
        options=row.options,
        created_on=row.created_on,
        updated_on=row.updated_on,
        last_job_id=row.last_job_id,
    )


def query(args: Mapping[str, Any], *, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict[str, str]:
    """The query parameters of a GET or DELETE: each at most once, none unknown."""
    errors = []
    values: dict[str, str] = {}
    getlist = getattr(args, "getlist", None)
    for name in args:
        given = getlist(name) if getlist is not None else [args[name]]
        if name not in allowed:
            errors.append(
                {
                    "loc": ["query", name],
                    "msg": f"unknown parameter; use {', '.join(allowed)}",
                    "type": "extra_forbidden",
                }
            )
        elif len(given) > 1:
            errors.append({"loc": ["query", name], "msg": "given more than once", "type": "repeated"})
        else:
            values[name] = given[0]
    errors += [
        {"loc": ["query", name], "msg": "Field required", "type": "missing"} for name in required if name not in values
    ]
    if errors:
        raise InvalidRequest(f"invalid request: {describe(errors, whole='query', most=3)}", errors)
    return values
