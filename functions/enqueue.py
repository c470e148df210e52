"""``enqueue``: services put jobs on pg-boss's queue over HTTP, one or a batch at a time.

``POST {"name", "data", "options"}`` → 201 ``{"id"}``, or 200 ``{"deduplicated": true}``
when pg-boss's singleton, throttle or same-id rule suppressed it. ``POST {"jobs": [...]}``
inserts up to ``ENQUEUE_MAX_BATCH`` jobs in one statement, all or none → 201 (200 if
every job was suppressed) ``{"ids": [id | null, ...], "deduplicated": n}``.

Callers authenticate with one of ``API_KEYS``, as ``Authorization: Bearer KEY`` or
``X-API-Key: KEY``. Behind Cloud Run IAM, Google's ID token travels in
``X-Serverless-Authorization`` (or in ``Authorization`` with the key in ``X-API-Key``),
so the two credentials never collide. ``openapi.yaml`` has the full contract.
"""

from __future__ import annotations

import flask
import functions_framework

from shared import auth, instance, intake, log
from shared.config import Settings, require
from shared.http import endpoint, jobs_at, json_response, read_json


def check_settings(settings: Settings) -> None:
    """At cold start (main.py): without an API key, enqueue could accept nobody."""
    require(settings.api_keys, "API_KEYS", "enqueue")


@functions_framework.http
@endpoint("POST")
def enqueue(request: flask.Request) -> flask.Response:
    settings = instance.settings()
    auth.check_enqueue_caller(request.headers, settings)

    body = read_json(request, max_bytes=settings.enqueue_max_body_bytes)
    jobs, batch = intake.parse_enqueue(body, max_batch=settings.enqueue_max_batch)
    log.annotate(queues=sorted({job.name for job in jobs}), jobs=len(jobs))
    with jobs_at([intake.options_loc(index, batch) for index in range(len(jobs))]):
        ids = intake.submit(instance.boss(), jobs, create_missing_queues=settings.create_missing_queues)

    created = [job_id for job_id in ids if job_id is not None]
    deduplicated = len(ids) - len(created)
    log.annotate(outcome="enqueued" if created else "deduplicated", job_ids=created, deduplicated=deduplicated)
    status = 201 if created else 200
    if batch:
        return json_response(intake.BatchResult(ids=ids, deduplicated=deduplicated).model_dump(), status)
    if created:
        return json_response(intake.Created(id=created[0]).model_dump(), status)
    return json_response(intake.Deduplicated().model_dump(), status)
