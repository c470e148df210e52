"""``ready``: can this instance do its work? The database answers and pg-boss's schema fits.

The checks use a short-lived connection with a short timeout of their own, so the
answer comes within a few seconds even when the database host drops every packet,
and a wedged shared connection cannot make readiness hang.
"""

from __future__ import annotations

import time
from typing import Any

import flask
import functions_framework

from shared import instance
from shared.db import Database
from shared.errors import AppError
from shared.http import endpoint, json_response
from shared.pgboss.capabilities import NEWEST_SCHEMA, OLDEST_SCHEMA, SUPPORTED_RELEASES
from shared.pgboss.client import PgBoss


@functions_framework.http
@endpoint("GET", "HEAD")
def ready(request: flask.Request) -> flask.Response:
    checks = run_checks()
    if all(check["ok"] for check in checks.values()):
        return json_response({"status": "ready", "checks": checks})
    return json_response({"status": "not_ready", "checks": checks}, 503, {"Retry-After": "5"})


def run_checks() -> dict[str, dict[str, Any]]:
    settings = instance.settings()
    checks: dict[str, dict[str, Any]] = {}
    try:
        probe = Database.from_settings(settings, timeout=settings.ready_timeout_seconds)
    except AppError as error:
        checks["database"] = {"ok": False, "reason": error.message}
        checks["pgboss_schema"] = {"ok": False, "reason": "not checked: no database"}
        return checks
    try:
        started = time.perf_counter()
        try:
            probe.ping()
        except AppError as error:
            checks["database"] = {"ok": False, "reason": error.message}
            checks["pgboss_schema"] = {"ok": False, "reason": "not checked: database unreachable"}
            return checks
        checks["database"] = {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 1)}
        try:
            caps = PgBoss(probe, settings.pgboss_schema).check_schema()
        except AppError as error:
            checks["pgboss_schema"] = {"ok": False, "schema": settings.pgboss_schema, "reason": error.message}
        else:
            checks["pgboss_schema"] = {
                "ok": True,
                "schema": settings.pgboss_schema,
                "version": caps.schema_version,
                "pgboss_releases": caps.releases,
                "supported": f"{OLDEST_SCHEMA}..{NEWEST_SCHEMA} (pg-boss {SUPPORTED_RELEASES})",
            }
        return checks
    finally:
        probe.close()
