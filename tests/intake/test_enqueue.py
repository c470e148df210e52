"""``enqueue`` through functions-framework's app, against a real database.

Every refusal is checked to leave the job and queue tables exactly as they were.
"""

from __future__ import annotations

import io
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import pytest

from shared import intake
from shared.db import Database
from shared.pgboss.client import PgBoss
from shared.pgboss.models import JobRequest, SendOptions
from tests.conftest import API_KEY, SCHEMA, count_jobs
from tests.intake.conftest import QUEUE, create_queues, jobs_in, post_to, refused_by, unchanged

AUTH = {"Authorization": f"Bearer {API_KEY}"}
ID = str(uuid.uuid4())


@pytest.fixture
def client(client_for, db):
    create_queues(db, QUEUE)
    return client_for("enqueue")


post = partial(post_to, headers=AUTH)
refused = partial(refused_by, headers=AUTH)


# --- created and deduplicated -------------------------------------------------------


def test_one_job_is_created(client, db) -> None:
    response = post(client, {"name": QUEUE, "data": {"n": 1}, "options": {"priority": 5}})
    assert response.status_code == 201
    job_id = intake.Created.model_validate(response.get_json()).id
    [row] = jobs_in(db, QUEUE)
    assert str(row["id"]) == job_id
    assert row["data"] == {"n": 1}
    assert row["priority"] == 5


def test_data_and_options_may_be_left_out(client, db) -> None:
    response = post(client, {"name": QUEUE})
    assert response.status_code == 201
    assert jobs_in(db, QUEUE)[0]["data"] is None


def test_same_id_is_deduplicated(client, db) -> None:
    body = {"name": QUEUE, "data": {}, "options": {"id": str(uuid.uuid4())}}
    assert post(client, body).status_code == 201
    again = post(client, body)
    assert again.status_code == 200
    assert again.get_json() == {"deduplicated": True}
    assert count_jobs(db) == 1


def test_singleton_is_deduplicated(client, db) -> None:
    body = {"name": QUEUE, "options": {"singletonKey": "k", "singletonSeconds": 60}}
    assert post(client, body).status_code == 201
    assert post(client, body).get_json() == {"deduplicated": True}
    assert count_jobs(db) == 1


def test_batch_is_created_in_order(client, db) -> None:
    jobs = [{"name": QUEUE, "data": {"i": i}} for i in range(5)]
    response = post(client, {"jobs": jobs})
    assert response.status_code == 201
    result = intake.BatchResult.model_validate(response.get_json())
    assert result.deduplicated == 0 and len(result.ids) == 5
    rows = {str(row["id"]): row["data"] for row in jobs_in(db, QUEUE)}
    assert [rows[job_id] for job_id in result.ids] == [{"i": i} for i in range(5)]


def test_batch_marks_deduplicated_jobs_with_null(client, db) -> None:
    known = str(uuid.uuid4())
    assert post(client, {"name": QUEUE, "options": {"id": known}}).status_code == 201
    response = post(client, {"jobs": [{"name": QUEUE}, {"name": QUEUE, "options": {"id": known}}]})
    assert response.status_code == 201
    body = response.get_json()
    assert body["ids"][1] is None and body["ids"][0] is not None
    assert body["deduplicated"] == 1
    all_again = post(client, {"jobs": [{"name": QUEUE, "options": {"id": known}}]})
    assert all_again.status_code == 200
    assert all_again.get_json() == {"ids": [None], "deduplicated": 1}
    assert count_jobs(db) == 2


def test_batch_up_to_the_limit_is_accepted(client_for, db) -> None:
    create_queues(db, QUEUE)
    client = client_for("enqueue", ENQUEUE_MAX_BATCH="3")
    assert post(client, {"jobs": [{"name": QUEUE}] * 3}).status_code == 201
    response = refused(client, db, 422, {"jobs": [{"name": QUEUE}] * 4})
    assert response.get_json()["errors"][0]["loc"] == ["jobs"]


