"""The exceptions this package raises, as one small tree, and the one way to word field errors.

Every module raises one of these; none lets a driver or library exception escape.
The HTTP status of each is decided in one place, ``shared.http``, so the tree
itself knows nothing about HTTP. Each class names its ``code``, the stable word an
HTTP answer carries in ``error``: a contract with callers, so it is written out
rather than derived from the class name, and a rename cannot change it::

    AppError                   app_error
    ├── ConfigError            config_error             a setting is missing, invalid or cannot be resolved
    ├── RequestError           request_error            the caller sent something we refuse
    │   ├── MalformedRequest        malformed_request       body is not parseable (bad JSON, bad UTF-8)
    │   ├── Unauthenticated         unauthenticated         missing or wrong credentials
    │   ├── MethodNotAllowed        method_not_allowed      wrong HTTP method
    │   ├── PayloadTooLarge         payload_too_large       body over the configured limit
    │   ├── UnsupportedMediaType    unsupported_media_type  body is not JSON
    │   └── InvalidRequest          invalid_request         parses, but fails validation (per-field errors)
    ├── NotFound               not_found                the thing named does not exist (e.g. a queue)
    ├── Refused                refused                  a rule of the job queue forbids what was asked
    ├── Unavailable            unavailable              a dependency cannot be used right now; retry later
    │   ├── DatabaseUnavailable     database_unavailable    PostgreSQL cannot be reached or answered too slowly
    │   └── SchemaNotReady          schema_not_ready        pg-boss's schema is missing or at an unsupported version
    └── DatabaseError          database_error           PostgreSQL refused a statement for a reason that is ours

The pg-boss client adds its own leaves (``shared.pgboss.errors``), with codes of their own.
A message that repeats what the caller sent quotes it with ``echo``, which cuts it short.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import ValidationError


class AppError(Exception):
    """Base of every error this package raises; the docstring is the default message."""

    code: ClassVar[str] = "app_error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or type(self).__name__).strip())

    @property
    def message(self) -> str:
        return str(self)


class ConfigError(AppError):
    """A setting is missing, invalid or cannot be resolved."""

    code = "config_error"


class RequestError(AppError):
    """The request was refused."""

    code = "request_error"


class MalformedRequest(RequestError):
    """The request body could not be parsed."""

    code = "malformed_request"


class Unauthenticated(RequestError):
    """Missing or invalid credentials."""

    code = "unauthenticated"


class MethodNotAllowed(RequestError):
    """This HTTP method is not allowed here."""

    code = "method_not_allowed"

    def __init__(self, method: str, allowed: Sequence[str]) -> None:
        self.allowed = tuple(allowed)
        super().__init__(f"method {method} is not allowed; use {', '.join(self.allowed)}")


class PayloadTooLarge(RequestError):
    """The request body is larger than allowed."""

    code = "payload_too_large"


class UnsupportedMediaType(RequestError):
    """The request body must be JSON (Content-Type: application/json)."""

    code = "unsupported_media_type"


class InvalidRequest(RequestError):
    """The request body is not valid."""

    code = "invalid_request"

    def __init__(self, message: str | None = None, errors: Sequence[dict[str, Any]] = ()) -> None:
        # A location may hold the caller's own JSON keys: cut, as a message would quote them.
        self.errors = [{**error, "loc": echo_loc(error["loc"])} if "loc" in error else error for error in errors]
        super().__init__(message)


class NotFound(AppError):
    """The named resource does not exist."""

    code = "not_found"


class Refused(AppError):
    """A rule of the job queue forbids what was asked.

    Says what it can about where: the ``queue``, the ``option`` at fault (by its wire
    name, e.g. ``singletonKey``) and, for a job of a batch, the job's position in it
    (``job_index``); whoever knows how the jobs were sent turns that into a location.
    ``problem`` is the kind of field error it is (``missing``, ``value_error``, ...).
    """

    code = "refused"
    problem: ClassVar[str] = "value_error"

    def __init__(
        self, message: str, *, queue: str | None = None, option: str | None = None, job_index: int | None = None
    ) -> None:
        self.queue = queue
        self.option = option
        self.job_index = job_index
        super().__init__(message)


class Unavailable(AppError):
    """A dependency is unavailable; try again later."""

    code = "unavailable"
    retry_after_seconds: int = 5


class DatabaseUnavailable(Unavailable):
    """The database cannot be reached."""

    code = "database_unavailable"


class SchemaNotReady(Unavailable):
    """The pg-boss schema is missing or at a version this package does not support."""

    code = "schema_not_ready"


class DatabaseError(AppError):
    """The database refused a statement."""

    code = "database_error"

    def __init__(self, message: str | None = None, sqlstate: str | None = None) -> None:
        self.sqlstate = sqlstate
        super().__init__(message)


# -- echoing the caller -----------------------------------------------------------------

# Characters of a caller's value that an error message repeats. Enough to recognise it;
# the rest would let one request make our answer and its log line as large as itself.
ECHO_LIMIT = 80


def echo(value: Any) -> str:
    """A caller's value as an error message quotes it: ``repr``, cut after ``ECHO_LIMIT`` characters.

    ``'qqqq…' (5,000 characters)`` says both what was sent and that it was cut.
    """
    text = value if isinstance(value, str) else str(value)
    if len(text) <= ECHO_LIMIT:
        return repr(text)
    return f"{text[:ECHO_LIMIT]!r}… ({len(text):,} characters)"


def echo_loc(loc: Sequence[Any]) -> list[Any]:
    """A field's location with the caller's own keys (strings) cut as ``echo`` cuts them."""
    return [echo(part) if isinstance(part, str) and len(part) > ECHO_LIMIT else part for part in loc]


# -- field errors ---------------------------------------------------------------------


def field_errors(exc: ValidationError, prefix: Sequence[str | int] = ()) -> list[dict[str, Any]]:
    """Pydantic's errors as ``{loc, msg, type}``, never echoing the input."""
    return [
        {"loc": [*prefix, *error["loc"]], "msg": error["msg"], "type": error["type"]}
        for error in exc.errors(include_input=False, include_url=False, include_context=False)
    ]


def describe(errors: Sequence[dict[str, Any]], *, whole: str, most: int | None = None) -> str:
    """Errors on one line, ``a.b: msg; c: msg``; ``whole`` names an empty location."""
    shown = errors if most is None else errors[:most]
    line = "; ".join(
        f"{'.'.join(str(part) for part in echo_loc(error['loc'])) or whole}: {error['msg']}" for error in shown
    )
    hidden = len(errors) - len(shown)
    return line + (f" (and {hidden} more)" if hidden else "")
