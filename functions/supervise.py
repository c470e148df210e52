"""``supervise``: pg-boss's background work — expiry, retention, flows, cached counts, cron.

What a Node instance with ``supervise: true`` and ``schedule: true`` does on timers, run
by Cloud Scheduler every minute so a deployment without any Node process keeps every
pg-boss feature working (``shared.pgboss.supervisor``). Callers are authenticated exactly
as ``drain``'s are. A call runs rounds for ``SUPERVISE_BUDGET_SECONDS`` and answers with
what each pass did::

    {"monitor": {"queues": 4, "counted": 4, "expired": 1, ...},
     "maintain": {"queues": 4, "deleted": 120, ...}, "flows": {"released": 2},
     "cron": {"schedules": 3, "slots_filed": 1}, "send_it": {"sent": 1}, "rounds": 10}

A pass another supervisor (Node or Python) ran inside its interval, or that is turned
off, or that does not support the installed schema, says so under ``skipped``.
"""

from __future__ import annotations

import flask
import functions_framework

from shared import auth, instance, log
from shared.http import endpoint, json_response
from shared.supervision import supervise_for


@functions_framework.http
@endpoint("POST")
def supervise(request: flask.Request) -> flask.Response:
    settings = instance.settings()
    caller = auth.check_drain_caller(request.headers, settings)
    log.annotate(caller=caller)
    summary = supervise_for(instance.boss(), settings)
    log.annotate(supervise=summary)
    return json_response(summary)
