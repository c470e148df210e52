"""enqueue, webhook and jobs (which reads what they wrote) served by ``functions-framework``
on 127.0.0.1, as Cloud Functions runs them.

The test client skips the real server's handling of lengths, chunked bodies and
header parsing; these tests go through it. Every refusal leaves the tables unchanged.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
import requests

from shared import intake
from tests.conftest import API_KEY, WEBHOOK_SECRET
from tests.intake.conftest import ROUTE_QUEUES, Server, create_queues, routes_env, unchanged
from tests.support.signing import sign

QUEUE = "over-http"
KEY = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def enqueue(serve, module_db) -> Server:
    create_queues(module_db, QUEUE, *ROUTE_QUEUES)
    return serve("enqueue", API_KEYS=f"{API_KEY},rotated-key-2", ENQUEUE_MAX_BODY_BYTES="4096", ENQUEUE_MAX_BATCH="5")


@pytest.fixture(scope="module")
def webhook(serve, enqueue) -> Server:
    return serve("webhook", WEBHOOK_MAX_BODY_BYTES="4096", **routes_env())


def refused(db, status: int, send) -> requests.Response:
    with unchanged(db):
        response = send()
    assert response.status_code == status, response.text
    intake.ErrorBody.model_validate(response.json())
    return response


def test_enqueue_created_and_deduplicated(enqueue) -> None:
    body = {"name": QUEUE, "data": {"a": 1}, "options": {"id": str(uuid.uuid4())}}
    created = enqueue.post(body, headers=KEY)
    assert created.status_code == 201
    assert created.json() == {"id": body["options"]["id"]}
    again = enqueue.post(body, headers={"X-API-Key": "rotated-key-2"})
    assert (again.status_code, again.json()) == (200, {"deduplicated": True})


def test_enqueue_batch(enqueue) -> None:
    response = enqueue.post({"jobs": [{"name": QUEUE, "data": i} for i in range(5)]}, headers=KEY)
    assert response.status_code == 201
    assert len(response.json()["ids"]) == 5 and response.json()["deduplicated"] == 0


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Token {API_KEY}"},
        {"X-API-Key": ""},
        {"X-Serverless-Authorization": f"Bearer {API_KEY}"},
    ],
)
def test_enqueue_401(enqueue, module_db, headers) -> None:
    response = refused(module_db, 401, lambda: enqueue.post({"name": QUEUE}, headers=headers))
    assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"{", 400),
        (b'{"name": "over-http", "data": "\xff"}', 400),
        (b"[" * 50_000 + b"]" * 50_000, 413),
        (b'{"name": "over-http", "data": ' + b"[" * 1500 + b"]" * 1500 + b"}", 400),
        (b'{"name": "over-http", "options": {"retryDelay": -1}}', 422),
        (json.dumps({"jobs": [{"name": QUEUE}] * 6}).encode(), 422),
        (b'{"name": "missing-queue"}', 404),
        (json.dumps({"name": QUEUE, "data": "x" * 5000}).encode(), 413),
    ],
)
def test_enqueue_refusals(enqueue, module_db, raw, status) -> None:
    refused(module_db, status, lambda: enqueue.post(raw=raw, headers=KEY))


def test_enqueue_chunked_body_over_the_limit_is_413(enqueue, module_db) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "over-http", "data": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    refused(module_db, 413, lambda: enqueue.post(raw=chunks(), headers=KEY))


def test_enqueue_chunked_body_within_the_limit_is_accepted(enqueue) -> None:
    response = enqueue.post(raw=iter([b'{"name": ', b'"over-http"}']), headers=KEY)
    assert response.status_code == 201


def test_enqueue_wrong_content_type_and_method(enqueue, module_db) -> None:
    plain = {**KEY, "Content-Type": "text/plain"}
    refused(module_db, 415, lambda: enqueue.post({"name": QUEUE}, headers=plain))
    response = refused(module_db, 405, lambda: requests.get(enqueue.url, headers=KEY, timeout=10))
    assert response.headers["Allow"] == "POST"


def test_webhook_accepts_ignores_and_deduplicates(webhook, module_db) -> None:
    event = {
        "type": "INSERT",
        "table": "documents",
        "schema": "public",
        "record": {"id": 99, "storage_path": "p"},
        "old_record": None,
    }
    first = webhook.post(event, headers={"X-Webhook-Secret": WEBHOOK_SECRET})
    assert first.status_code == 202
    with unchanged(module_db):
        again = webhook.post(event, headers={"Authorization": f"bearer {WEBHOOK_SECRET}"})
        ignored = webhook.post({**event, "table": "other"}, headers={"X-Webhook-Secret": WEBHOOK_SECRET})
    assert (again.status_code, again.json()["deduplicated"]) == (200, 2)
    assert (ignored.status_code, ignored.json()) == (200, {"ignored": True})


def test_webhook_signed_delivery(webhook) -> None:
    raw = json.dumps(
        {"type": "INSERT", "table": "documents", "schema": "public", "record": {"id": 100}, "old_record": None}
    ).encode()
    response = webhook.post(raw=raw, headers={"X-Webhook-Signature": sign(raw, WEBHOOK_SECRET)})
    assert response.status_code == 202


@pytest.mark.parametrize(
    ("raw", "headers", "status"),
    [
        (b"{}", {}, 401),
        (b"{}", {"X-Webhook-Secret": "wrong"}, 401),
        (b"{}", {"X-Webhook-Signature": "sha256=" + "0" * 64}, 401),
        (b"{", {"X-Webhook-Secret": WEBHOOK_SECRET}, 400),
        (b'{"type": "\xc3"}', {"X-Webhook-Secret": WEBHOOK_SECRET}, 400),
        (b'{"type": "TRUNCATE", "table": "documents", "schema": "public"}', {"X-Webhook-Secret": WEBHOOK_SECRET}, 422),
        (b"{" + b" " * 5000 + b"}", {"X-Webhook-Secret": WEBHOOK_SECRET}, 413),
    ],
)
def test_webhook_refusals(webhook, module_db, raw, headers, status) -> None:
    refused(module_db, status, lambda: webhook.post(raw=raw, headers=headers))


def test_database_unreachable_is_503(serve) -> None:
    down = serve("enqueue", DATABASE_URL="postgresql://postgres@127.0.0.1:1/postgres")
    response = down.post({"name": QUEUE}, headers=KEY)
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    hook = serve("webhook", DATABASE_URL="postgresql://postgres@127.0.0.1:1/postgres", **routes_env())
    event = {"type": "DELETE", "table": "documents", "schema": "public", "record": None, "old_record": {"id": 1}}
    assert hook.post(event, headers={"X-Webhook-Secret": WEBHOOK_SECRET}).status_code == 503


def test_one_log_line_per_request_with_the_outcome(enqueue) -> None:
    response = enqueue.post({"name": QUEUE, "data": {}}, headers=KEY)
    job_id = response.json()["id"]
    lines = [json.loads(line) for line in enqueue.output().splitlines() if line.startswith("{")]
    [line] = [line for line in lines if job_id in line.get("job_ids", [])]
    summary = (line["severity"], line["outcome"], line["status"], line["queues"])
    assert summary == ("INFO", "enqueued", 201, [QUEUE])
    assert API_KEY not in enqueue.output()


@pytest.fixture(scope="module")
def jobs(serve, enqueue) -> Server:
    return serve("jobs", API_KEYS=f"{API_KEY},rotated-key-2")


def test_a_job_enqueued_over_http_is_read_back_over_http(enqueue, jobs) -> None:
    data = {"text": "é ☃ & = ? #", "n": 1}
    created = enqueue.post({"name": QUEUE, "data": data, "options": {"singletonKey": "a key & more"}}, headers=KEY)
    assert created.status_code == 201
    job_id = created.json()["id"]

    one = requests.get(jobs.url, params={"queue": QUEUE, "id": job_id}, headers=KEY, timeout=15)
    assert one.status_code == 200 and one.headers["Cache-Control"] == "no-store"
    assert (one.json()["id"], one.json()["data"], one.json()["state"]) == (job_id, data, "created")
    # Query text is URL-decoded by the real server: keys and JSON with reserved characters.
    query = {"queue": QUEUE, "singletonKey": "a key & more", "data": json.dumps({"text": data["text"]})}
    listed = requests.get(jobs.url, params=query, headers={"X-API-Key": "rotated-key-2"}, timeout=15)
    assert listed.status_code == 200 and [job["id"] for job in listed.json()["jobs"]] == [job_id]

    missing = requests.get(jobs.url, params={"queue": QUEUE, "id": str(uuid.uuid4())}, headers=KEY, timeout=15)
    assert (missing.status_code, missing.json()["error"]) == (404, "job_not_found")
    assert requests.get(jobs.url, params={"queue": QUEUE, "id": job_id}, timeout=15).status_code == 401
