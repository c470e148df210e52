"""``webhook``: Supabase database webhooks become pg-boss jobs, as the routes table says.

Supabase's sender gives up after a second or two, so this only checks, routes and
inserts (one statement) and answers 202 ``{"ids", "routes", "deduplicated"}``; 200
``{"ignored": true}`` when no route matches. A repeated delivery derives the same job
id and is answered as deduplicated (see ``shared.webhook_routes``).

Database webhooks are not signed: the trigger sends a ``WEBHOOK_SECRET`` (comma-separated,
so old and new are both valid while it rotates) as
``Authorization: Bearer SECRET`` or ``X-Webhook-Secret: SECRET``. A sender that signs
adds ``X-Webhook-Signature: sha256=HEX`` (HMAC-SHA256 of the raw body with the same
secret; of ``TIMESTAMP + "." + body`` when ``X-Webhook-Timestamp`` is sent, which must
then be within ``WEBHOOK_SIGNATURE_TOLERANCE_SECONDS``). Every credential sent must be
valid and at least one must be sent; ``WEBHOOK_REQUIRE_SIGNATURE`` makes the
signature mandatory.
"""

from __future__ import annotations

import flask
import functions_framework

from shared import auth, instance, intake, log
from shared.config import Settings, require
from shared.errors import Unauthenticated
from shared.http import endpoint, json_response, parse_json, read_body
from shared.webhook_routes import WebhookRoutes

SECRET_HEADER = "X-Webhook-Secret"
SIGNATURE_HEADER = "X-Webhook-Signature"
TIMESTAMP_HEADER = "X-Webhook-Timestamp"


def check_settings(settings: Settings) -> None:
    """At cold start (main.py): webhook needs a secret to accept Supabase and routes to make jobs."""
    require(settings.webhook_secrets, "WEBHOOK_SECRET", "webhook")
    routes_table()


def routes_table() -> WebhookRoutes:
    return require(instance.webhook_routes(), "WEBHOOK_ROUTES or WEBHOOK_ROUTES_FILE", "webhook")


@functions_framework.http
@endpoint("POST")
def webhook(request: flask.Request) -> flask.Response:
    settings = instance.settings()
    headers = request.headers
    signed = SIGNATURE_HEADER in headers
    if not signed and settings.webhook_require_signature:
        raise Unauthenticated("a signature (X-Webhook-Signature) is required")
    # With no secret configured nothing matches, so the caller is refused like any other.
    if not signed or SECRET_HEADER in headers or "Authorization" in headers:
        auth.check_secret(auth.presented_secret(headers, SECRET_HEADER), settings.webhook_secrets)
    raw = read_body(request, max_bytes=settings.webhook_max_body_bytes)
    if signed:
        auth.check_signature(
            raw,
            headers.get(SIGNATURE_HEADER),
            settings.webhook_secrets,
            timestamp=headers.get(TIMESTAMP_HEADER),
            tolerance_seconds=settings.webhook_signature_tolerance_seconds,
        )

    routes = routes_table()
    event = intake.parse_event(parse_json(raw))
    log.annotate(event=f"{event.type} {event.schema_name}.{event.table}")
    matched = routes.jobs_for(event)
    if not matched:
        log.annotate(outcome="ignored")
        return json_response(intake.Ignored().model_dump())
    names = [route.name for route, _ in matched]
    ids = intake.submit(
        instance.boss(),
        [job for _, job in matched],
        create_missing_queues=settings.create_missing_queues,
    )

    created = [job_id for job_id in ids if job_id is not None]
    deduplicated = len(ids) - len(created)
    log.annotate(outcome="enqueued" if created else "deduplicated", routes=names, job_ids=created)
    answer = intake.Accepted(ids=ids, routes=names, deduplicated=deduplicated)
    return json_response(answer.model_dump(), 202 if created else 200)
