"""``webhook`` through functions-framework's app, against a real database.

Payloads are the ones Supabase's database webhooks send (supabase_functions.http_request):
``{"type", "table", "schema", "record", "old_record"}``. Every refusal is checked to
leave the job and queue tables exactly as they were.
"""

from __future__ import annotations

import json
import time
from functools import partial

import pytest

from shared import intake
from tests.conftest import SCHEMA, WEBHOOK_SECRET, count_jobs
from tests.intake.conftest import (
    ROUTE_QUEUES,
    ROUTES,
    create_queues,
    jobs_in,
    post_to,
    refused_by,
    routes_env,
    unchanged,
)
from tests.support.signing import sign

AUTH = {"Authorization": f"Bearer {WEBHOOK_SECRET}"}
DOCUMENT = {"id": 42, "project_id": 7, "storage_path": "p/7/a.pdf", "status": "new"}


def supabase(type_: str = "INSERT", record=DOCUMENT, old_record=None, table="documents", schema="public"):
    return {"type": type_, "table": table, "schema": schema, "record": record, "old_record": old_record}


@pytest.fixture
def client(client_for, db):
    create_queues(db, *ROUTE_QUEUES)
    return client_for("webhook", **routes_env())


post = partial(post_to, headers=AUTH)
refused = partial(refused_by, headers=AUTH)


# --- routing ------------------------------------------------------------------------


def test_insert_makes_one_job_per_matching_route(client, db) -> None:
    response = post(client, supabase())
    assert response.status_code == 202
    answer = intake.Accepted.model_validate(response.get_json())
    assert answer.routes == ["document-uploaded", "document-audit"]
    assert answer.deduplicated == 0 and None not in answer.ids
    [process] = jobs_in(db, "document-process")
    assert str(process["id"]) == answer.ids[0]
    assert process["data"] == {"documentId": 42, "path": "p/7/a.pdf"}
    assert (process["retry_limit"], process["priority"]) == (7, 3)
    [audit] = jobs_in(db, "audit")
    assert audit["data"] == supabase()


def test_extra_fields_in_the_payload_are_tolerated(client, db) -> None:
    body = {**supabase(), "commit_timestamp": "2026-01-01T00:00:00Z", "errors": None}
    assert post(client, body).status_code == 202


def test_update_filter(client, db) -> None:
    ready = {**DOCUMENT, "status": "ready"}
    response = post(client, supabase("UPDATE", ready, DOCUMENT))
    assert response.get_json()["routes"] == ["document-ready", "document-audit"]
    assert len(jobs_in(db, "document-index")) == 1
    # status did not change: only the audit route matches.
    response = post(client, supabase("UPDATE", {**ready, "project_id": 8}, ready))
    assert response.get_json()["routes"] == ["document-audit"]
    assert len(jobs_in(db, "document-index")) == 1


def test_unrouted_event_is_ignored(client, db) -> None:
    with unchanged(db):
        response = post(client, supabase(table="projects"))
    assert response.status_code == 200
    assert response.get_json() == {"ignored": True}


def test_repeated_delivery_is_deduplicated(client, db) -> None:
    first = post(client, supabase())
    assert first.status_code == 202
    with unchanged(db):
        again = post(client, supabase())
    assert again.status_code == 200
    assert again.get_json() == {"ids": [None, None], "routes": first.get_json()["routes"], "deduplicated": 2}


def test_same_row_content_with_keys_reordered_is_the_same_event(client, db) -> None:
    assert post(client, supabase()).status_code == 202
    reordered = json.dumps(supabase(record=dict(reversed(list(DOCUMENT.items())))), indent=2)
    assert post(client, raw=reordered.encode()).get_json()["deduplicated"] == 2


def test_a_different_row_is_a_new_event(client, db) -> None:
    post(client, supabase())
    response = post(client, supabase(record={**DOCUMENT, "id": 43}))
    assert response.status_code == 202 and response.get_json()["deduplicated"] == 0
    assert count_jobs(db) == 4


def test_keyed_route_makes_one_job_per_row(client, db) -> None:
    ready = {**DOCUMENT, "status": "ready"}
    post(client, supabase("UPDATE", ready, DOCUMENT))
    # The document becomes ready again after a failed run: the keyed route already has its job.
    again = supabase("UPDATE", {**ready, "storage_path": "v2"}, {**DOCUMENT, "status": "failed"})
    response = post(client, again)
    assert response.get_json()["routes"] == ["document-ready", "document-audit"]
    assert response.get_json()["ids"][0] is None
    assert len(jobs_in(db, "document-index")) == 1


