"""drain over HTTP: auth, the request body, the answer, and jobs sent by real pg-boss."""

from __future__ import annotations

import time

import pytest

from tests.conftest import SCHEMA, count_jobs
from tests.drain.conftest import job_row

QUEUE = "test-job"


def test_drains_jobs_sent_by_node_and_stores_the_handler_output(drain_client, node_boss, db) -> None:
    drain = drain_client()
    assert drain.post({"budgetSeconds": 0}).status_code == 200  # deploying the handler creates its queue
    queue = node_boss.call("getQueue", QUEUE)
    assert (queue["retryLimit"], queue["retryBackoff"], queue["notify"]) == (3, True, True)

    ids = [node_boss.call("send", QUEUE, {"n": n}) for n in range(3)]
    response = drain.post({"budgetSeconds": 0})

    assert response.status_code == 200
    body = response.get_json()
    assert {key: body[key] for key in ("fetched", "completed", "failed", "retried", "expired", "stopped")} == {
        "fetched": 3,
        "completed": 3,
        "failed": 0,
        "retried": 0,
        "expired": 0,
        "stopped": "empty",
    }
    assert body["queues"][QUEUE]["completed"] == 3
    assert body["duration_ms"] > 0
    for n, job_id in enumerate(ids):
        job = node_boss.call("getJobById", QUEUE, job_id)
        assert job["state"] == "completed"
        assert job["output"] == {"echo": {"n": n}}


def test_a_failing_handler_is_retried_with_backoff_and_pg_boss_error_shape(drain_client, node_boss, db) -> None:
    drain = drain_client()
    drain.post({"budgetSeconds": 0})
    job_id = node_boss.call("send", QUEUE, {"fail": True})

    body = drain.post({"budgetSeconds": 0}).get_json()

    assert (body["fetched"], body["retried"], body["failed"]) == (1, 1, 0)
    row = job_row(db, QUEUE, job_id)
    assert row["state"] == "retry"
    assert row["output"]["name"] == "RequestedFailure"
    assert "failed on request" in row["output"]["message"]
    assert "Traceback" in row["output"]["stack"]
    # Exponential backoff with pg-boss's formula: the first retry waits 1 to 2 seconds.
    delay = db.run(
        f"SELECT extract(epoch FROM start_after - now()) AS s FROM {SCHEMA}.job WHERE id = :id::uuid",
        {"id": job_id},
    )[0]["s"]
    assert 0 < delay <= 2
    # Not due yet, so a call now leaves it alone.
    assert drain.post({"budgetSeconds": 0}).get_json()["fetched"] == 0


def test_budget_end_fails_a_running_handler_so_pg_boss_retries_it(drain_client, node_boss, db) -> None:
    drain = drain_client(DRAIN_STOP_FETCHING_SECONDS="0.5")
    drain.post({"budgetSeconds": 0})
    job_id = node_boss.call("send", QUEUE, {"sleep": 30})

    started = time.monotonic()
    body = drain.post({"budgetSeconds": 1}).get_json()

    assert time.monotonic() - started < 5
    assert body["stopped"] == "budget"
    assert body["queues"][QUEUE]["interrupted"] == 1
    assert (body["fetched"], body["retried"]) == (1, 1)
    row = job_row(db, QUEUE, job_id)
    assert row["state"] == "retry"  # failed, not un-claimed: the attempt counts
    assert "budget ended" in row["output"]["message"]
    assert row["output"]["name"] == "DrainStopped"


def test_max_jobs_bounds_a_call(drain_client, node_boss) -> None:
    drain = drain_client()
    drain.post({"budgetSeconds": 0})
    node_boss.call("insert", QUEUE, [{"data": {"n": n}} for n in range(5)])

    body = drain.post({"budgetSeconds": 0, "maxJobs": 2}).get_json()

    assert (body["fetched"], body["completed"], body["stopped"]) == (2, 2, "max_jobs")
    assert drain.post({"budgetSeconds": 0}).get_json()["completed"] == 3


def test_a_watching_call_picks_up_a_job_sent_while_it_runs(drain_client, node_boss) -> None:
    import threading

    drain = drain_client(DRAIN_STOP_FETCHING_SECONDS="0.2", DRAIN_LISTEN_POLL_SECONDS="10")
    drain.post({"budgetSeconds": 0})
    answer: dict = {}
    call = threading.Thread(target=lambda: answer.update(r=drain.post({"budgetSeconds": 2.5})))
    call.start()
    time.sleep(0.8)
    job_id = node_boss.call("send", QUEUE, {"late": True})
    call.join(timeout=15)

    body = answer["r"].get_json()
    assert body["completed"] == 1
    assert body["wake"] == "listen"  # woken by pg-boss's NOTIFY, not by its 10 s poll
    job = node_boss.call("getJobById", QUEUE, job_id)
    assert job["state"] == "completed"


