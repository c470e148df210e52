"""Done means: what is posted to enqueue, or delivered as a Supabase webhook, over real HTTP,
is what a real pg-boss 12.38 worker in Node receives, data and options alike."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from tests.conftest import API_KEY, SCHEMA, WEBHOOK_SECRET
from tests.intake.conftest import ROUTES, Server, routes_env, unchanged
from tests.support.node_boss import NodeBoss

ENQUEUE_AUTH = {"X-API-Key": API_KEY}
WEBHOOK_AUTH = {"Authorization": f"Bearer {WEBHOOK_SECRET}"}


@pytest.fixture(scope="module")
def node(module_database: str) -> Iterator[NodeBoss]:
    with NodeBoss(module_database, SCHEMA, supervise=False, schedule=False, migrate=False) as boss:
        for queue in (
            "interop-one",
            "interop-batch-a",
            "interop-batch-b",
            "interop-dlq",
            "document-process",
            "document-index",
            "audit",
        ):
            boss.call("createQueue", queue)
        yield boss


@pytest.fixture(scope="module")
def enqueue(serve, node) -> Server:
    return serve("enqueue")


@pytest.fixture(scope="module")
def webhook(serve, node) -> Server:
    return serve("webhook", **routes_env())


def received(node: NodeBoss, queue: str, count: int = 1) -> list[dict]:
    node.work(queue, {"behavior": "complete"}, pollingIntervalSeconds=0.5, includeMetadata=True)
    node.wait_received(queue, count, timeout=15)
    node.off_work(queue)
    return node.received(queue)


def test_a_job_reaches_a_node_worker_with_its_data_and_options(enqueue, node) -> None:
    data = {"document": {"id": 42, "tags": ["a", "é", "☃"]}, "ratio": 0.25, "ok": True, "none": None, "big": 2**53 + 1}
    options = {
        "priority": 9,
        "retryLimit": 4,
        "retryDelay": 3,
        "retryBackoff": True,
        "retryDelayMax": 90,
        "expireInSeconds": 120,
        "retentionSeconds": 7200,
        "deleteAfterSeconds": 600,
        "singletonKey": "doc-42",
        "deadLetter": "interop-dlq",
        "group": {"id": "tenant-1", "tier": "gold"},
        "startAfter": "2020-01-02T03:04:05+00:00",
    }
    body = {"name": "interop-one", "data": data, "options": options}
    response = enqueue.post(body, headers=ENQUEUE_AUTH)
    assert response.status_code == 201, response.text
    [job] = received(node, "interop-one")
    assert job["id"] == response.json()["id"]
    assert job["data"] == {**data, "big": 2**53}  # JavaScript numbers are doubles
    assert job["priority"] == 9
    retry = (job["retryLimit"], job["retryDelay"], job["retryBackoff"], job["retryDelayMax"])
    assert retry == (4, 3, True, 90)
    assert (job["expireInSeconds"], job["deleteAfterSeconds"]) == (120, 600)
    assert (job["singletonKey"], job["deadLetter"]) == ("doc-42", "interop-dlq")
    assert (job["groupId"], job["groupTier"]) == ("tenant-1", "gold")
    start_after = datetime.fromisoformat(job["startAfter"])
    assert start_after == datetime.fromisoformat(options["startAfter"])
    assert datetime.fromisoformat(job["keepUntil"]) - start_after == timedelta(seconds=7200)
    assert job["outcome"] == "completed"


def test_a_batch_reaches_node_workers_in_full(enqueue, node, module_db) -> None:
    jobs = [{"name": f"interop-batch-{'ab'[i % 2]}", "data": {"i": i}} for i in range(6)]
    response = enqueue.post({"jobs": jobs}, headers=ENQUEUE_AUTH)
    assert response.status_code == 201
    ids = response.json()["ids"]
    got = received(node, "interop-batch-a", 3) + received(node, "interop-batch-b", 3)
    assert sorted((job["id"], job["data"]["i"]) for job in got) == sorted(zip(ids, range(6), strict=True))


def test_a_webhook_delivery_reaches_node_workers_once(webhook, node, module_db) -> None:
    event = {
        "type": "INSERT",
        "table": "documents",
        "schema": "public",
        "record": {"id": 7, "project_id": 1, "storage_path": "x/7.pdf", "status": "new"},
        "old_record": None,
    }
    first = webhook.post(event, headers=WEBHOOK_AUTH)
    assert first.status_code == 202, first.text
    with unchanged(module_db):
        again = webhook.post(event, headers=WEBHOOK_AUTH)
    assert again.status_code == 200 and again.json()["deduplicated"] == 2

    [job] = received(node, "document-process")
    assert job["id"] == first.json()["ids"][0]
    assert job["data"] == {"documentId": 7, "path": "x/7.pdf"}
    route_options = ROUTES["routes"][0]["options"]
    assert (job["retryLimit"], job["priority"]) == (route_options["retryLimit"], route_options["priority"])
    [audit] = received(node, "audit")
    assert audit["data"] == event