def test_route_to_a_missing_queue_is_404(client_for, db) -> None:
    client = client_for("webhook", **routes_env())
    refused(client, db, 404, supabase())


def test_route_to_a_missing_queue_creates_it_when_allowed(client_for, db) -> None:
    client = client_for("webhook", CREATE_MISSING_QUEUES="1", **routes_env())
    assert post(client, supabase()).status_code == 202
    assert len(jobs_in(db, "document-process")) == 1


def test_a_refusal_of_the_job_queue_names_the_route(client_for, db) -> None:
    create_queues(db, "document-process", "document-index")
    db.run(f"SELECT {SCHEMA}.create_queue('audit', '{{\"policy\": \"key_strict_fifo\"}}'::jsonb)")
    client = client_for("webhook", **routes_env())
    body = refused(client, db, 422, supabase()).get_json()
    assert body["error"] == "singleton_key_required"
    assert [error["loc"] for error in body["errors"]] == [["routes", "document-audit", "options", "singletonKey"]]


def test_without_routes_the_webhook_does_not_start(client_for) -> None:
    with pytest.raises(SystemExit, match="WEBHOOK_ROUTES or WEBHOOK_ROUTES_FILE is not set; webhook needs it"):
        client_for("webhook")


# --- refusals -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({**supabase(), "type": "TRUNCATE"}, ["type"]),
        ({**supabase(), "type": "insert"}, ["type"]),
        (supabase(record=None), ["record"]),
        (supabase("UPDATE", DOCUMENT, None), ["old_record"]),
        (supabase("DELETE", None, None), ["old_record"]),
        ({k: v for k, v in supabase().items() if k != "table"}, ["table"]),
        ({k: v for k, v in supabase().items() if k != "schema"}, ["schema"]),
        (supabase(table=""), ["table"]),
        (supabase(record=[1, 2]), ["record"]),
        (supabase(record={"id": "a\u0000b"}), ["record", "id"]),
        ([supabase()], []),
    ],
)
def test_invalid_payload_is_422(client, db, body, loc) -> None:
    response = refused(client, db, 422, body)
    assert loc in [error["loc"] for error in response.get_json()["errors"]]


def test_keyed_route_without_its_key_column_is_422(client, db) -> None:
    ready = {"status": "ready"}
    response = refused(client, db, 422, supabase("UPDATE", ready, {"status": "new"}))
    assert response.get_json()["errors"][0]["loc"] == ["record", "id"]


def test_refusal_reason_is_logged_without_the_secret(client, db, capsys) -> None:
    refused(client, db, 422, {**supabase(), "type": "TRUNCATE"})
    refused(client, db, 401, supabase(), headers={"Authorization": f"Bearer {WEBHOOK_SECRET}x"})
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    summaries = [line for line in lines if line.get("function") == "webhook" and "status" in line]
    assert [line["status"] for line in summaries] == [422, 401]
    assert "type" in summaries[0]["reason"]
    assert all(WEBHOOK_SECRET not in json.dumps(line) for line in lines)


@pytest.mark.parametrize("raw", [b"{", b"", b"\xff", b'{"type": "\xed\xa0\x80"}', b"[" * 3000 + b"]" * 3000])
def test_malformed_payload_is_400(client, db, raw) -> None:
    refused(client, db, 400, raw=raw)


def test_oversized_payload_is_413(client_for, db) -> None:
    create_queues(db, *ROUTE_QUEUES)
    client = client_for("webhook", WEBHOOK_MAX_BODY_BYTES="1024", **routes_env())
    refused(client, db, 413, supabase(record={**DOCUMENT, "text": "x" * 2000}))