def test_unknown_queue_is_created_when_the_deployment_opts_in(client_for, db) -> None:
    client = client_for("enqueue", CREATE_MISSING_QUEUES="true")
    response = post(client, {"jobs": [{"name": "fresh-a"}, {"name": "fresh-b", "data": 1}]})
    assert response.status_code == 201
    assert len(jobs_in(db, "fresh-a")) == 1 and len(jobs_in(db, "fresh-b")) == 1


# --- refusals -----------------------------------------------------------------------


def test_unknown_queue_is_404(client, db) -> None:
    response = refused(client, db, 404, {"name": "no-such-queue"})
    assert "no-such-queue" in response.get_json()["message"]


def test_one_unknown_queue_fails_the_whole_batch(client, db) -> None:
    refused(client, db, 404, {"jobs": [{"name": QUEUE}, {"name": "no-such-queue"}]})


def test_unknown_dead_letter_queue_is_404(client, db) -> None:
    refused(client, db, 404, {"name": QUEUE, "options": {"deadLetter": "no-such-dlq"}})


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"name": QUEUE, "options": {"retryDelay": -1}}, ["options", "retryDelay"]),
        ({"name": QUEUE, "options": {"priority": "high"}}, ["options", "priority"]),
        ({"name": QUEUE, "options": {"notAnOption": 1}}, ["options", "notAnOption"]),
        ({"name": QUEUE, "options": {"priority": 2**31}}, ["options", "priority"]),
        ({"name": QUEUE, "options": {"retryLimit": 10**12}}, ["options", "retryLimit"]),
        ({"name": QUEUE, "options": {"singletonKey": "é" * 513}}, ["options", "singletonKey"]),
        ({"name": QUEUE, "options": {"group": {"id": "g" * 1025}}}, ["options", "group", "id"]),
        (
            {"jobs": [{"name": QUEUE, "options": {"id": ID}}, {"name": QUEUE, "options": {"id": ID}}]},
            ["jobs", 1, "options", "id"],
        ),
        ({"name": QUEUE, "options": {"startAfter": "tomorrow"}}, ["options", "startAfter"]),
        ({"name": QUEUE, "options": {"id": "not-a-uuid"}}, ["options", "id"]),
        ({"name": QUEUE, "options": []}, ["options"]),
        ({"name": QUEUE, "extra": True}, ["extra"]),
        ({"name": "bad name!"}, ["name"]),
        ({"name": 7}, ["name"]),
        ({"data": {}}, ["name"]),
        ({"jobs": []}, ["jobs"]),
        ({"jobs": {}}, ["jobs"]),
        ({"jobs": [{"name": QUEUE}], "name": QUEUE}, ["name"]),
        ({"name": QUEUE, "data": {"text": "nul\u0000byte"}}, ["data", "text"]),
        ({"name": QUEUE, "data": ["\ud800"]}, ["data", 0]),
        ([{"name": QUEUE}], []),
        ("just a string", []),
    ],
)
def test_invalid_body_is_422_with_the_field(client, db, body, loc) -> None:
    response = refused(client, db, 422, body)
    errors = response.get_json()["errors"]
    assert loc in [error["loc"] for error in errors], errors


def test_batch_errors_name_the_job_and_option(client, db) -> None:
    jobs = [{"name": QUEUE}] * 3 + [{"name": QUEUE, "options": {"retryDelay": -5}}]
    response = refused(client, db, 422, {"jobs": jobs})
    assert response.get_json()["errors"][0]["loc"] == ["jobs", 3, "options", "retryDelay"]
    assert "jobs.3.options.retryDelay" in response.get_json()["message"]


def test_a_refusal_of_the_job_queue_names_the_job_of_the_batch(client, db) -> None:
    db.run(f"SELECT {SCHEMA}.create_queue('fifo', '{{\"policy\": \"key_strict_fifo\"}}'::jsonb)")
    jobs = [{"name": "fifo", "options": {"singletonKey": "a"}}, {"name": QUEUE}, {"name": "fifo"}]
    response = refused(client, db, 422, {"jobs": jobs})
    body = response.get_json()
    assert body["error"] == "singleton_key_required"
    assert body["errors"] == [
        {"loc": ["jobs", 2, "options", "singletonKey"], "msg": body["message"], "type": "missing"}
    ]
    single = refused(client, db, 422, {"name": "fifo"}).get_json()
    assert single["errors"][0]["loc"] == ["options", "singletonKey"]


