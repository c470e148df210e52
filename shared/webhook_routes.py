"""Which Supabase database events become which jobs: a small routes table, validated at cold start.

The table is configuration (``WEBHOOK_ROUTES`` as JSON, or ``WEBHOOK_ROUTES_FILE``);
``webhook_routes.example.json`` is an example. Settings carry the two variables as
text; ``routes_table`` parses them once, at cold start, into the table. Each route says::

    {
      "name":   "document-uploaded",      stable; part of every job id it makes (never rename lightly)
      "schema": "public",                 default "public"
      "table":  "documents",
      "events": ["INSERT"],               any of INSERT, UPDATE, DELETE
      "queue":  "document-process",
      "when":   {"changed": ["status"],   optional: UPDATE only, some listed column differs
                 "equals": {"status": "ready"}},   optional: every listed column has this value
      "data":   {"documentId": "record.id", "event": "type"},   optional; default: the whole event
      "key":    ["id"],                   optional: columns that identify the event (see below)
      "options": {"retryLimit": 5}        optional pg-boss send options (not "id")
    }

``data`` maps each key of the job's data to one of ``type``, ``schema``, ``table``,
``record``, ``old_record``, ``record.<column>`` or ``old_record.<column>``; a column
the row lacks becomes ``null``. ``equals`` looks at the new row, or at the deleted row
for DELETE, and compares JSON values exactly (``true`` is not ``1``).

Every route that matches an event makes one job, so one event can feed several queues.

What makes two deliveries "the same event", and so one job
---------------------------------------------------------
Supabase's payload carries no event id or timestamp, so the job id is derived from
what it does carry: ``uuid5(route name, type, schema, table, record, old_record)``,
over canonical JSON. A retried or duplicated delivery carries the same rows, gets the
same id, and pg-boss's same-id rule (``ON CONFLICT DO NOTHING``) drops it. Two real
changes that leave identical rows (a column set A→B, back to A, and to B again, in a
table without an ``updated_at``) are indistinguishable from a repeat while the first
job is still in the job table (until pg-boss deletes it, ``deleteAfterSeconds``).

A route with ``key`` narrows the identity to those columns of the row: then there is
at most one job per route, event type and row key (e.g. "process each document once
when its status first becomes ready"), whatever else changed.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.config import Settings, describe_validation_error
from shared.errors import ConfigError, InvalidRequest
from shared.intake import DatabaseEvent, EventType
from shared.pgboss.models import JobRequest, SendOptions, check_queue_name

# Fixed forever: changing it changes every webhook job id and so breaks deduplication.
JOB_ID_NAMESPACE = uuid.UUID("6f0f6a3e-7c1b-5d2a-9b64-3c5e2f0d8a17")
_EVENT_FIELDS = ("type", "schema", "table", "record", "old_record")


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class When(_Config):
    changed: tuple[str, ...] | None = Field(None, min_length=1)
    equals: dict[str, Any] | None = Field(None, min_length=1)


class Route(_Config):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,100}$")
    schema_name: str = Field("public", alias="schema", min_length=1)
    table: str = Field(min_length=1)
    events: tuple[EventType, ...] = Field(min_length=1)
    queue: str
    when: When | None = None
    data: dict[str, str] | None = None
    key: tuple[str, ...] | None = Field(None, min_length=1)
    options: SendOptions = Field(default_factory=SendOptions)

    @field_validator("queue")
    @classmethod
    def _queue_name(cls, value: str) -> str:
        return check_queue_name(value)

    @field_validator("data")
    @classmethod
    def _data_sources(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for target, source in (value or {}).items():
            head, dot, column = source.partition(".")
            if not (source in _EVENT_FIELDS or (dot and column and head in ("record", "old_record"))):
                raise ValueError(
                    f"data.{target}: {source!r} is not one of type, schema, table, record, "
                    "old_record, record.<column>, old_record.<column>"
                )
        return value

    @field_validator("options")
    @classmethod
    def _no_fixed_id(cls, value: SendOptions) -> SendOptions:
        if value.id is not None:
            raise ValueError("options.id cannot be set: webhook jobs get an id derived from the event")
        return value

    @model_validator(mode="after")
    def _changed_needs_update(self) -> Route:
        if self.when and self.when.changed and set(self.events) != {"UPDATE"}:
            raise ValueError('when.changed compares the old and new row, so events must be ["UPDATE"]')
        return self

    def matches(self, event: DatabaseEvent) -> bool:
        if event.type not in self.events or event.table != self.table or event.schema_name != self.schema_name:
            return False
        if self.when is None:
            return True
        if self.when.changed:
            new, old = event.record or {}, event.old_record or {}
            if not any(not _same(new.get(c, _MISSING), old.get(c, _MISSING)) for c in self.when.changed):
                return False
        row = event.row
        return all(_same(row.get(c, _MISSING), v) for c, v in (self.when.equals or {}).items())

    def job(self, event: DatabaseEvent) -> JobRequest:
        options = self.options.model_copy(update={"id": self.job_id(event)})
        return JobRequest(name=self.queue, data=self.job_data(event), options=options)

    def job_data(self, event: DatabaseEvent) -> Any:
        whole = event.model_dump(by_alias=True, include={"type", "schema_name", "table", "record", "old_record"})
        if self.data is None:
            return whole
        out = {}
        for target, source in self.data.items():
            head, _, column = source.partition(".")
            out[target] = (whole[head] or {}).get(column) if column else whole[head]
        return out

    def job_id(self, event: DatabaseEvent) -> uuid.UUID:
        if self.key is None:
            identity: Any = {"record": event.record, "old_record": event.old_record}
        else:
            missing = [column for column in self.key if column not in event.row]
            if missing:
                where = "old_record" if event.type == "DELETE" else "record"
                raise InvalidRequest(
                    f"route {self.name}: the row has no key column {', '.join(missing)}",
                    [{"loc": [where, c], "msg": "key column missing", "type": "missing"} for c in missing],
                )
            identity = {"key": {column: event.row[column] for column in self.key}}
        material = [self.name, event.type, event.schema_name, event.table, identity]
        canonical = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return uuid.uuid5(JOB_ID_NAMESPACE, canonical)


class WebhookRoutes(_Config):
    routes: tuple[Route, ...]

    @field_validator("routes")
    @classmethod
    def _unique_names(cls, routes: tuple[Route, ...]) -> tuple[Route, ...]:
        names = [route.name for route in routes]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"route names must be unique; repeated: {', '.join(repeated)}")
        return routes

    def jobs_for(self, event: DatabaseEvent) -> list[tuple[Route, JobRequest]]:
        """One job per route that matches ``event``, in table order; empty when none does."""
        return [(route, route.job(event)) for route in self.routes if route.matches(event)]


def routes_table(settings: Settings) -> WebhookRoutes | None:
    """The routes table ``settings`` name, or None; ``ConfigError`` naming the variable if it is bad."""
    try:
        sources = _Sources.model_validate(
            {"WEBHOOK_ROUTES": settings.webhook_routes, "WEBHOOK_ROUTES_FILE": settings.webhook_routes_file}
        )
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None
    return sources.inline or sources.from_file


class _Sources(_Config):
    """The two settings that may hold the table, parsed; field aliases are the variables."""

    inline: WebhookRoutes | None = Field(None, alias="WEBHOOK_ROUTES")
    from_file: WebhookRoutes | None = Field(None, alias="WEBHOOK_ROUTES_FILE")

    @field_validator("inline", mode="before")
    @classmethod
    def _from_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError as exc:
                raise ValueError(f"not valid JSON: {exc}") from None
        return value

    @field_validator("from_file", mode="before")
    @classmethod
    def _from_path(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                text = Path(value).read_text(encoding="utf-8")
            except OSError as exc:
                raise ValueError(f"cannot read {value}: {exc.strerror or exc}") from None
            try:
                return json.loads(text)
            except ValueError as exc:
                raise ValueError(f"{value} is not valid JSON: {exc}") from None
        return value


_MISSING = object()


def _same(a: Any, b: Any) -> bool:
    """JSON equality: ``true`` is not ``1`` (Python says it is), ``1`` is ``1.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a is b or (a is not _MISSING and b is not _MISSING and a == b)