def test_form_content_type_is_415(client, db) -> None:
    refused(client, db, 415, supabase(), content_type="application/x-www-form-urlencoded")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": WEBHOOK_SECRET},
        {"Authorization": f"Bearer {WEBHOOK_SECRET}x"},
        {"X-Webhook-Secret": ""},
        {"X-Webhook-Secret": "nope"},
        {"X-Webhook-Secret": "nope", "Authorization": f"Bearer {WEBHOOK_SECRET}"},
        {"X-API-Key": WEBHOOK_SECRET},
    ],
)
def test_missing_or_wrong_secret_is_401(client, db, headers) -> None:
    refused(client, db, 401, supabase(), headers=headers)


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {WEBHOOK_SECRET}"},
        {"Authorization": f"bearer {WEBHOOK_SECRET}"},
        {"X-Webhook-Secret": WEBHOOK_SECRET},
        {"x-webhook-secret": f"  {WEBHOOK_SECRET}"},
    ],
)
def test_secret_in_either_header_is_accepted(client, db, headers) -> None:
    assert post(client, supabase(), headers=headers).status_code == 202


# --- signed deliveries --------------------------------------------------------------


def signed(body: dict, *, secret: str = WEBHOOK_SECRET, stamp: str | None = None) -> tuple[bytes, dict]:
    raw = json.dumps(body).encode()
    headers = {"X-Webhook-Signature": sign(raw, secret, stamp)}
    if stamp is not None:
        headers["X-Webhook-Timestamp"] = stamp
    return raw, headers


def test_signed_delivery_needs_no_other_secret(client, db) -> None:
    raw, headers = signed(supabase())
    assert post(client, raw=raw, headers=headers).status_code == 202
    raw, headers = signed(supabase(record={**DOCUMENT, "id": 2}), stamp=str(int(time.time())))
    assert post(client, raw=raw, headers=headers).status_code == 202


def test_bad_signature_is_401_even_with_the_right_secret(client, db) -> None:
    raw, headers = signed(supabase(), secret="not-the-secret")
    refused(client, db, 401, raw=raw, headers={**headers, **AUTH})
    raw, headers = signed(supabase())
    refused(client, db, 401, raw=raw + b" ", headers=headers)


def test_stale_or_future_timestamp_is_401(client, db) -> None:
    for skew in (-301, 301):
        raw, headers = signed(supabase(), stamp=str(int(time.time()) + skew))
        refused(client, db, 401, raw=raw, headers=headers)


def test_timestamp_must_be_signed(client, db) -> None:
    raw, headers = signed(supabase())
    refused(client, db, 401, raw=raw, headers={**headers, "X-Webhook-Timestamp": str(int(time.time()))})


def test_signature_can_be_required(client_for, db) -> None:
    create_queues(db, *ROUTE_QUEUES)
    client = client_for("webhook", WEBHOOK_REQUIRE_SIGNATURE="true", **routes_env())
    refused(client, db, 401, supabase())
    raw, headers = signed(supabase())
    assert post(client, raw=raw, headers=headers).status_code == 202


def test_unreachable_database_is_503(client_for) -> None:
    client = client_for("webhook", url="postgresql://postgres@127.0.0.1:1/postgres", **routes_env())
    response = post(client, supabase())
    assert response.status_code == 503
    assert response.headers["Retry-After"]


def test_routes_table_from_a_file(client_for, db, tmp_path) -> None:
    path = tmp_path / "routes.json"
    path.write_text(json.dumps(ROUTES))
    create_queues(db, *ROUTE_QUEUES)
    client = client_for("webhook", WEBHOOK_ROUTES_FILE=str(path))
    assert post(client, supabase()).status_code == 202


def test_old_and_new_secret_both_work_while_rotating(client_for, db) -> None:
    create_queues(db, *ROUTE_QUEUES)
    client = client_for("webhook", **routes_env(), WEBHOOK_SECRET=f"{WEBHOOK_SECRET},brand-new-secret-0123")
    old = post(client, supabase(record={**DOCUMENT, "id": 1}))
    new = post(client, supabase(record={**DOCUMENT, "id": 2}), headers={"X-Webhook-Secret": "brand-new-secret-0123"})
    signed_raw = json.dumps(supabase(record={**DOCUMENT, "id": 3})).encode()
    signed = post(client, raw=signed_raw, headers={"X-Webhook-Signature": sign(signed_raw, "brand-new-secret-0123")})
    assert (old.status_code, new.status_code, signed.status_code) == (202, 202, 202)
    refused(client, db, 401, supabase(record={**DOCUMENT, "id": 4}), headers={"X-Webhook-Secret": "retired-secret"})
