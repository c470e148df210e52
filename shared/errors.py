"""The exceptions this package raises, as one small tree.

Every module raises one of these; none lets a driver or library exception escape.
The HTTP status of each is decided in one place, ``shared.http``, so the tree
itself knows nothing about HTTP::

    AppError
    ├── ConfigError            a setting is missing, invalid or cannot be resolved
    ├── RequestError           the caller sent something we refuse
    │   ├── MalformedRequest        body is not parseable (bad JSON, bad UTF-8)
    │   ├── Unauthenticated         missing or wrong credentials
    │   ├── MethodNotAllowed        wrong HTTP method
    │   ├── PayloadTooLarge         body over the configured limit
    │   ├── UnsupportedMediaType    body is not JSON
    │   └── InvalidRequest          parses, but fails validation (per-field errors)
    ├── NotFound               the thing named does not exist (e.g. a queue)
    ├── Unavailable            a dependency cannot be used right now; retry later
    │   ├── DatabaseUnavailable     PostgreSQL cannot be reached or answered too slowly
    │   └── SchemaNotReady          pg-boss's schema is missing or at an unsupported version
    └── DatabaseError          PostgreSQL refused a statement for a reason that is ours
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class AppError(Exception):
    """Base of every error this package raises; the docstring is the default message."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or type(self).__name__).strip())

    @property
    def message(self) -> str:
        return str(self)


class ConfigError(AppError):
    """A setting is missing, invalid or cannot be resolved."""


class RequestError(AppError):
    """The request was refused."""


class MalformedRequest(RequestError):
    """The request body could not be parsed."""


class Unauthenticated(RequestError):
    """Missing or invalid credentials."""


class MethodNotAllowed(RequestError):
    """This HTTP method is not allowed here."""

    def __init__(self, method: str, allowed: Sequence[str]) -> None:
        self.allowed = tuple(allowed)
        super().__init__(f"method {method} is not allowed; use {', '.join(self.allowed)}")


class PayloadTooLarge(RequestError):
    """The request body is larger than allowed."""


class UnsupportedMediaType(RequestError):
    """The request body must be JSON (Content-Type: application/json)."""


class InvalidRequest(RequestError):
    """The request body is not valid."""

    def __init__(self, message: str | None = None, errors: Sequence[dict[str, Any]] = ()) -> None:
        self.errors = list(errors)
        super().__init__(message)


class NotFound(AppError):
    """The named resource does not exist."""


class Unavailable(AppError):
    """A dependency is unavailable; try again later."""

    retry_after_seconds: int = 5


class DatabaseUnavailable(Unavailable):
    """The database cannot be reached."""


class SchemaNotReady(Unavailable):
    """The pg-boss schema is missing or at a version this package does not support."""


class DatabaseError(AppError):
    """The database refused a statement."""

    def __init__(self, message: str | None = None, sqlstate: str | None = None) -> None:
        self.sqlstate = sqlstate
        super().__init__(message)
