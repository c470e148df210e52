"""No Supabase event is lost: the outbox makes every event's jobs, exactly once.

Real parts throughout: PostgreSQL with pg-boss's schema, the trigger SQL applied with
psql, the ``webhook`` function served by functions-framework, and ``drain`` called as
Cloud Scheduler calls it. Only pg_net's worker is played by the test (``Relay``), and it
behaves as pg_net does: one attempt per request, nothing kept but the outcome.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from shared.db import Database
from tests.conftest import DRAIN_TOKEN, SCHEMA, WEBHOOK_SECRET, count_jobs
from tests.intake.conftest import ROUTES, Server, create_queues
from tests.outbox.conftest import relay_to
from tests.support.supabase import queued_requests

Drain = Callable[..., dict[str, Any]]


def insert_documents(db: Database, count: int, start: int = 0) -> list[int]:
    """``count`` committed inserts, one transaction each, as an app makes them."""
    return [
        db.run(
            "INSERT INTO documents (project_id, storage_path) VALUES (:n, :path) RETURNING id",
            {"n": n, "path": f"p/{n}.pdf"},
        )[0]["id"]
        for n in range(start, start + count)
    ]


def jobs(db: Database) -> dict[str, list[dict[str, Any]]]:
    rows = db.run(
        f"SELECT id::text, name, data, priority, retry_limit, created_on FROM {SCHEMA}.job"
        " WHERE name IN ('document-process', 'audit') ORDER BY name, id"
    )
    by_queue: dict[str, list[dict[str, Any]]] = {"document-process": [], "audit": []}
    for row in rows:
        by_queue[row["name"]].append(row)
    return by_queue


def assert_one_job_per_route_and_document(db: Database, ids: list[int]) -> None:
    made = jobs(db)
    assert sorted(job["data"]["documentId"] for job in made["document-process"]) == sorted(ids)
    assert sorted(job["data"]["record"]["id"] for job in made["audit"]) == sorted(ids)
    # The route's data mapping and options, whichever path made the job.
    assert {(job["priority"], job["retry_limit"]) for job in made["document-process"]} == {(3, 7)}
    assert all(job["data"]["path"].startswith("p/") for job in made["document-process"])


def outbox_rows(db: Database) -> list[dict[str, Any]]:
    return db.run("SELECT id, event, attempts, held_until, last_error FROM manda_processing.outbox ORDER BY id")


def outbox_counts(answer: dict[str, Any]) -> dict[str, Any]:
    keys = ("events", "recovered", "delivered", "ignored", "held", "pruned", "more")
    return {key: answer["outbox"][key] for key in keys}


def test_with_the_function_down_every_event_becomes_exactly_one_job(
    supabase: Database, down_url: str, drain: Drain
) -> None:
    ids = insert_documents(supabase, 100)
    outcomes = relay_to(supabase, down_url).send_queued()
    assert len(outcomes) == 100
    assert all(o["status_code"] is None and o["error_msg"] for o in outcomes), "every delivery failed"
    assert queued_requests(supabase) == [], "and pg_net forgot them"
    assert count_jobs(supabase) == 0

    answer = drain()

    assert outbox_counts(answer) == {
        "events": 100,
        "recovered": 100,
        "delivered": 0,
        "ignored": 0,
        "held": 0,
        "pruned": 100,
        "more": False,
    }
    assert_one_job_per_route_and_document(supabase, ids)
    assert outbox_rows(supabase) == []
    again = drain()
    assert again["outbox"]["events"] == 0
    assert count_jobs(supabase) == 200


def test_with_the_function_up_no_event_is_doubled(supabase: Database, webhook_server: Server, drain: Drain) -> None:
    ids = insert_documents(supabase, 100)
    outcomes = relay_to(supabase, webhook_server.url).send_queued()
    assert [o["status_code"] for o in outcomes] == [202] * 100, outcomes[:1]
    delivered = jobs(supabase)
    assert_one_job_per_route_and_document(supabase, ids)

    answer = drain()

    assert outbox_counts(answer) == {
        "events": 100,
        "recovered": 0,
        "delivered": 100,
        "ignored": 0,
        "held": 0,
        "pruned": 100,
        "more": False,
    }
    assert jobs(supabase) == delivered, "the webhook's jobs, untouched, and no others"
    assert outbox_rows(supabase) == []


def test_a_flapping_function_and_late_deliveries_still_make_each_job_once(
    supabase: Database, webhook_server: Server, down_url: str, drain: Drain
) -> None:
    up = insert_documents(supabase, 20)
    relay_to(supabase, webhook_server.url).send_queued()
    down = insert_documents(supabase, 20, start=20)
    relay_to(supabase, down_url).send_queued()
    late = insert_documents(supabase, 10, start=40)  # still in pg_net's queue: a slow cold start

    answer = drain()
    assert (answer["outbox"]["recovered"], answer["outbox"]["delivered"]) == (30, 20)

    outcomes = relay_to(supabase, webhook_server.url).send_queued()
    assert len(outcomes) == 10
    for outcome in outcomes:
        # The webhook derives the ids the outbox already used: a duplicate, not a new job.
        assert outcome["status_code"] == 200 and json.loads(outcome["content"])["deduplicated"] == 2
    assert_one_job_per_route_and_document(supabase, up + down + late)


def test_a_reconciled_event_delivered_later_is_a_duplicate_to_the_webhook(
    supabase: Database, webhook_server: Server, drain: Drain
) -> None:
    insert_documents(supabase, 3)
    events = [row["event"] for row in outbox_rows(supabase)]
    assert drain()["outbox"]["recovered"] == 3
    for event in events:
        response = webhook_server.post(event, headers={"Authorization": f"Bearer {WEBHOOK_SECRET}"})
        assert response.status_code == 200 and response.json() == {
            "ids": [None, None],
            "routes": ["document-uploaded", "document-audit"],
            "deduplicated": 2,
        }
    assert count_jobs(supabase) == 6


def test_events_wait_out_the_grace_period(supabase: Database, down_url: str, drain: Drain) -> None:
    insert_documents(supabase, 5)
    relay_to(supabase, down_url).send_queued()
    assert drain(OUTBOX_GRACE_SECONDS="3600")["outbox"]["events"] == 0
    assert len(outbox_rows(supabase)) == 5 and count_jobs(supabase) == 0
    assert drain()["outbox"]["recovered"] == 5


def test_batches_are_bounded_and_the_rest_waits_for_the_next_call(supabase: Database, drain: Drain) -> None:
    insert_documents(supabase, 25)
    first = drain(OUTBOX_BATCH_SIZE="10", OUTBOX_MAX_BATCHES="2")
    assert (first["outbox"]["events"], first["outbox"]["pruned"], first["outbox"]["more"]) == (20, 20, True)
    assert len(outbox_rows(supabase)) == 5
    second = drain(OUTBOX_BATCH_SIZE="10", OUTBOX_MAX_BATCHES="2")
    assert (second["outbox"]["events"], second["outbox"]["more"]) == (5, False)
    assert count_jobs(supabase) == 50


def test_an_unknown_queue_holds_its_events_without_losing_or_blocking_them(supabase: Database, drain: Drain) -> None:
    routes = json.loads(json.dumps(ROUTES))
    routes["routes"][2]["queue"] = "audit-later"  # document-audit now feeds a queue nobody created
    env = {"WEBHOOK_ROUTES": json.dumps(routes)}
    insert_documents(supabase, 3)
    supabase.run("UPDATE documents SET storage_path = 'moved' WHERE id = 1")  # feeds audit only

    answer = drain(**env)

    assert outbox_counts(answer) | {"errors": answer["outbox"]["errors"]} == {
        "events": 4,
        "recovered": 0,
        "delivered": 0,
        "ignored": 0,
        "held": 4,
        "pruned": 0,
        "more": False,
        "errors": [f"{row['id']}: queue 'audit-later' does not exist" for row in outbox_rows(supabase)],
    }
    assert count_jobs(supabase) == 0, "an event's jobs are made together or not at all"
    rows = outbox_rows(supabase)
    assert [row["attempts"] for row in rows] == [1, 1, 1, 1]
    assert all("audit-later" in row["last_error"] for row in rows)
    assert drain(**env)["outbox"]["events"] == 0, "held back after a failed try"

    create_queues(supabase, "audit-later")
    supabase.run("UPDATE manda_processing.outbox SET held_until = clock_timestamp()")  # time passes
    answer = drain(**env)
    assert (answer["outbox"]["recovered"], answer["outbox"]["pruned"]) == (4, 4)
    assert count_jobs(supabase) == 7  # 3 uploads + 4 audits


def test_with_create_missing_queues_the_queue_is_made(supabase: Database, drain: Drain) -> None:
    routes = json.loads(json.dumps(ROUTES))
    routes["routes"][2]["queue"] = "audit-new"
    insert_documents(supabase, 2)
    answer = drain(WEBHOOK_ROUTES=json.dumps(routes), CREATE_MISSING_QUEUES="true")
    assert (answer["outbox"]["recovered"], answer["outbox"]["held"]) == (2, 0)
    assert supabase.run(f"SELECT count(*) AS n FROM {SCHEMA}.job WHERE name = 'audit-new'")[0]["n"] == 2


def test_an_event_the_routes_refuse_is_held_and_the_others_go_on(supabase: Database, drain: Drain) -> None:
    supabase.run(
        "INSERT INTO manda_processing.outbox (event) VALUES (CAST(:event AS jsonb))",
        {"event": json.dumps({"type": "INSERT", "table": "documents", "schema": "public"})},
    )
    ids = insert_documents(supabase, 2)
    answer = drain()
    assert (answer["outbox"]["recovered"], answer["outbox"]["held"]) == (2, 1)
    (held,) = outbox_rows(supabase)
    assert "record" in held["last_error"] and held["attempts"] == 1
    assert_one_job_per_route_and_document(supabase, ids)


def test_events_no_route_wants_are_pruned(supabase: Database, drain: Drain) -> None:
    only_uploads = {"routes": [ROUTES["routes"][0]]}
    insert_documents(supabase, 1)
    supabase.run("UPDATE documents SET status = 'ready'")
    supabase.run("DELETE FROM documents")
    answer = drain(WEBHOOK_ROUTES=json.dumps(only_uploads))
    assert (answer["outbox"]["recovered"], answer["outbox"]["ignored"], answer["outbox"]["pruned"]) == (1, 2, 3)
    assert outbox_rows(supabase) == []


def test_without_the_outbox_table_drain_says_so_and_drains(drain: Drain) -> None:
    answer = drain()
    assert answer["outbox"]["installed"] is False
    assert answer["stopped"] == "empty"


def test_without_webhook_routes_there_is_no_outbox_pass(client_for: Callable[..., Any]) -> None:
    client = client_for("drain")
    response = client.post("/", json={"budgetSeconds": 0}, headers={"Authorization": f"Bearer {DRAIN_TOKEN}"})
    assert response.status_code == 200 and "outbox" not in response.get_json()
