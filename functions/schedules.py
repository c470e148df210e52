"""``schedules``: services create, replace, list and remove pg-boss cron schedules over HTTP.

``POST {"name", "cron", "data", "options", "key", "tz", "missed"}`` → 200 the schedule
as stored (the same ``name`` and ``key`` replace it, as pg-boss's ``schedule()`` does).
``GET`` (``?name=Q`` for one queue) → 200 ``{"schedules": [...]}``, Node's schedules
among them. ``DELETE ?name=Q&key=K`` → 200 ``{"removed": {...}}``, 404 when there is no
such schedule. The rows are pg-boss's own, so a Node timekeeper fires what this writes
and the ``supervise`` function fires what Node writes.

Callers authenticate exactly as for ``enqueue``, with one of ``API_KEYS``.
"""

from __future__ import annotations

import flask
import functions_framework

from shared import auth, instance, log, scheduling
from shared.config import Settings, require
from shared.errors import NotFound, echo
from shared.http import endpoint, json_response, read_json
from shared.pgboss.schedules import Schedules


def check_settings(settings: Settings) -> None:
    """At cold start (main.py): without an API key, schedules could accept nobody."""
    require(settings.api_keys, "API_KEYS", "schedules")


@functions_framework.http
@endpoint("GET", "POST", "DELETE")
def schedules(request: flask.Request) -> flask.Response:
    settings = instance.settings()
    auth.check_enqueue_caller(request.headers, settings)
    book = Schedules(instance.boss())

    if request.method == "GET":
        name = scheduling.query(request.args, allowed=("name",)).get("name")
        rows = [scheduling.answer(row) for row in book.list(name)]
        log.annotate(schedules=len(rows))
        return json_response(scheduling.ScheduleList(schedules=rows).model_dump(mode="json", by_alias=True))

    if request.method == "DELETE":
        wanted = scheduling.query(request.args, allowed=("name", "key"), required=("name",))
        name, key = wanted["name"], wanted.get("key", "")
        log.annotate(queue=name, key=key)
        if not book.unschedule(name, key):
            raise NotFound(f"no schedule for queue {echo(name)} with key {echo(key)}")
        return json_response(scheduling.Removed(removed={"name": name, "key": key}).model_dump())

    wanted_schedule = scheduling.parse(read_json(request, max_bytes=settings.enqueue_max_body_bytes))
    log.annotate(queue=wanted_schedule.name, key=wanted_schedule.key)
    stored = scheduling.save(book, wanted_schedule)
    return json_response(stored.model_dump(mode="json", by_alias=True))
