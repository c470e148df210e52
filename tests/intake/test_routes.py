"""The webhook routes table: validation at cold start, matching, job data and job ids."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from shared.config import Settings
from shared.errors import ConfigError, InvalidRequest
from shared.intake import DatabaseEvent
from shared.webhook_routes import WebhookRoutes, routes_table
from tests.conftest import MAIN, ROOT
from tests.intake.conftest import ROUTES

EXAMPLE = ROOT / "webhook_routes.example.json"


def event(type_: str = "INSERT", record=None, old_record=None, table="documents", **extra) -> DatabaseEvent:
    payload = {"type": type_, "table": table, "schema": "public", "record": record, "old_record": old_record}
    return DatabaseEvent.model_validate({**payload, **extra})


def routes(*items: dict) -> WebhookRoutes:
    return WebhookRoutes.model_validate({"routes": list(items)})


BASE = {"name": "r", "table": "documents", "events": ["INSERT"], "queue": "q"}


def test_the_example_file_is_a_valid_routes_table() -> None:
    table = routes_table(Settings.from_environ({"WEBHOOK_ROUTES_FILE": str(EXAMPLE)}))
    assert table is not None
    assert next(r.queue for r in table.routes) == "document-process"
    matched = table.jobs_for(event(record={"id": 7, "project_id": 2, "storage_path": "a/b.pdf"}))
    assert [(r.name, j.data) for r, j in matched] == [
        ("document-uploaded", {"documentId": 7, "projectId": 2, "storagePath": "a/b.pdf"})
    ]


def test_inline_json_and_file_are_equivalent(tmp_path) -> None:
    path = tmp_path / "routes.json"
    path.write_text(json.dumps(ROUTES))
    inline = routes_table(Settings.from_environ({"WEBHOOK_ROUTES": json.dumps(ROUTES)}))
    from_file = routes_table(Settings.from_environ({"WEBHOOK_ROUTES_FILE": str(path)}))
    assert inline == from_file


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WEBHOOK_ROUTES": "{"}, "WEBHOOK_ROUTES: Value error, not valid JSON"),
        ({"WEBHOOK_ROUTES_FILE": "/no/such/file.json"}, "WEBHOOK_ROUTES_FILE: Value error, cannot read"),
        ({"WEBHOOK_ROUTES": json.dumps({"routes": [{**BASE, "queue": "bad queue"}]})}, "WEBHOOK_ROUTES.routes.0.queue"),
        (
            {"WEBHOOK_ROUTES": json.dumps({"routes": [{**BASE, "events": ["TRUNCATE"]}]})},
            "WEBHOOK_ROUTES.routes.0.events.0",
        ),
        ({"WEBHOOK_ROUTES": json.dumps({"routes": [{**BASE, "events": []}]})}, "routes.0.events"),
        ({"WEBHOOK_ROUTES": json.dumps({"routes": [{**BASE, "tabel": "x"}]})}, "routes.0.tabel"),
        (
            {"WEBHOOK_ROUTES": json.dumps({"routes": [{**BASE, "options": {"retryDelay": -1}}]})},
            "routes.0.options.retryDelay",
        ),
        (
            {"WEBHOOK_ROUTES": json.dumps({"routes": [{**BASE, "options": {"id": str(uuid.uuid4())}}]})},
            "options.id cannot be set",
        ),
        ({"WEBHOOK_ROUTES": json.dumps({"routes": [{**BASE, "data": {"x": "recrod.id"}}]})}, "data.x"),
        (
            {"WEBHOOK_ROUTES": json.dumps({"routes": [{**BASE, "when": {"changed": ["status"]}}]})},
            'events must be ["UPDATE"]',
        ),
        ({"WEBHOOK_ROUTES": json.dumps({"routes": [BASE, BASE]})}, "route names must be unique; repeated: r"),
        ({"WEBHOOK_ROUTES": json.dumps(ROUTES), "WEBHOOK_ROUTES_FILE": str(EXAMPLE)}, "not both"),
    ],
)
def test_bad_routes_are_named_at_startup(environ: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        routes_table(Settings.from_environ(environ))
    assert expected in str(caught.value)


def test_a_bad_routes_table_stops_the_function_at_cold_start() -> None:
    result = subprocess.run(
        [sys.executable, "-c", f"import functions_framework as f; f.create_app('webhook', {MAIN!r})"],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "WEBHOOK_ROUTES": json.dumps({"routes": [{**BASE, "queue": ""}]})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "invalid settings: WEBHOOK_ROUTES.routes.0.queue" in result.stderr


def test_matching_by_schema_table_and_type() -> None:
    table = routes(BASE, {**BASE, "name": "other-schema", "schema": "private"})
    assert [r.name for r, _ in table.jobs_for(event(record={"id": 1}))] == ["r"]
    assert table.jobs_for(event(record={"id": 1}, table="projects")) == []
    assert table.jobs_for(event("DELETE", old_record={"id": 1})) == []


def test_changed_and_equals_filters() -> None:
    when = {"changed": ["status"], "equals": {"status": "ready"}}
    table = routes({**BASE, "events": ["UPDATE"], "when": when})

    def hits(new, old):
        return len(table.jobs_for(event("UPDATE", new, old)))

    assert hits({"id": 1, "status": "ready"}, {"id": 1, "status": "new"}) == 1
    assert hits({"id": 1, "status": "ready"}, {"id": 1, "status": "ready", "x": 1}) == 0
    assert hits({"id": 1, "status": "failed"}, {"id": 1, "status": "new"}) == 0
    assert hits({"id": 1, "status": "ready"}, {"id": 1}) == 1


def test_equals_compares_json_values_exactly() -> None:
    table = routes({**BASE, "when": {"equals": {"flag": True, "n": 1}}})
    assert len(table.jobs_for(event(record={"flag": True, "n": 1}))) == 1
    assert len(table.jobs_for(event(record={"flag": True, "n": 1.0}))) == 1
    assert table.jobs_for(event(record={"flag": 1, "n": 1})) == []
    assert table.jobs_for(event(record={"flag": True, "n": True})) == []
    assert table.jobs_for(event(record={"n": 1})) == []


def test_equals_looks_at_the_deleted_row_for_delete() -> None:
    table = routes({**BASE, "events": ["DELETE"], "when": {"equals": {"kind": "pdf"}}})
    assert len(table.jobs_for(event("DELETE", old_record={"kind": "pdf"}))) == 1


def test_job_data_defaults_to_the_whole_event_and_can_pick_fields() -> None:
    whole = routes(BASE).jobs_for(event(record={"id": 1}, extra_field="ignored"))[0][1].data
    assert whole == {
        "type": "INSERT",
        "schema": "public",
        "table": "documents",
        "record": {"id": 1},
        "old_record": None,
    }
    picked = (
        routes(
            {
                **BASE,
                "events": ["UPDATE"],
                "data": {
                    "id": "record.id",
                    "was": "old_record.status",
                    "missing": "record.nope",
                    "op": "type",
                    "row": "record",
                    "where": "table",
                },
            }
        )
        .jobs_for(event("UPDATE", {"id": 1, "status": "b"}, {"id": 1, "status": "a"}))[0][1]
        .data
    )
    assert picked == {
        "id": 1,
        "was": "a",
        "missing": None,
        "op": "UPDATE",
        "row": {"id": 1, "status": "b"},
        "where": "documents",
    }


def test_route_options_are_sent_with_a_derived_id() -> None:
    [(_, job)] = routes({**BASE, "options": {"retryLimit": 2}}).jobs_for(event(record={"id": 1}))
    assert job.name == "q"
    assert job.options.retry_limit == 2
    assert job.options.id is not None


def test_job_id_is_the_same_for_the_same_event_and_differs_otherwise() -> None:
    table = routes(BASE, {**BASE, "name": "r2"})

    def ids(**kwargs):
        return [job.options.id for _, job in table.jobs_for(event(**kwargs))]

    first = ids(record={"id": 1, "a": [1, 2], "b": {"y": 1, "x": 2}})
    # Same rows, keys in another order: the same event.
    assert ids(record={"b": {"x": 2, "y": 1}, "a": [1, 2], "id": 1}) == first
    assert ids(record={"id": 1, "a": [1, 2], "b": {"y": 1, "x": 3}})[0] != first[0]
    assert first[0] != first[1]  # one job per route


def test_key_narrows_the_identity_to_the_row_key() -> None:
    table = routes({**BASE, "events": ["UPDATE"], "key": ["id"]})
    one = table.jobs_for(event("UPDATE", {"id": 1, "v": 2}, {"id": 1, "v": 1}))[0][1].options.id
    two = table.jobs_for(event("UPDATE", {"id": 1, "v": 3}, {"id": 1, "v": 2}))[0][1].options.id
    other = table.jobs_for(event("UPDATE", {"id": 2, "v": 3}, {"id": 2, "v": 2}))[0][1].options.id
    assert one == two != other
    with pytest.raises(InvalidRequest) as caught:
        table.jobs_for(event("UPDATE", {"v": 3}, {"v": 2}))
    assert caught.value.errors[0]["loc"] == ["record", "id"]
