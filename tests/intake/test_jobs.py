"""``jobs``: a caller reads its job's state, retries, timestamps and output, as Node's
``getJobById`` and ``findJobs`` give them, with the key it enqueues with."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from shared import intake
from tests.conftest import API_KEY, DRAIN_TOKEN, SCHEMA
from tests.support.job_fields import differences
from tests.support.node_boss import NodeBoss

AUTH = {"X-API-Key": API_KEY}
QUEUE = "status"
DEAD = "status-dlq"
MISSING_ID = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def node(node_boss: NodeBoss) -> NodeBoss:
    node_boss.call("createQueue", DEAD)
    node_boss.call("createQueue", QUEUE, {"retryLimit": 1, "retryDelay": 0})
    return node_boss


@pytest.fixture
def client(client_for: Callable[..., FlaskClient]) -> FlaskClient:
    return client_for("jobs")


def get(client: FlaskClient, headers: dict[str, str] | None = None, **query: Any) -> TestResponse:
    return client.get("/", query_string=query, headers=AUTH if headers is None else headers)


def read(client: FlaskClient, queue: str, job_id: str) -> dict[str, Any]:
    response = get(client, queue=queue, id=job_id)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"
    return response.get_json()


def same_as_node(client: FlaskClient, node: NodeBoss, queue: str, job_id: str) -> dict[str, Any]:
    """Our answer for the job, after checking it field by field against Node's getJobById."""
    ours = read(client, queue, job_id)
    theirs = node.call("getJobById", queue, job_id)
    assert differences(ours, theirs) == []
    assert set(ours) == set(theirs), "the same fields as pg-boss 12.38's getJobById"
    return ours


