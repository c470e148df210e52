"""Write ``openapi.yaml``: the HTTP contract of ``enqueue``, ``webhook``, ``jobs`` and ``schedules``.

Request and answer schemas come from the pydantic models in ``shared.intake`` (and
pg-boss's ``SendOptions``), ``shared.job_status`` (``jobs``'s query parameters and
answers) and ``shared.scheduling``, so the document cannot drift from what the functions
accept; ``tests/intake/test_openapi.py`` fails when the committed file is stale.

    .venv/bin/python scripts/generate_openapi.py          # rewrite openapi.yaml
    .venv/bin/python scripts/generate_openapi.py --check  # exit 1 if it is stale
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic.json_schema import models_json_schema

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared import intake, job_status, scheduling  # noqa: E402

OUTPUT = ROOT / "openapi.yaml"
REF = "#/components/schemas/{model}"

REQUESTS = (intake.JobIn, intake.BatchIn, intake.DatabaseEvent, scheduling.ScheduleIn)
ANSWERS = (
    intake.Created,
    intake.Deduplicated,
    intake.BatchResult,
    intake.Accepted,
    intake.Ignored,
    intake.ErrorBody,
    job_status.JobStatus,
    job_status.JobPage,
    scheduling.ScheduleOut,
    scheduling.ScheduleList,
    scheduling.Removed,
)

DESCRIPTION = """\
Job intake, and the jobs' state and results, for the queue that this package shares
with the Node.js app (pg-boss 12 on PostgreSQL). Each function is deployed on its own; the paths below are its name, as
in Cloud Functions' `https://REGION-PROJECT.cloudfunctions.net/NAME` URLs (on a
Cloud Run URL the function answers at `/`).

Every refusal is a JSON `Error` and writes nothing. Credentials are checked before
the body (or query) is parsed, so a request without valid credentials is a 401 whatever it
carries (only a signed webhook delivery has its body read first, to check the
signature, and may see 413 or 415 before that). 500 only ever means a fault of the
deployment (for example a missing setting), never something the client sent.

When a function is also behind Cloud Run IAM, Google's ID token travels in
`X-Serverless-Authorization`, which these functions never read, so it does not
collide with the function's own credential in `Authorization` (enqueue: a caller
that must put Google's token in `Authorization` sends its key in `X-API-Key`, which
then takes precedence).
"""

WEBHOOK_DESCRIPTION = """\
Turns a Supabase database webhook delivery into pg-boss jobs, one per route of the
routes table (`WEBHOOK_ROUTES` / `WEBHOOK_ROUTES_FILE`) that matches the event's
schema, table, type and filters.

Each job's id is derived from the route, the event type, schema, table and the rows
(`record`, `old_record`; or only the route's `key` columns), so a repeated or
duplicated delivery hits pg-boss's same-id rule and is answered as deduplicated
(`ids` entry `null`) instead of making a second job. The id is only remembered while
the first job is in the job table (until pg-boss deletes it).

Authentication: the shared secret (`WEBHOOK_SECRET`) as a Bearer token or in
`X-Webhook-Secret`, or an HMAC-SHA256 signature of the raw body in
`X-Webhook-Signature: sha256=HEX` (of `TIMESTAMP + "." + body` when
`X-Webhook-Timestamp` is sent, which must be within
`WEBHOOK_SIGNATURE_TOLERANCE_SECONDS` of now). Every credential sent must be valid.
"""

ENQUEUE_DESCRIPTION = f"""\
Queue one job (`Job`) or a batch (`Batch`, up to `ENQUEUE_MAX_BATCH` jobs, inserted
in one statement: all or none). Options are pg-boss's own `send()` options under
their pg-boss names; an unknown option is refused, numeric options must fit
PostgreSQL's `integer` (pg-boss's columns), and `singletonKey` and `group` ids are at
most {intake.MAX_KEY_BYTES} bytes (pg-boss indexes them). Ids in one batch must differ per queue. The
queue must exist (404) unless
the deployment sets `CREATE_MISSING_QUEUES`, in which case it is created with
pg-boss's defaults.
"""

SCHEDULES_DESCRIPTION = """\
pg-boss's cron schedules, for the callers of `enqueue` (the same keys). A schedule
sends one job to its queue at every occurrence of its cron expression or RFC 5545 rule,
read in its time zone; the rows are pg-boss's own, so a Node instance with
`schedule: true` fires what is written here, the `supervise` function fires what Node's
`schedule()` writes, and each occurrence is sent once whichever runs.
"""


JOBS_DESCRIPTION = """\
Read jobs as pg-boss's `getJobById` and `findJobs` give them to Node, with the key
used for `enqueue`. With `id`: that job (`JobStatus`), or 404. Without: the queue's
jobs matching every filter given, oldest first (`createdOn`, then `id`), at most
`limit`; `next` is the last job's id when the page is full, to pass as `after`.

