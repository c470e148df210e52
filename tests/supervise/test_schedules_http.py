"""The schedules function: pg-boss schedules over HTTP, for enqueue's callers.

What it writes is pg-boss's own row: Node lists it and its timekeeper fires it; what
Node's ``boss.schedule()`` writes is listed here. Every refusal is a 4xx naming the
field, and writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient

from shared.db import Database
from tests.conftest import API_KEY, DRAIN_TOKEN
from tests.supervise.conftest import node_timekeeper, queue_jobs, wait_for_jobs
from tests.support.node_boss import NodeBoss

pytestmark = pytest.mark.since(43, "12.35's timekeeper")

KEY = {"X-API-Key": API_KEY}


@pytest.fixture
def client(client_for: Callable[..., FlaskClient]) -> FlaskClient:
    return client_for("schedules")


def _post(client: FlaskClient, body: Any) -> Any:
    return client.post("/", json=body, headers=KEY)


def test_only_enqueues_callers_get_in(client: FlaskClient) -> None:
    assert client.get("/").status_code == 401
    assert client.get("/", headers={"Authorization": f"Bearer {DRAIN_TOKEN}"}).status_code == 401
    assert client.get("/", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200
    answer = client.put("/", json={}, headers=KEY)
    assert answer.status_code == 405 and answer.headers["Allow"] == "GET, POST, DELETE"


def test_a_schedule_made_here_fires_from_nodes_timekeeper(
    client: FlaskClient, database_url: str, node_boss: NodeBoss, db: Database
) -> None:
    node_boss.call("createQueue", "reports", {})
    answer = _post(
        client,
        {
            "name": "reports",
            "cron": "* * * * *",
            "data": {"from": "http"},
            "options": {"priority": 3, "retryLimit": 1},
            "key": "k",
            "tz": "Europe/Paris",
        },
    )
    assert answer.status_code == 200, answer.get_json()
    stored = answer.get_json()
    assert {k: stored[k] for k in ("name", "key", "kind", "cron", "timezone", "data", "lastJobId")} == {
        "name": "reports",
        "key": "k",
        "kind": "cron",
        "cron": "* * * * *",
        "timezone": "Europe/Paris",
        "data": {"from": "http"},
        "lastJobId": None,
    }
    with node_timekeeper(database_url) as node:
        [theirs] = node.call("getSchedules", "reports")
        assert (theirs["key"], theirs["timezone"], theirs["cron"]) == ("k", "Europe/Paris", "* * * * *")
        wait_for_jobs(db, "reports")
    [job] = queue_jobs(db, "reports")
    assert job["data"] == {"from": "http"}
    sent = db.run("SELECT priority, retry_limit FROM pgboss.job WHERE name = 'reports'")
    assert sent == [{"priority": 3, "retry_limit": 1}]
    [listed] = client.get("/?name=reports", headers=KEY).get_json()["schedules"]
    assert listed["lastJobId"] == job["id"]


def test_nodes_schedules_are_listed_replaced_and_removed(client: FlaskClient, node_boss: NodeBoss) -> None:
    node_boss.call("createQueue", "a", {})
    node_boss.call("createQueue", "b", {})
    node_boss.call("schedule", "a", "0 9 * * 1-5", {"n": 1}, {"tz": "America/New_York"})
    node_boss.call("schedule", "b", "FREQ=HOURLY;BYMINUTE=5", None, {"key": "hourly"})

    listed = client.get("/", headers=KEY).get_json()["schedules"]
    assert [(s["name"], s["key"], s["kind"], s["timezone"], s["data"]) for s in listed] == [
        ("a", "", "cron", "America/New_York", {"n": 1}),
        ("b", "hourly", "rrule", "UTC", None),
    ]
    assert [s["name"] for s in client.get("/?name=b", headers=KEY).get_json()["schedules"]] == ["b"]

    replaced = _post(client, {"name": "a", "cron": "30 9 * * 1-5", "data": {"n": 2}, "tz": "America/New_York"})
    assert replaced.status_code == 200
    [theirs] = node_boss.call("getSchedules", "a")
    assert (theirs["cron"], theirs["data"]) == ("30 9 * * 1-5", {"n": 2})

    removed = client.delete("/?name=b&key=hourly", headers=KEY)
    assert removed.status_code == 200 and removed.get_json() == {"removed": {"name": "b", "key": "hourly"}}
    assert node_boss.call("getSchedules", "b") == []
    again = client.delete("/?name=b&key=hourly", headers=KEY)
    assert again.status_code == 404 and again.get_json()["error"] == "not_found"


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"name": "q", "cron": "61 * * * *"}, ["cron"]),
        ({"name": "q", "cron": "DTSTART:20200101T000000\nRRULE:FREQ=DAILY;COUNT=2"}, ["cron"]),
        ({"name": "q", "cron": "* * * * *", "tz": "Mars/Olympus"}, ["tz"]),
        ({"name": "q", "cron": "* * * * *", "missed": "twice"}, ["missed"]),
        ({"name": "q", "cron": "* * * * *", "options": {"retryLimit": -1}}, ["options", "retryLimit"]),
        ({"name": "q", "cron": "* * * * *", "every": "minute"}, ["every"]),
        ({"name": "q"}, ["cron"]),
    ],
)
def test_bad_schedules_are_refused_by_field(
    client: FlaskClient, node_boss: NodeBoss, body: dict[str, Any], loc: list[str]
) -> None:
    node_boss.call("createQueue", "q", {})
    answer = _post(client, body)
    assert answer.status_code == 422, answer.get_json()
    errors = answer.get_json()["errors"]
    assert [error["loc"] for error in errors] == [loc]
    assert node_boss.call("getSchedules") == []


@pytest.mark.parametrize(
    "field, value",
    [
        ("cron", "* * * * * " + "7" * 5_000),
        ("cron", "1 2 3 4 " + "x" * 5_000),
        ("cron", "RRULE:FREQ=DAILY;" + "X" * 5_000 + "=1"),
        ("cron", "RRULE:FREQ=DAILY;UNTIL=" + "9" * 5_000),
        ("cron", "Y" * 5_000 + ":1\nRRULE:FREQ=DAILY"),
        ("tz", "Mars/" + "z" * 5_000),
    ],
)
def test_refusals_quote_only_the_start_of_a_long_value(
    client: FlaskClient, node_boss: NodeBoss, field: str, value: str
) -> None:
    node_boss.call("createQueue", "q", {})
    answer = _post(client, {"name": "q", "cron": "* * * * *", field: value})
    assert answer.status_code == 422, answer.get_json()
    assert len(answer.data) < 1_000, answer.data[:300]
    assert [error["loc"] for error in answer.get_json()["errors"]] == [[field]]


def test_a_schedule_for_a_missing_queue_is_not_found(client: FlaskClient, node_boss: NodeBoss) -> None:
    answer = _post(client, {"name": "nowhere", "cron": "* * * * *"})
    assert answer.status_code == 404 and "nowhere" in answer.get_json()["message"]
    assert node_boss.call("getSchedules") == []


def test_bad_queries_are_refused(client: FlaskClient) -> None:
    unknown = client.get("/?queue=x", headers=KEY)
    assert unknown.status_code == 422 and unknown.get_json()["errors"][0]["loc"] == ["query", "queue"]
    twice = client.get("/?name=a&name=b", headers=KEY)
    assert twice.status_code == 422 and twice.get_json()["errors"][0]["loc"] == ["query", "name"]
    nameless = client.delete("/?key=k", headers=KEY)
    assert nameless.status_code == 422 and nameless.get_json()["errors"][0]["loc"] == ["query", "name"]


@pytest.mark.since(46, "schema 46 to lower the version of")
def test_a_schema_schedules_were_not_proven_on_is_refused(client: FlaskClient, db: Database) -> None:
    db.run("UPDATE pgboss.version SET version = 42")
    for answer in (
        client.get("/", headers=KEY),
        _post(client, {"name": "q", "cron": "* * * * *"}),
        client.delete("/?name=q", headers=KEY),
    ):
        assert answer.status_code == 422
        assert answer.get_json()["error"] == "schedules_not_supported"
        assert "schema 42" in answer.get_json()["message"]