def test_errors_never_echo_the_input(client, db) -> None:
    response = refused(client, db, 422, {"name": QUEUE, "options": {"priority": "s3cr3t-value"}})
    assert "s3cr3t-value" not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b'{"name": "x",}',
        b"",
        b"\xff\xfe{}",
        b'{"name": "\xc3\x28"}',
        b"NaN",
        b'{"name": "q", "data": 1e999}',
        b'{"data": ' + b"1" * 5000 + b"}",
    ],
)
def test_malformed_body_is_400(client, db, raw) -> None:
    refused(client, db, 400, raw=raw)


@pytest.mark.parametrize("depth", [101, 5000, 200_000])
def test_deeply_nested_body_is_400(client, db, depth) -> None:
    nested = b'{"name": "intake-test", "data": ' + b"[" * depth + b"]" * depth + b"}"
    refused(client, db, 400, raw=nested)


def test_nesting_within_the_limit_is_accepted(client, db) -> None:
    data = json.loads("[" * 90 + "]" * 90)
    response = post(client, {"name": QUEUE, "data": data})
    assert response.status_code == 201
    assert jobs_in(db, QUEUE)[0]["data"] == data


def test_oversized_body_is_413(client_for, db) -> None:
    client = client_for("enqueue", ENQUEUE_MAX_BODY_BYTES="2048")
    refused(client, db, 413, {"name": QUEUE, "data": "x" * 4096})


def test_oversized_body_without_content_length_is_413(client_for, db) -> None:
    client = client_for("enqueue", ENQUEUE_MAX_BODY_BYTES="2048")
    body = json.dumps({"name": QUEUE, "data": "x" * 4096}).encode()
    with unchanged(db):
        response = client.post(
            "/",
            input_stream=io.BytesIO(body),
            headers={**AUTH, "Content-Type": "application/json", "Transfer-Encoding": "chunked"},
            # A chunked body as a WSGI server presents it: no length, input terminated.
            environ_overrides={"CONTENT_LENGTH": "", "wsgi.input_terminated": True},
        )
    assert response.status_code == 413


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_wrong_content_type_is_refused(client, db, content_type) -> None:
    refused(client, db, 415, {"name": QUEUE}, content_type=content_type)


def test_get_is_405(client, db) -> None:
    with unchanged(db):
        response = client.get("/", headers=AUTH)
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"


# --- authentication -----------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer "},
        {"Authorization": API_KEY},
        {"Authorization": f"Basic {API_KEY}"},
        {"Authorization": f"Bearer {API_KEY}x"},
        {"Authorization": f"Bearer {API_KEY[:-1]}"},
        {"Authorization": f"Bearer {API_KEY} extra"},
        {"Authorization": f"Bearer {API_KEY[:5]} {API_KEY[5:]}"},
        {"X-API-Key": ""},
        {"X-API-Key": "wrong"},
        {"X-Api-Token": API_KEY},
        {"X-Serverless-Authorization": f"Bearer {API_KEY}"},
        {"X-API-Key": "wrong", "Authorization": f"Bearer {API_KEY}"},
    ],
    ids=lambda headers: ",".join(f"{k}={v[:12]}" for k, v in headers.items()) or "none",
)
def test_missing_or_wrong_key_is_401(client, db, headers) -> None:
    response = refused(client, db, 401, {"name": QUEUE}, headers=headers)
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.get_json() == {"error": "unauthenticated", "message": "missing or invalid credentials"}


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {API_KEY}"},
        {"Authorization": f"bearer {API_KEY}"},
        {"Authorization": f"BEARER  {API_KEY} "},
        {"X-API-Key": API_KEY},
        {"x-api-key": f" {API_KEY} "},
        {"X-API-Key": API_KEY, "Authorization": "Bearer google-id-token"},
    ],
)
def test_key_is_accepted_in_either_header(client, db, headers) -> None:
    assert post(client, {"name": QUEUE}, headers=headers).status_code == 201