def test_the_start_of_a_call_fails_jobs_that_expired_elsewhere(drain_client, node_boss, db) -> None:
    drain = drain_client()
    drain.post({"budgetSeconds": 0})
    job_id = node_boss.call("send", QUEUE, {"n": 1}, {"expireInSeconds": 1})
    assert node_boss.call("fetch", QUEUE)[0]["id"] == job_id  # claimed by a worker that then died
    db.run(
        f"UPDATE {SCHEMA}.job SET started_on = started_on - interval '5 seconds' WHERE id = :id::uuid",
        {"id": job_id},
    )

    body = drain.post({"budgetSeconds": 0}).get_json()

    assert body["expired"] == 1
    row = job_row(db, QUEUE, job_id)
    assert row["state"] == "retry"
    assert row["output"] == {"value": {"message": "job timed out"}}


def test_drain_token_is_accepted_and_anything_else_is_401_with_nothing_fetched(drain_client, node_boss, db) -> None:
    drain = drain_client()
    drain.post({"budgetSeconds": 0})
    job_id = node_boss.call("send", QUEUE, {"n": 1})

    for headers in (
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": "Basic dGVzdA=="},
        {"X-Serverless-Authorization": "Bearer test-drain-token-0123456789"},
    ):
        response = drain.post({"budgetSeconds": 0}, headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert job_row(db, QUEUE, job_id)["state"] == "created"


def test_drain_without_any_credential_configured_does_not_start(drain_client) -> None:
    with pytest.raises(SystemExit, match="drain accepts no caller: set DRAIN_OIDC_AUDIENCES"):
        drain_client(DRAIN_TOKEN="")


@pytest.mark.parametrize(
    ("body", "location"),
    [
        ({"queues": ["no-such-queue"]}, ["queues", 0]),
        ({"queues": []}, ["queues"]),
        ({"queues": "test-job"}, ["queues"]),
        ({"maxJobs": 0}, ["maxJobs"]),
        ({"maxJobs": 1.5}, ["maxJobs"]),
        ({"maxJobs": 1_000_000}, ["maxJobs"]),
        ({"budgetSeconds": -1}, ["budgetSeconds"]),
        ({"budgetSeconds": "5"}, ["budgetSeconds"]),
        ({"budgetSeconds": 56}, ["budgetSeconds"]),
        ({"budget": 5}, ["budget"]),
        ([], []),
    ],
)
def test_an_invalid_body_is_422_naming_the_field(drain_client, body, location) -> None:
    response = drain_client().post(body)
    assert response.status_code == 422
    assert location in [error["loc"] for error in response.get_json()["errors"]]


def test_malformed_json_wrong_type_and_method(drain_client) -> None:
    drain = drain_client()
    headers = {"Authorization": "Bearer test-drain-token-0123456789"}
    bad = drain.client.post("/", data=b"{", headers={**headers, "Content-Type": "application/json"})
    assert bad.status_code == 400
    text = drain.client.post("/", data=b"x", headers={**headers, "Content-Type": "text/plain"})
    assert text.status_code == 415
    assert drain.client.get("/", headers=headers).status_code == 405


def test_an_empty_body_drains_every_queue_with_the_defaults(drain_client, node_boss) -> None:
    drain = drain_client(DRAIN_BUDGET_SECONDS="0")
    assert drain.post(None).status_code == 200
    node_boss.call("send", QUEUE, {"n": 1})
    body = drain.post(None).get_json()
    assert (body["completed"], body["stopped"]) == (1, "empty")


def test_an_unreachable_database_is_503_with_retry_after(drain_client) -> None:
    response = drain_client().client.post(
        "/", json={"budgetSeconds": 0}, headers={"Authorization": "Bearer test-drain-token-0123456789"}
    )
    assert response.status_code == 200  # control: the same call against the test database
    unreachable = drain_client(DATABASE_URL="postgresql://postgres@127.0.0.1:1/postgres")
    response = unreachable.post({"budgetSeconds": 0})
    assert response.status_code == 503
    assert response.headers["Retry-After"]


def test_a_database_without_pg_boss_is_503(drain_client, empty_database_url, db) -> None:
    response = drain_client(DATABASE_URL=empty_database_url).post({"budgetSeconds": 0})
    assert response.status_code == 503
    assert count_jobs(db) == 0


def test_one_call_drains_the_test_job_and_its_three_twins(drain_client, node_boss) -> None:
    drain = drain_client()
    queues = ["test-job", "test-job-batch", "test-job-async", "test-job-process"]
    drain.post({"budgetSeconds": 0, "queues": queues})  # creates the queues
    sent = {queue: [node_boss.call("send", queue, {"queue": queue, "n": n}) for n in range(3)] for queue in queues}

    body = drain.post({"budgetSeconds": 0, "queues": queues}).get_json()

    assert {queue: body["queues"][queue]["completed"] for queue in queues} == dict.fromkeys(queues, 3)
    for queue, ids in sent.items():
        for n, job_id in enumerate(ids):
            assert node_boss.call("getJobById", queue, job_id)["output"] == {"echo": {"queue": queue, "n": n}}
