"""``jobs``: a service that enqueued work reads its jobs' state and result over HTTP.

``GET ?queue=Q&id=ID`` → 200 the job as pg-boss's ``getJobById`` gives it to Node
(``state``, ``retryCount``, timestamps, ``output``, ``data``, ...), 404 when the queue or
the job does not exist (pg-boss deletes finished jobs once their retention ends).
``GET ?queue=Q`` with ``ids``, ``singletonKey``, ``data``, ``queued``, ``limit`` and
``after`` lists jobs as ``findJobs`` does, oldest first, a page at a time:
``{"jobs": [...], "next": ID | null}``. ``shared.job_status`` has the parameters.

Callers authenticate exactly as for ``enqueue``, with one of ``API_KEYS``.
"""

from __future__ import annotations

import flask
import functions_framework

from shared import auth, instance, job_status, log
from shared.config import Settings, require
from shared.http import endpoint, json_response

# A job's state changes under the caller; no cache along the way may answer for us.
_NO_STORE = {"Cache-Control": "no-store"}


def check_settings(settings: Settings) -> None:
    """At cold start (main.py): without an API key, jobs could answer nobody."""
    require(settings.api_keys, "API_KEYS", "jobs")


@functions_framework.http
@endpoint("GET")
def jobs(request: flask.Request) -> flask.Response:
    settings = instance.settings()
    auth.check_enqueue_caller(request.headers, settings)

    query = job_status.parse_query(request.args)
    log.annotate(queue=query.queue, read="job" if query.id is not None else "list")
    answer = job_status.read(instance.boss(), query)
    # A page holds up to a thousand jobs: its log line counts them instead of naming each.
    log.annotate(**({"job_ids": [answer["id"]]} if "id" in answer else {"listed": len(answer["jobs"])}))
    return json_response(answer, 200, _NO_STORE)
