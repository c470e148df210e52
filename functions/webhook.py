"""``webhook``: Supabase database webhooks become pg-boss jobs, as the routes table says.

Supabase's sender gives up after a second or two, so this only checks, routes and
inserts (one statement) and answers 202 ``{"ids", "routes", "deduplicated"}``; 200
``{"ignored": true}`` when no route matches. A repeated delivery derives the same job
id and is answered as deduplicated (see ``shared.webhook_routes``).

Database webhooks are not signed: the trigger sends a ``WEBHOOK_SECRET`` as a bearer
token or ``X-Webhook-Secret``; a sender that signs adds ``X-Webhook-Signature``
(``shared.auth.check_webhook_caller`` has the rules). A refusal about a job names the
route that made it: ``["routes", NAME, "options", OPTION]``.
"""

from __future__ import annotations

import flask
import functions_framework

from shared import auth, instance, intake, log
from shared.config import Settings, require
from shared.http import endpoint, jobs_at, json_response, parse_json, read_body
from shared.webhook_routes import WebhookRoutes


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
    raw = auth.check_webhook_caller(
        request.headers, settings, lambda: read_body(request, max_bytes=settings.webhook_max_body_bytes)
    )

    routes = routes_table()
    event = intake.parse_event(parse_json(raw))
    log.annotate(event=f"{event.type} {event.schema_name}.{event.table}")
    matched = routes.jobs_for(event)
    if not matched:
        log.annotate(outcome="ignored")
        return json_response(intake.Ignored().model_dump())
    names = [route.name for route, _ in matched]
    with jobs_at([["routes", name, "options"] for name in names]):
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
