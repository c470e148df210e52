"""``drain``: run the Python handlers on due pg-boss jobs, in one bounded call.

Cloud Scheduler calls it every minute with an OIDC token (``DRAIN_TOKEN`` for local
runs). The optional JSON body narrows the call::

    {"queues": ["test-job"], "maxJobs": 100, "budgetSeconds": 0}

and the answer summarises it::

    {"fetched": 3, "completed": 2, "failed": 0, "retried": 1, "expired": 0,
     "queues": {"test-job": {...}}, "duration_ms": 812.4, "stopped": "empty", "wake": "listen"}

``stopped`` says why the call ended: ``budget`` (its time was up), ``max_jobs`` or
``empty`` (a budget of 0 found nothing more due). The loop itself is
``shared.drain``; handlers live in ``shared.handlers``.

Each call first reconciles the Supabase outbox (``shared.outbox``): events the webhook
missed become their jobs before the queues are drained. The answer's ``outbox`` counts
that pass (absent when the deployment has no webhook routes); its time comes off the
call's budget, and a database failure there is logged and leaves the drain to run.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Annotated, Any

import flask
import functions_framework
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared import auth, instance, log
from shared.config import Settings
from shared.db import Database
from shared.drain.limits import Limits
from shared.drain.listener import listen_url
from shared.drain.loop import Drainer
from shared.errors import AppError, InvalidRequest, echo, field_errors
from shared.handlers import load
from shared.http import endpoint, json_response, parse_json, read_body
from shared.outbox.reconcile import reconcile_outbox

MAX_BODY_BYTES = 16 * 1024
# Reconciling the outbox may use at most this share of a call's time.
OUTBOX_SHARE = 0.25

logger = logging.getLogger(__name__)


class DrainRequest(BaseModel):
    """The optional body; every field narrows the call."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    queues: list[Annotated[str, Field(strict=True)]] | None = Field(None, min_length=1)
    max_jobs: int | None = Field(None, alias="maxJobs", strict=True, ge=1)
    budget_seconds: float | None = Field(None, alias="budgetSeconds", strict=True, ge=0, allow_inf_nan=False)


def check_settings(settings: Settings) -> None:
    """At cold start (main.py): drain needs a way to accept Cloud Scheduler's calls."""
    auth.check_drain_configured(settings)


@functions_framework.http
@endpoint("POST")
def drain(request: flask.Request) -> flask.Response:
    settings = instance.settings()
    caller = auth.check_drain_caller(request.headers, settings)
    log.annotate(caller=caller)
    registry = load()
    body = read_request(request, registry.names(), settings)
    names = body.queues or list(registry.names())
    url = listen_url(settings)
    limits = Limits.from_settings(settings, budget_seconds=body.budget_seconds, max_jobs=body.max_jobs)
    started = time.monotonic()
    outbox = _reconcile(settings, limits)
    drainer = Drainer(
        instance.boss(),
        registry,
        _less(limits, time.monotonic() - started),
        listen=(lambda: Database.from_settings(settings, url=url)) if url else None,
        handler_queues=instance.handler_queues(),
    )
    summary = drainer.run(list(dict.fromkeys(names))).as_dict()
    log.annotate(**{key: summary[key] for key in ("fetched", "completed", "failed", "retried", "expired", "stopped")})
    if outbox is not None:
        summary["outbox"] = outbox
        log.annotate(outbox={key: value for key, value in outbox.items() if value and key != "installed"})
    return json_response(summary)


def _reconcile(settings: Settings, limits: Limits) -> dict[str, Any] | None:
    """The outbox pass, bounded to a share of the call; its failure never stops the drain."""
    try:
        result = reconcile_outbox(
            instance.boss(),
            settings,
            instance.webhook_routes(),
            time_limit_seconds=limits.end_seconds * OUTBOX_SHARE,
        )
    except AppError as error:
        logger.warning("outbox not reconciled: %s", error.message)
        return {"error": error.message}
    return None if result is None else result.as_dict()


def _less(limits: Limits, spent: float) -> Limits:
    """``limits`` with ``spent`` seconds already gone from the call's time."""
    ceiling = max(limits.ceiling_seconds - spent, 0.0)
    budget = min(limits.budget_seconds, ceiling) if limits.budget_seconds > 0 else 0.0
    return dataclasses.replace(limits, ceiling_seconds=ceiling, budget_seconds=budget)


def read_request(request: flask.Request, queues: tuple[str, ...], settings: Settings) -> DrainRequest:
    """The validated body (all defaults when there is none)."""
    if not request.content_length and not request.headers.get("Transfer-Encoding"):
        return DrainRequest()
    raw = read_body(request, max_bytes=MAX_BODY_BYTES)
    payload = parse_json(raw) if raw.strip() else {}
    if not isinstance(payload, dict):
        raise InvalidRequest("the body must be a JSON object", [_error([], "must be a JSON object")])
    try:
        body = DrainRequest.model_validate(payload)
    except ValidationError as exc:
        raise InvalidRequest("invalid drain request", field_errors(exc)) from None
    errors = [
        _error(["queues", index], f"no handler for queue {echo(name)}; known: {', '.join(queues)}")
        for index, name in enumerate(body.queues or [])
        if name not in queues
    ]
    if body.max_jobs is not None and body.max_jobs > settings.drain_max_jobs:
        errors.append(_error(["maxJobs"], f"at most DRAIN_MAX_JOBS ({settings.drain_max_jobs})"))
    if body.budget_seconds is not None and body.budget_seconds > settings.drain_ceiling_seconds:
        errors.append(
            _error(["budgetSeconds"], f"at most {settings.drain_ceiling_seconds:g} (the timeout less its margin)")
        )
    if errors:
        raise InvalidRequest("invalid drain request", errors)
    return body


def _error(loc: list[Any], msg: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": "value_error"}
