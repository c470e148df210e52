"""The error codes callers see in ``error``: written out per class, stable, one per kind."""

from __future__ import annotations

import importlib
import pkgutil

import shared
from shared.errors import AppError
from shared.http import STATUS_BY_ERROR

# The wire contract: a change here is a change of the API callers program against.
CODES = {
    "AppError": ("app_error", 500),
    "ConfigError": ("config_error", 500),
    "RequestError": ("request_error", 400),
    "MalformedRequest": ("malformed_request", 400),
    "Unauthenticated": ("unauthenticated", 401),
    "MethodNotAllowed": ("method_not_allowed", 405),
    "PayloadTooLarge": ("payload_too_large", 413),
    "UnsupportedMediaType": ("unsupported_media_type", 415),
    "InvalidRequest": ("invalid_request", 422),
    "NotFound": ("not_found", 404),
    "QueueNotFound": ("queue_not_found", 404),
    "JobNotFound": ("job_not_found", 404),
    "Refused": ("refused", 422),
    "InvalidQueue": ("invalid_queue", 422),
    "SingletonKeyRequired": ("singleton_key_required", 422),
    "DuplicateJobId": ("duplicate_job_id", 422),
    "InternalQueue": ("internal_queue", 422),
    "OptionNotSupported": ("option_not_supported", 422),
    "SchedulesNotSupported": ("schedules_not_supported", 422),
    "Unavailable": ("unavailable", 503),
    "DatabaseUnavailable": ("database_unavailable", 503),
    "SchemaNotReady": ("schema_not_ready", 503),
    "SchemaMissing": ("schema_missing", 503),
    "UnsupportedSchemaVersion": ("unsupported_schema_version", 503),
    "CertificatesUnavailable": ("certificates_unavailable", 503),
    "DatabaseError": ("database_error", 500),
}


def _every_error_class() -> list[type[AppError]]:
    for module in pkgutil.walk_packages(shared.__path__, "shared."):
        importlib.import_module(module.name)
    found, stack = [], [AppError]
    while stack:
        kind = stack.pop()
        found.append(kind)
        stack.extend(kind.__subclasses__())
    return [kind for kind in found if kind.__module__.startswith("shared.") and not kind.__name__.startswith("_")]


def test_every_error_names_its_code_and_status() -> None:
    seen = {}
    for kind in _every_error_class():
        assert "code" in vars(kind), f"{kind.__name__} inherits its code; name one of its own"
        status = next(code for base, code in STATUS_BY_ERROR if issubclass(kind, base))
        seen[kind.__name__] = (kind.code, status)
    assert seen == CODES


def test_no_two_kinds_share_a_code() -> None:
    codes = [code for code, _ in CODES.values()]
    assert len(codes) == len(set(codes))