A job stays readable until pg-boss's retention deletes it (`deleteAfterSeconds` after
it finished, or at `keepUntil` while still queued; on pg-boss 10.x, which moves finished
jobs to its archive, until it drops them from there); a deleted job is a 404.
Timestamps are ISO-8601 in UTC, to the microsecond.
"""


def _ref(model: type) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": _json(_ref(intake.ErrorBody))}


def _refusals(*, not_found: str | None, max_body: str) -> dict[str, Any]:
    responses = {
        "400": _error(
            "The body is not JSON: malformed, not UTF-8, NaN/Infinity, or nested deeper "
            f"than {intake.MAX_JSON_DEPTH} levels."
        ),
        "401": {
            **_error("Missing or invalid credentials (the same answer for both)."),
            "headers": {"WWW-Authenticate": {"schema": {"type": "string", "const": "Bearer"}}},
        },
        "405": {
            **_error("Only POST is allowed."),
            "headers": {"Allow": {"schema": {"type": "string", "const": "POST"}}},
        },
        "413": _error(f"The body is larger than {max_body}."),
        "415": _error("Content-Type is not application/json (or a +json type)."),
        "422": _error(
            "The body is JSON but not valid; `errors` lists each problem with its "
            '`loc`, e.g. `["jobs", 3, "options", "retryDelay"]`.'
        ),
        "503": {
            **_error("The database is unreachable or too slow, or pg-boss's schema is not ready."),
            "headers": {
                "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}
            },
        },
    }
    if not_found:
        responses["404"] = _error(not_found)
    return dict(sorted(responses.items()))


def _query_parameters(model: type[job_status.JobsQuery]) -> list[dict[str, Any]]:
    """One query parameter per field of the model, with the field's own schema.

    Optional fields lose their ``null`` branch (a query cannot send one); a list is
    comma-separated (form style, not exploded); an object travels as JSON text.
    """
    schema = model.model_json_schema(by_alias=True, ref_template=REF)
    required = set(schema.get("required", ()))
    parameters = []
    for name, field in schema["properties"].items():
        field = dict(field)
        description = field.pop("description", None)
        field.pop("title", None)
        branches = [branch for branch in field.pop("anyOf", ()) if branch.get("type") != "null"]
        if branches:
            [only] = branches
            field.update(only)
        if field.get("default", 0) is None:
            del field["default"]
        parameter: dict[str, Any] = {"name": name, "in": "query", "required": name in required}
        if description:
            parameter["description"] = description
        if field.get("type") == "object":
            parameter["content"] = _json(field)
        else:
            parameter["schema"] = field
            if field.get("type") == "array":
                parameter.update(style="form", explode=False)
        parameters.append(parameter)
    return parameters


def _read_refusals() -> dict[str, Any]:
    """What a GET with a query can be refused with: no body, so no 400, 413 or 415."""
    body_refusals = _refusals(not_found="The queue, or the job in it, does not exist.", max_body="")
    responses = {status: body_refusals[status] for status in ("401", "404", "503")}
    responses["405"] = {
        **_error("Only GET is allowed."),
        "headers": {"Allow": {"schema": {"type": "string", "const": "GET"}}},
    }
    responses["422"] = _error(
        "A query parameter is not valid, unknown or repeated, or `id` came with list parameters; "
        '`errors` names each with its `loc`, e.g. `["query", "id"]`.'
    )
    return dict(sorted(responses.items()))


def _schedules_refusals(method: str) -> dict[str, Any]:
    """What each method of ``schedules`` can be refused with; a query has no body to refuse."""
    responses = _refusals(
        not_found="The queue does not exist." if method == "post" else "There is no such schedule.",
        max_body="ENQUEUE_MAX_BODY_BYTES",
    )
    responses["405"] = {
        **_error("Only GET, POST and DELETE are allowed."),
        "headers": {"Allow": {"schema": {"type": "string", "const": "GET, POST, DELETE"}}},
    }
    if method != "post":
        responses["422"] = _error(
            'A query parameter is unknown, repeated or missing; `errors` names it, e.g. `["query", "name"]`.'
        )
        kept = ("401", "405", "422", "503") + (("404",) if method == "delete" else ())
        responses = {status: responses[status] for status in kept}
    return dict(sorted(responses.items()))


def _query_parameter(name: str, description: str, *, required: bool) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description, "schema": {"type": "string"}}


def build() -> dict[str, Any]:
    _, top = models_json_schema(
        [(model, "validation") for model in REQUESTS] + [(model, "serialization") for model in ANSWERS],
        ref_template=REF,
    )
    enqueue_answers = {
        "200": {
            "description": "Nothing was created: pg-boss suppressed the job (singleton, throttle "
            "or an id already in the queue) or every job of the batch.",
            "content": _json({"oneOf": [_ref(intake.Deduplicated), _ref(intake.BatchResult)]}),
        },
        "201": {
            "description": "Created: the job's id, or for a batch the ids aligned with `jobs` "
            "(`null` where a job was deduplicated) and how many were.",
            "content": _json({"oneOf": [_ref(intake.Created), _ref(intake.BatchResult)]}),
        },
    }
    webhook_answers = {
        "200": {
            "description": "No route matches (`ignored`), or every job already existed "
            "(a repeated delivery: `ids` all `null`).",
            "content": _json({"oneOf": [_ref(intake.Ignored), _ref(intake.Accepted)]}),
        },
        "202": {
            "description": "Jobs queued: one per matching route (`routes`), ids aligned with it.",
            "content": _json(_ref(intake.Accepted)),
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "manda-processing job intake", "version": "1.0.0", "description": DESCRIPTION},
        "servers": [
            {
                "url": "https://{region}-{project}.cloudfunctions.net",
                "variables": {"region": {"default": "europe-west1"}, "project": {"default": "my-project"}},
            }
        ],
        "paths": {
            "/enqueue": {
                "post": {
                    "operationId": "enqueue",
                    "summary": "Queue one job or a batch",
                    "description": ENQUEUE_DESCRIPTION,
                    "security": [{"apiKeyBearer": []}, {"apiKeyHeader": []}],
                    "requestBody": {
                        "required": True,
                        "content": _json({"oneOf": [_ref(intake.JobIn), _ref(intake.BatchIn)]}),
                    },
                    "responses": {
                        **enqueue_answers,
                        **_refusals(
                            not_found="A queue (or dead-letter queue) named does not exist; nothing was written.",
                            max_body="ENQUEUE_MAX_BODY_BYTES",
                        ),
                    },
                }
            },
            "/jobs": {
                "get": {
                    "operationId": "jobs",
                    "summary": "Read a job's state and result, or list a queue's jobs",
                    "description": JOBS_DESCRIPTION,
                    "security": [{"apiKeyBearer": []}, {"apiKeyHeader": []}],
                    "parameters": _query_parameters(job_status.JobsQuery),
                    "responses": {
                        "200": {
                            "description": "The job (with `id`), or a page of jobs.",
                            "content": _json({"oneOf": [_ref(job_status.JobStatus), _ref(job_status.JobPage)]}),
                            "headers": {"Cache-Control": {"schema": {"type": "string", "const": "no-store"}}},
                        },
                        **_read_refusals(),
                    },
                }
            },
            "/schedules": {
                "get": {
                    "operationId": "listSchedules",
                    "summary": "List schedules, Node's among them",
                    "description": SCHEDULES_DESCRIPTION,
                    "security": [{"apiKeyBearer": []}, {"apiKeyHeader": []}],
                    "parameters": [_query_parameter("name", "Only this queue's schedules.", required=False)],
                    "responses": {
                        "200": {"description": "By queue, then key.", "content": _json(_ref(scheduling.ScheduleList))},
                        **_schedules_refusals("get"),
                    },
                },
                "post": {
                    "operationId": "schedule",
                    "summary": "Create a schedule, or replace the one with the same name and key",
                    "description": SCHEDULES_DESCRIPTION,
                    "security": [{"apiKeyBearer": []}, {"apiKeyHeader": []}],
                    "requestBody": {"required": True, "content": _json(_ref(scheduling.ScheduleIn))},
                    "responses": {
                        "200": {
                            "description": "The schedule as stored.",
                            "content": _json(_ref(scheduling.ScheduleOut)),
                        },
                        **_schedules_refusals("post"),
                    },
                },
                "delete": {
                    "operationId": "unschedule",
                    "summary": "Remove a schedule",
                    "description": SCHEDULES_DESCRIPTION,
                    "security": [{"apiKeyBearer": []}, {"apiKeyHeader": []}],
                    "parameters": [
                        _query_parameter("name", "The schedule's queue.", required=True),
                        _query_parameter("key", "The schedule's key (empty when not given).", required=False),
                    ],
                    "responses": {
                        "200": {"description": "Removed.", "content": _json(_ref(scheduling.Removed))},
                        **_schedules_refusals("delete"),
                    },
                },
            },
            "/webhook": {
                "post": {
                    "operationId": "webhook",
                    "summary": "Receive a Supabase database webhook",
                    "description": WEBHOOK_DESCRIPTION,
                    "security": [{"webhookBearer": []}, {"webhookSecretHeader": []}, {"webhookSignature": []}],
                    "requestBody": {"required": True, "content": _json(_ref(intake.DatabaseEvent))},
                    "responses": {
                        **webhook_answers,
                        **_refusals(
                            not_found="A matching route names a queue that does not exist; nothing was written.",
                            max_body="WEBHOOK_MAX_BODY_BYTES",
                        ),
                    },
                }
            },
        },
        "components": {
            "schemas": dict(sorted(top["$defs"].items())),
            "securitySchemes": {
                "apiKeyBearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "One of API_KEYS as `Authorization: Bearer KEY`.",
                },
                "apiKeyHeader": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-API-Key",
                    "description": "One of API_KEYS; wins over Authorization when present.",
                },
                "webhookBearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "WEBHOOK_SECRET as `Authorization: Bearer SECRET`.",
                },
                "webhookSecretHeader": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Webhook-Secret",
                    "description": "WEBHOOK_SECRET.",
                },
                "webhookSignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Webhook-Signature",
                    "description": "`sha256=` + hex HMAC-SHA256 of the raw body (or of "
                    "`X-Webhook-Timestamp` + `.` + body) keyed with "
                    "WEBHOOK_SECRET.",
                },
            },
        },
    }


class _Dumper(yaml.SafeDumper):
    """Multi-line text as ``|`` blocks, so the descriptions read as written."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def render() -> str:
    header = "# Generated by scripts/generate_openapi.py from the request and answer models; do not edit.\n"
    return header + yaml.dump(build(), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUTPUT.exists() or OUTPUT.read_text(encoding="utf-8") != text:
            print(f"{OUTPUT.name} is stale; run scripts/generate_openapi.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