def refused(response: TestResponse, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    intake.ErrorBody.model_validate(body)
    assert body["error"] == error
    return body


# --- one job, through its life, as Node sees it -----------------------------------------


def test_a_job_reads_as_nodes_get_job_by_id_through_retries_and_failure(client, node) -> None:
    options = {
        "priority": 3,
        "singletonKey": "doc-42",
        "group": {"id": "tenant-1", "tier": "gold"},
        "deadLetter": DEAD,
        "expireInSeconds": 60,
        "retentionSeconds": 7200,
    }
    job_id = node.call("send", QUEUE, {"doc": 42, "tags": ["a", "é"]}, options)

    created = same_as_node(client, node, QUEUE, job_id)
    assert (created["state"], created["retryCount"], created["retryLimit"]) == ("created", 0, 1)
    assert (created["startedOn"], created["completedOn"], created["output"]) == (None, None, None)
    assert created["data"] == {"doc": 42, "tags": ["a", "é"]}

    [_] = node.call("fetch", QUEUE)
    active = same_as_node(client, node, QUEUE, job_id)
    assert active["state"] == "active" and active["startedOn"] is not None

    node.call("fail", QUEUE, job_id, {"message": "first try"})
    retry = same_as_node(client, node, QUEUE, job_id)
    assert (retry["state"], retry["retryCount"], retry["output"]) == ("retry", 0, {"message": "first try"})

    [again] = node.call("fetch", QUEUE)
    assert again["id"] == job_id
    assert same_as_node(client, node, QUEUE, job_id)["retryCount"] == 1

    node.call("fail", QUEUE, job_id, {"message": "second try"})
    failed = same_as_node(client, node, QUEUE, job_id)
    assert (failed["state"], failed["retryCount"], failed["output"]) == ("failed", 1, {"message": "second try"})
    assert failed["completedOn"] is not None


def test_a_job_node_completed_shows_its_output(client, node) -> None:
    job_id = node.call("send", QUEUE, {"n": 1})
    node.call("fetch", QUEUE)
    node.call("complete", QUEUE, job_id, {"pages": 3})
    done = same_as_node(client, node, QUEUE, job_id)
    assert (done["state"], done["output"]) == ("completed", {"pages": 3})


def test_a_job_our_drain_completed_or_retried_shows_output_and_retry_count(client_for, node) -> None:
    drain = client_for("drain")
    drain_auth = {"Authorization": f"Bearer {DRAIN_TOKEN}"}
    assert drain.post("/", json={"budgetSeconds": 0}, headers=drain_auth).status_code == 200  # makes its queues
    echoed = node.call("send", "test-job", {"hello": 1})
    failing = node.call("send", "test-job", {"fail": True})
    assert drain.post("/", json={"budgetSeconds": 0}, headers=drain_auth).get_json()["fetched"] == 2

    client = client_for("jobs")
    done = same_as_node(client, node, "test-job", echoed)
    assert (done["state"], done["output"]) == ("completed", {"echo": {"hello": 1}})
    assert done["completedOn"] is not None
    retry = same_as_node(client, node, "test-job", failing)
    assert (retry["state"], retry["retryCount"]) == ("retry", 0)
    assert retry["output"]["name"] == "RequestedFailure" and retry["startAfter"] > retry["startedOn"]


def test_a_job_sent_through_enqueue_is_read_back_with_the_same_key(client_for, node) -> None:
    enqueue = client_for("enqueue")
    created = enqueue.post("/", json={"name": QUEUE, "data": {"x": 1}, "options": {"priority": 5}}, headers=AUTH)
    assert created.status_code == 201
    job = same_as_node(client_for("jobs"), node, QUEUE, created.get_json()["id"])
    assert (job["priority"], job["data"], job["state"]) == (5, {"x": 1}, "created")


# --- lists, as findJobs gives them -------------------------------------------------------


def test_lists_match_node_find_jobs_filter_by_filter(client, node) -> None:
    sent = [node.call("send", QUEUE, {"doc": n % 2, "n": n}, {"singletonKey": f"k{n % 3}"}) for n in range(6)]
    node.call("fetch", QUEUE)  # one of them is active: not "queued"

    def ids(**query: Any) -> list[str]:
        response = get(client, queue=QUEUE, **query)
        assert response.status_code == 200, response.get_data(as_text=True)
        return [job["id"] for job in response.get_json()["jobs"]]

    def node_ids(**options: Any) -> list[str]:
        return [job["id"] for job in node.call("findJobs", QUEUE, options)]

    assert sorted(ids()) == sorted(sent)
    assert ids() == node_ids()
    assert ids(singletonKey="k1") == node_ids(key="k1") and len(ids(singletonKey="k1")) == 2
    assert ids(data='{"doc": 0}') == node_ids(data={"doc": 0}) and len(ids(data='{"doc": 0}')) == 3
    assert ids(queued="true") == node_ids(queued=True) and len(ids(queued="true")) == 5
    assert ids(ids=f"{sent[4]},{sent[1]},{MISSING_ID}") == [sent[1], sent[4]]
    assert ids(singletonKey="k1", data='{"doc": 0}') == node_ids(key="k1", data={"doc": 0})
    assert ids(singletonKey="nobody") == []

    listed = get(client, queue=QUEUE).get_json()["jobs"]
    for job in listed:
        assert differences(job, node.call("getJobById", QUEUE, job["id"])) == []


def test_pages_follow_each_other_without_gaps_or_repeats(client, node) -> None:
    sent = node.call("insert", QUEUE, [{"data": {"n": n}} for n in range(7)])
    assert sent is None or len(sent) == 7
    everything = [job["id"] for job in node.call("findJobs", QUEUE)]
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        query = {"limit": 3, **({"after": after} if after else {})}
        page = get(client, queue=QUEUE, **query).get_json()
        seen += [job["id"] for job in page["jobs"]]
        pages += 1
        after = page["next"]
        if after is None:
            break
    assert seen == everything and len(seen) == 7
    assert pages == 3


def test_a_page_after_a_deleted_job_is_refused_rather_than_silently_empty(client, node) -> None:
    first, second = node.call("send", QUEUE, {"n": 1}), node.call("send", QUEUE, {"n": 2})
    page = get(client, queue=QUEUE, limit=1).get_json()
    assert [job["id"] for job in page["jobs"]] == [first] and page["next"] == first
    node.call("deleteJob", QUEUE, first)
    body = refused(get(client, queue=QUEUE, after=first), 422, "invalid_request")
    assert body["errors"][0]["loc"] == ["query", "after"] and first in body["message"]
    assert [job["id"] for job in get(client, queue=QUEUE).get_json()["jobs"]] == [second]


# --- not there ----------------------------------------------------------------------------


def test_an_unknown_queue_or_job_is_a_404_naming_it(client, node) -> None:
    body = refused(get(client, queue="no-such-queue", id=MISSING_ID), 404, "queue_not_found")
    assert "no-such-queue" in body["message"]
    refused(get(client, queue="no-such-queue"), 404, "queue_not_found")
    body = refused(get(client, queue=QUEUE, id=MISSING_ID), 404, "job_not_found")
    assert MISSING_ID in body["message"] and QUEUE in body["message"]


def test_a_deleted_job_is_a_404(client, node, db) -> None:
    job_id = node.call("send", QUEUE, {"n": 1})
    assert read(client, QUEUE, job_id)["state"] == "created"
    node.call("deleteJob", QUEUE, job_id)
    assert db.run(f"SELECT count(*) AS n FROM {SCHEMA}.job WHERE id = :id::uuid", {"id": job_id}) == [{"n": 0}]
    refused(get(client, queue=QUEUE, id=job_id), 404, "job_not_found")


def test_a_job_is_found_only_in_its_own_queue(client, node) -> None:
    job_id = node.call("send", QUEUE, {"n": 1})
    refused(get(client, queue=DEAD, id=job_id), 404, "job_not_found")


# --- refused ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"X-API-Key": "wrong"}, 401),
        ({"X-API-Key": API_KEY[:-1]}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": f"Basic {API_KEY}"}, 401),
        ({"X-API-Key": API_KEY}, 200),
        ({"Authorization": f"Bearer {API_KEY}"}, 200),
        # Behind Cloud Run IAM: Google's token in Authorization, the key in X-API-Key.
        ({"Authorization": "Bearer google-id-token", "X-API-Key": API_KEY}, 200),
    ],
)
def test_callers_authenticate_as_for_enqueue(client, node, headers: dict[str, str], status: int) -> None:
    job_id = node.call("send", QUEUE, {"n": 1})
    response = get(client, headers=headers, queue=QUEUE, id=job_id)
    assert response.status_code == status, response.get_data(as_text=True)
    if status == 401:
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert "data" not in response.get_json()


