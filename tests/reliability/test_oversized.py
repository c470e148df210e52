"""Oversized input: who refuses it, in which shape, and how much of it an answer repeats.

The functions run as Cloud Run runs them, under functions-framework's gunicorn. gunicorn
reads the request head before any of our code: a header line over its
``limit_request_field_size`` or more than ``limit_request_fields`` header fields get its
own 431, an HTML page, and the function never sees the request (functions-framework sets
no other limits, so gunicorn's defaults hold; see the README's function contracts).
Everything under those limits reaches our code and is answered in our JSON shape, as are
functions-framework's own refusals (its 404 for ``/favicon.ico``). An answer that names
what the caller sent quotes only its start, so a 5,000-character queue name cannot make
a 5,000-character error message or log line.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from gunicorn.config import LimitRequestFields, LimitRequestFieldSize

from shared.db import Database
from shared.errors import ECHO_LIMIT
from tests.conftest import SCHEMA
from tests.reliability.support import DRAIN, KEY, add_figures
from tests.reliability.test_abuse import QUEUE, refused, unchanged

FIELD_LIMIT = int(LimitRequestFieldSize.default)  # bytes of one header line, name included
FIELDS_LIMIT = int(LimitRequestFields.default)
# An answer quoting a value cut at ECHO_LIMIT stays well under this, whatever was sent.
ANSWER_LIMIT = 600


@pytest.fixture
def enqueue(serve: Callable[..., Any], db: Database) -> Any:
    db.run(
        f"SELECT {SCHEMA}.create_queue(:name, :options::jsonb)", {"name": QUEUE, "options": '{"policy": "standard"}'}
    )
    return serve("enqueue", CREATE_MISSING_QUEUES="false")


def test_headers_over_the_servers_limits_get_its_431_before_any_function_runs(enqueue, db) -> None:
    body = {"name": QUEUE, "data": {}}
    too_long = {**KEY, "X-Padding": "p" * 10_000}
    too_many = {**KEY, **{f"X-Extra-{n}": "x" for n in range(FIELDS_LIMIT + 1)}}
    for headers in (too_long, too_many, {"X-API-Key": "k" * 10_000}):
        with unchanged(db):
            answer = enqueue.post(body, headers=headers)
        assert answer.status_code == 431, answer.text
        # gunicorn's page, not ours: documented in the README, and nothing was written.
        assert answer.headers["Content-Type"].startswith("text/html"), answer.headers
        assert "Request Header Fields Too Large" in answer.text
    # Just under the limits the request reaches our code: accepted, or refused in our shape.
    padding = "p" * (FIELD_LIMIT - len("X-Padding: ") - 200)
    under = {**KEY, "X-Padding": padding, **{f"X-Extra-{n}": "x" for n in range(FIELDS_LIMIT - 10)}}
    assert enqueue.post(body, headers=under).status_code == 201
    wrong = refused(db, 401, lambda: enqueue.post(body, headers={"X-API-Key": padding}))
    assert wrong.json()["error"] == "unauthenticated"
    add_figures("oversized", refused_by_server=3, answered_by_us_under_the_limits=2)


def test_functions_frameworks_own_refusals_answer_in_our_shape(enqueue, db) -> None:
    for method, path in (("GET", "/favicon.ico"), ("GET", "/robots.txt"), ("POST", "/robots.txt")):
        with unchanged(db):
            answer = requests.request(method, enqueue.url.rstrip("/") + path, headers=KEY, timeout=30)
        assert answer.status_code == 404, answer.text
        assert answer.headers["Content-Type"] == "application/json", answer.headers
        assert answer.json() == {"error": "not_found", "message": f"not found: {method} '{path}'"}


def quotes_only_the_start(answer: requests.Response, sent: str) -> str:
    """The answer names the value by its start and length, and is small whatever was sent."""
    assert len(answer.content) < ANSWER_LIMIT, f"{len(answer.content)} bytes answered to {len(sent)} sent"
    body = answer.json()
    message = " ".join([body["message"], *(str(error["msg"]) for error in body.get("errors", []))])
    assert sent[:ECHO_LIMIT] in message and sent[: ECHO_LIMIT + 1] not in message, message
    assert f"({len(sent):,} characters)" in message, message
    return str(body["message"])


def log_lines(log_dir: Path) -> list[dict[str, Any]]:
    lines = []
    for path in log_dir.glob("*.log"):
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                lines.append(json.loads(line))
    return [line for line in lines if isinstance(line, dict)]


def test_answers_quote_only_the_start_of_what_was_sent(enqueue, serve, db, log_dir: Path) -> None:
    name = "q" * 5_000
    message = quotes_only_the_start(refused(db, 404, lambda: enqueue.post({"name": name}, headers=KEY)), name)
    assert message.endswith("does not exist"), message
    media = "text/" + "m" * 5_000
    answer = refused(db, 415, lambda: enqueue.post(raw=b"{}", headers={**KEY, "Content-Type": media}, timeout=30))
    quotes_only_the_start(answer, media)
    key = "k" * 5_000
    for body in ({"name": QUEUE, "data": {key[:-1] + "\u0000": 1}}, {"name": QUEUE, "options": {key: 1}}):
        answer = refused(db, 422, lambda body=body: enqueue.post(body, headers=KEY))
        quotes_only_the_start(answer, key)
        [error] = answer.json()["errors"]
        assert any(isinstance(part, str) and part.startswith(repr(key[:ECHO_LIMIT])) for part in error["loc"]), error
    drain = serve("drain")
    answer = refused(db, 422, lambda: drain.post({"queues": [name], "budgetSeconds": 0}, headers=DRAIN))
    quotes_only_the_start(answer, name)
    # Each request's log line gives the same message as its reason, so it is as short.
    reasons = [line.get("reason", "") for line in log_lines(log_dir) if line.get("status") in (404, 415, 422)]
    assert any(reason.endswith("does not exist") for reason in reasons), reasons
    for sent in (name, media, key):
        assert not [reason for reason in reasons if sent[: ECHO_LIMIT + 1] in reason], "a reason repeats it whole"
    add_figures("oversized", answers_quoting_a_cut_value=5)
