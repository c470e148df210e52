"""Structured JSON logs in the shape Cloud Logging reads from stdout.

Cloud Functions forwards each stdout line to Cloud Logging; a JSON line with
``severity`` and ``message`` becomes a structured entry, and
``logging.googleapis.com/trace`` ties it to the request's trace. Request-scoped
fields (trace, outcome, job ids) live in a context variable so every line a request
writes carries them, and ``annotate`` lets a function add to its one summary line.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from werkzeug.datastructures import Headers

TRACE_FIELD = "logging.googleapis.com/trace"

_request_fields: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("request_fields", default=None)


class CloudLoggingFormatter(logging.Formatter):
    """One JSON object per record: severity, message, time, logger, request fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": record.levelname,
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        entry.update(_request_fields.get() or {})
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            entry.update(fields)
        if record.exc_info:
            entry["stack_trace"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is now, not what it was when logging was set up
    (the framework and test runners replace it)."""

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure(level: str = "INFO") -> None:
    """Send every log record to stdout as JSON; idempotent across warm invocations."""
    root = logging.getLogger()
    root.setLevel(level)
    if not any(isinstance(h.formatter, CloudLoggingFormatter) for h in root.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(CloudLoggingFormatter())
        root.addHandler(handler)


def trace_from_headers(headers: Headers | Mapping[str, str], project: str | None) -> str | None:
    """The Cloud Logging trace name from ``X-Cloud-Trace-Context`` or W3C ``traceparent``."""
    trace_id = None
    cloud = headers.get("X-Cloud-Trace-Context")
    if cloud:
        trace_id = cloud.split("/", 1)[0].strip() or None
    if trace_id is None:
        parent = headers.get("traceparent", "")
        parts = parent.split("-")
        if len(parts) == 4 and len(parts[1]) == 32:
            trace_id = parts[1]
    if trace_id is None or not all(c in "0123456789abcdefABCDEF" for c in trace_id):
        return None
    return f"projects/{project}/traces/{trace_id}" if project else trace_id


@contextmanager
def request_scope(**fields: Any) -> Iterator[dict[str, Any]]:
    """Fields that every log line of this request carries, plus ``annotate``'s additions."""
    scope = {key: value for key, value in fields.items() if value is not None}
    token = _request_fields.set(scope)
    try:
        yield scope
    finally:
        _request_fields.reset(token)


def annotate(**fields: Any) -> None:
    """Add fields (outcome, job ids, …) to the current request's log lines."""
    scope = _request_fields.get()
    if scope is not None:
        scope.update(fields)
