"""The HTTP edge shared by every function: method checks, JSON bodies, errors -> status.

``endpoint`` wraps each function's handler. It is the one place where an exception
becomes an HTTP answer (status, the error's stable ``code``, and for a refusal the
location of the field at fault), and where each request gets its single summary log
line.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import flask
from werkzeug.exceptions import HTTPException

from shared import instance, log
from shared.errors import (
    AppError,
    InvalidRequest,
    MalformedRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Refused,
    RequestError,
    Unauthenticated,
    Unavailable,
    UnsupportedMediaType,
    echo,
)

logger = logging.getLogger("manda.request")

Handler = Callable[[flask.Request], flask.Response]
Loc = list[str | int]

# Most specific first; the first class an error is an instance of decides its status.
STATUS_BY_ERROR: tuple[tuple[type[AppError], int], ...] = (
    (MalformedRequest, 400),
    (Unauthenticated, 401),
    (NotFound, 404),
    (MethodNotAllowed, 405),
    (PayloadTooLarge, 413),
    (UnsupportedMediaType, 415),
    (InvalidRequest, 422),
    (Refused, 422),
    (RequestError, 400),
    (Unavailable, 503),
    (AppError, 500),
)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> flask.Response:
    response = flask.Response(
        json.dumps(body, separators=(",", ":"), default=str),
        status=status,
        mimetype="application/json",
    )
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


class _RefusedJob(AppError):
    """A refusal about one job, with where the request carried that job's options."""

    def __init__(self, refused: Refused, options_loc: Loc) -> None:
        self.refused = refused
        self.options_loc = options_loc
        super().__init__(refused.message)


@contextmanager
def jobs_at(options_locs: Sequence[Loc]) -> Iterator[None]:
    """Say where the request carried each job's options, in the order they are submitted.

    A refusal about the i-th job (``Refused.job_index``) then answers with its field at
    that place, e.g. ``["jobs", 2, "options", "singletonKey"]`` for a batch's third job.
    """
    try:
        yield
    except Refused as refused:
        index = refused.job_index
        if index is None or not 0 <= index < len(options_locs):
            raise
        raise _RefusedJob(refused, options_locs[index]) from refused


def error_response(error: AppError) -> flask.Response:
    """The one mapping from our exceptions to an HTTP answer."""
    options_loc: Loc = []
    if isinstance(error, _RefusedJob):
        options_loc = error.options_loc
        error = error.refused
    status = next(code for kind, code in STATUS_BY_ERROR if isinstance(error, kind))
    body: dict[str, Any] = {"error": error.code, "message": error.message}
    headers: dict[str, str] = {}
    if isinstance(error, InvalidRequest) and error.errors:
        body["errors"] = error.errors
    if isinstance(error, Refused):
        loc = [*options_loc, error.option] if error.option else options_loc
        body["errors"] = [{"loc": loc, "msg": error.message, "type": error.problem}]
    if isinstance(error, Unavailable):
        headers["Retry-After"] = str(error.retry_after_seconds)
    if isinstance(error, MethodNotAllowed):
        headers["Allow"] = ", ".join(error.allowed)
    if isinstance(error, Unauthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    return json_response(body, status, headers)


def framework_error(error: HTTPException) -> flask.Response:
    """Flask's and functions-framework's own refusals, in our shape.

    They come before a function's handler runs: functions-framework answers
    ``/robots.txt`` and ``/favicon.ico`` with a 404 of its own. ``main.py`` registers this
    with ``functions_framework.errorhandler``; its 500s stay with functions-framework.
    """
    status = error.code or 500
    code = next((kind.code for kind, mapped in STATUS_BY_ERROR if mapped == status), RequestError.code)
    problem = (error.name or "refused").lower()
    return json_response(
        {"error": code, "message": f"{problem}: {flask.request.method} {echo(flask.request.path)}"}, status
    )


def endpoint(*methods: str) -> Callable[[Handler], Handler]:
    """Wrap a function's handler: allowed methods, trace-aware logging, errors -> status."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        def wrapper(request: flask.Request) -> flask.Response:
            started = time.perf_counter()
            trace = log.trace_from_headers(request.headers, instance.settings().google_cloud_project)
            fields = {log.TRACE_FIELD: trace, "function": handler.__name__}
            with log.request_scope(**fields) as scope:
                try:
                    if request.method not in methods:
                        raise MethodNotAllowed(request.method, methods)
                    response = handler(request)
                except AppError as error:
                    response = error_response(error)
                    scope.setdefault("reason", error.message)
                except Exception:
                    logger.exception("unhandled error")
                    response = json_response({"error": "internal", "message": "internal error"}, 500)
                scope["status"] = response.status_code
                scope["duration_ms"] = round((time.perf_counter() - started) * 1000, 1)
                level = (
                    logging.ERROR
                    if response.status_code >= 500 and response.status_code != 503
                    else logging.WARNING
                    if response.status_code >= 400
                    else logging.INFO
                )
                logger.log(level, f"{request.method} {handler.__name__} -> {response.status_code}")
                return response

        return wrapper

    return decorate


def read_json(request: flask.Request, *, max_bytes: int) -> Any:
    """The request's JSON body, or the precise client error for why it is not acceptable."""
    return parse_json(read_body(request, max_bytes=max_bytes))


def read_body(request: flask.Request, *, max_bytes: int) -> bytes:
    """The raw bytes of a JSON body (for a signature check), refused as ``read_json`` would."""
    length = request.content_length
    if length is not None and length > max_bytes:
        raise PayloadTooLarge(f"request body is {length} bytes; the limit is {max_bytes}")
    mimetype = request.mimetype or ""
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        sent = echo(mimetype) if mimetype else "missing"
        raise UnsupportedMediaType(f"Content-Type must be application/json, not {sent}")
    raw = request.stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"request body is over the limit of {max_bytes} bytes")
    return raw


def parse_json(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedRequest(f"request body is not valid UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise MalformedRequest("JSON nests too deeply") from None
    except json.JSONDecodeError as exc:
        raise MalformedRequest(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError:
        # Python refuses integers of more than 4300 digits (sys.set_int_max_str_digits).
        raise MalformedRequest("JSON number has too many digits") from None