def test_both_keys_work_while_one_rotates(client_for, node) -> None:
    client = client_for("jobs", API_KEYS="old-key-0123456789,new-key-0123456789")
    job_id = node.call("send", QUEUE, {"n": 1})
    for key in ("old-key-0123456789", "new-key-0123456789"):
        assert get(client, headers={"X-API-Key": key}, queue=QUEUE, id=job_id).status_code == 200
    assert get(client, headers={"X-API-Key": API_KEY}, queue=QUEUE, id=job_id).status_code == 401


def test_credentials_are_checked_before_the_query(client, node) -> None:
    refused(get(client, headers={}, queue="bad name", id="nope"), 401, "unauthenticated")


@pytest.mark.parametrize(
    ("query", "loc"),
    [
        ({"queue": QUEUE, "id": "not-a-uuid"}, ["query", "id"]),
        ({"queue": QUEUE, "id": "1234"}, ["query", "id"]),
        ({"queue": QUEUE, "id": ""}, ["query", "id"]),
        ({"queue": QUEUE, "ids": f"{MISSING_ID},nope"}, ["query", "ids", 1]),
        ({"queue": QUEUE, "after": "nope"}, ["query", "after"]),
        ({"id": MISSING_ID}, ["query", "queue"]),
        ({"queue": "bad name!", "id": MISSING_ID}, ["query", "queue"]),
        ({"queue": QUEUE, "limit": "0"}, ["query", "limit"]),
        ({"queue": QUEUE, "limit": "1001"}, ["query", "limit"]),
        ({"queue": QUEUE, "limit": "ten"}, ["query", "limit"]),
        ({"queue": QUEUE, "queued": "maybe"}, ["query", "queued"]),
        ({"queue": QUEUE, "data": "{not json"}, ["query", "data"]),
        ({"queue": QUEUE, "data": "[1, 2]"}, ["query", "data"]),
        ({"queue": QUEUE, "data": '{"a": "\\u0000"}'}, ["query", "data", "a"]),
        ({"queue": QUEUE, "data": '{"a": ' * 101 + "1" + "}" * 101}, ["query", "data"]),
        ({"queue": QUEUE, "data": '{"a": 1e999}'}, ["query", "data"]),
        ({"queue": QUEUE, "singletonKey": "a\x00b"}, ["query", "singletonKey"]),
        ({"queue": QUEUE, "singletonKey": "k" * 1025}, ["query", "singletonKey"]),
        ({"queue": QUEUE, "singleton_key": "k"}, ["query", "singleton_key"]),
        ({"queue": QUEUE, "id": MISSING_ID, "limit": "5"}, ["query"]),
    ],
)
def test_a_malformed_query_is_a_422_naming_the_parameter(client, node, query: dict[str, str], loc: list) -> None:
    body = refused(get(client, **query), 422, "invalid_request")
    assert body["errors"][0]["loc"] == loc, body


def test_a_repeated_parameter_is_refused(client, node) -> None:
    response = client.get(f"/?queue={QUEUE}&id={MISSING_ID}&id={MISSING_ID}", headers=AUTH)
    body = refused(response, 422, "invalid_request")
    assert body["errors"] == [{"loc": ["query", "id"], "msg": "given more than once", "type": "repeated"}]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_only_get_is_allowed(client, node, method: str) -> None:
    response = client.open("/", method=method, query_string={"queue": QUEUE, "id": MISSING_ID}, headers=AUTH)
    refused(response, 405, "method_not_allowed")
    assert response.headers["Allow"] == "GET"