def test_unauthenticated_request_is_401_before_its_body_is_read(client, db) -> None:
    refused(client, db, 401, raw=b"{not json", headers={})


def test_rotated_keys_are_all_valid(client_for, db) -> None:
    create_queues(db, QUEUE)
    client = client_for("enqueue", API_KEYS="old-key-1234, new-key-5678")
    for key in ("old-key-1234", "new-key-5678"):
        assert post(client, {"name": QUEUE}, headers={"X-API-Key": key}).status_code == 201
    refused(client, db, 401, {"name": QUEUE}, headers={"X-API-Key": "old-key-1234, new-key-5678"})
    refused(client, db, 401, {"name": QUEUE}, headers={"X-API-Key": API_KEY})


def test_without_configured_keys_enqueue_does_not_start(client_for) -> None:
    with pytest.raises(SystemExit, match="API_KEYS is not set; enqueue needs it"):
        client_for("enqueue", API_KEYS="")


# --- database trouble ---------------------------------------------------------------


def test_unreachable_database_is_503_with_retry_after(client_for) -> None:
    client = client_for("enqueue", url="postgresql://postgres@127.0.0.1:1/postgres")
    response = post(client, {"name": QUEUE})
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0


def test_missing_schema_is_503(client_for, empty_database_url) -> None:
    client = client_for("enqueue", url=empty_database_url)
    response = post(client, {"name": QUEUE})
    assert response.status_code == 503


def test_keys_up_to_the_index_limit_are_accepted(client, db) -> None:
    key = "k" * intake.MAX_KEY_BYTES
    body = {"name": QUEUE, "options": {"singletonKey": key, "group": {"id": key, "tier": key}}}
    assert post(client, body).status_code == 201


def test_the_same_id_in_two_queues_is_two_jobs(client, db) -> None:
    create_queues(db, "intake-other")
    jobs = [{"name": QUEUE, "options": {"id": ID}}, {"name": "intake-other", "options": {"id": ID}}]
    assert post(client, {"jobs": jobs}).get_json() == {"ids": [ID, ID], "deduplicated": 0}


def test_job_rows_carry_the_options_sent(client, db) -> None:
    options = {
        "priority": 2,
        "retryLimit": 4,
        "retryDelay": 3,
        "retryBackoff": True,
        "retryDelayMax": 60,
        "expireInSeconds": 120,
        "retentionSeconds": 3600,
        "deleteAfterSeconds": 600,
        "singletonKey": "s",
        "group": {"id": "tenant-1", "tier": "gold"},
        "startAfter": 30,
    }
    assert post(client, {"name": QUEUE, "data": [1, "two"], "options": options}).status_code == 201
    row = db.run(f"SELECT *, start_after - created_on AS delay, keep_until - start_after AS keep FROM {SCHEMA}.job")[0]
    assert (row["priority"], row["retry_limit"], row["retry_delay"], row["retry_backoff"]) == (2, 4, 3, True)
    assert (row["retry_delay_max"], row["expire_seconds"], row["deletion_seconds"]) == (60, 120, 600)
    assert (row["singleton_key"], row["group_id"], row["group_tier"]) == ("s", "tenant-1", "gold")
    assert row["delay"].total_seconds() == pytest.approx(30, abs=2)
    assert row["keep"].total_seconds() == pytest.approx(3600, abs=2)


def test_first_jobs_racing_for_a_missing_queue_are_all_created(database_url, db) -> None:
    """Many callers meet a missing queue at once: one creates it, the others' failed insert
    finds it already there. Each of them must still get its job in, never a raw 23503."""
    callers = 8
    bosses = [PgBoss(Database(database_url), SCHEMA) for _ in range(callers)]
    try:
        for round_ in range(6):
            name = f"created-on-demand-{round_}"
            job = JobRequest(name, {"round": round_}, SendOptions())
            send = partial(intake.submit, jobs=[job], create_missing_queues=True)
            with ThreadPoolExecutor(callers) as pool:
                answers = list(pool.map(send, bosses))
            assert all(ids[0] for ids in answers)
            assert len(jobs_in(db, name)) == callers
    finally:
        for boss in bosses:
            boss.db.close()
