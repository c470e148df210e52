"""deploy/supabase/webhook_triggers.sql, applied with psql to a real PostgreSQL.

Supabase's pieces are stood in for, with their real names and signatures
(``tests.support.supabase``): pg_net's ``net.http_post`` queues each request in
``net.http_request_queue``, where these tests read it, and ``vault.decrypted_secrets`` is
a view over a plain table. Each test gets its own scratch database (created and dropped
by the ``empty_database_url`` fixture). What becomes of the requests and of the outbox
is tested in ``tests/outbox``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pg8000.native
import pytest
from flask.testing import FlaskClient

from shared.db import Database
from shared.intake import DatabaseEvent
from tests.conftest import WEBHOOK_SECRET, count_jobs, require_tool
from tests.deploy.plan import ROOT
from tests.support.supabase import STAND_INS, apply_triggers

EXAMPLE_ROUTES = json.loads((ROOT / "webhook_routes.example.json").read_text(encoding="utf-8"))
URL = "https://webhook-100000000001.europe-west1.run.app"
SECRET = "vault-held-secret-7d1e8b6c3a5f0d"
VAULT_NAME = "processing_webhook_secret"


@pytest.fixture(autouse=True)
def _psql_installed() -> None:
    require_tool(shutil.which("psql") is not None, "psql")


class Scratch:
    def __init__(self, url: str, role: str) -> None:
        self.url = url
        self.role = role
        self.db = Database(url)._connect()

    def run(self, sql: str, **params: Any) -> list[list[Any]]:
        return self.db.run(sql, **params)

    def apply(self, routes: Any = EXAMPLE_ROUTES, **variables: str | None) -> subprocess.CompletedProcess[str]:
        """psql -f webhook_triggers.sql; a variable given as None is left unset."""
        return apply_triggers(self.url, {"webhook_url": URL, "routes": routes, **variables})

    def apply_ok(self, routes: Any = EXAMPLE_ROUTES, **variables: str) -> str:
        result = self.apply(routes, **variables)
        assert result.returncode == 0, result.stderr
        return result.stderr

    def calls(self) -> list[dict[str, Any]]:
        rows = self.run(
            "SELECT method, url, convert_from(body, 'UTF8')::jsonb, headers, timeout_milliseconds"
            " FROM net.http_request_queue ORDER BY id"
        )
        return [dict(zip(["method", "url", "body", "headers", "timeout_ms"], row, strict=True)) for row in rows]

    def outbox(self) -> list[Any]:
        return [event for (event,) in self.run("SELECT event FROM manda_processing.outbox ORDER BY id")]

    def triggers(self) -> dict[str, str]:
        rows = self.run(
            "SELECT tgrelid::regclass::text, pg_get_triggerdef(oid) FROM pg_trigger"
            " WHERE tgname = 'manda_processing_webhook' ORDER BY 1"
        )
        return {table: definition for table, definition in rows}


@pytest.fixture
def scratch(admin: pg8000.native.Connection, empty_database_url: str) -> Iterator[Scratch]:
    role = f"mp_test_writer_{os.getpid()}"
    admin.run(f'DROP ROLE IF EXISTS "{role}"')
    admin.run(f'CREATE ROLE "{role}" NOLOGIN')
    database = Scratch(empty_database_url, role)
    database.run(STAND_INS)
    database.run("INSERT INTO vault.secrets VALUES (:name, :secret)", name=VAULT_NAME, secret=SECRET)
    # A role like Supabase's `authenticated`: may write the table, may not read Vault.
    database.run(f'GRANT INSERT, UPDATE, DELETE, SELECT ON public.documents TO "{role}"')
    database.run(f'GRANT USAGE ON SEQUENCE public.documents_id_seq TO "{role}"')
    yield database
    database.run(f'DROP OWNED BY "{role}"')
    database.db.close()
    admin.run(f'DROP ROLE IF EXISTS "{role}"')


def test_each_change_posts_supabases_payload_with_the_secret(scratch: Scratch) -> None:
    scratch.apply_ok()
    scratch.run("INSERT INTO documents (project_id, storage_path) VALUES (7, 'p/7/a.pdf')")
    scratch.run("UPDATE documents SET status = 'ready'")
    scratch.run("DELETE FROM documents")
    calls = scratch.calls()
    assert [call["body"]["type"] for call in calls] == ["INSERT", "UPDATE", "DELETE"]
    for call in calls:
        assert call["url"] == URL
        assert call["timeout_ms"] == 5000
        assert call["headers"] == {"Content-Type": "application/json", "Authorization": f"Bearer {SECRET}"}
        assert call["method"] == "POST"
        event = DatabaseEvent.model_validate(call["body"])  # what the webhook function parses
        assert (event.schema_name, event.table) == ("public", "documents")
        assert event.row["storage_path"] == "p/7/a.pdf"
    assert calls[0]["body"]["old_record"] is None
    assert calls[1]["body"]["old_record"]["status"] == "new" and calls[1]["body"]["record"]["status"] == "ready"
    assert calls[2]["body"]["record"] is None
    assert scratch.outbox() == [call["body"] for call in calls], "each change is also kept, with the same body"


def test_the_outbox_row_commits_and_rolls_back_with_the_change(scratch: Scratch) -> None:
    scratch.apply_ok()
    scratch.run("BEGIN")
    scratch.run("INSERT INTO documents (project_id) VALUES (8)")
    scratch.run("ROLLBACK")
    assert scratch.outbox() == [] and scratch.calls() == []
    scratch.run("BEGIN")
    scratch.run("INSERT INTO documents (project_id) VALUES (9)")
    scratch.run("COMMIT")
    assert [event["record"]["project_id"] for event in scratch.outbox()] == [9]


def test_roles_that_change_rows_cannot_read_or_write_the_outbox(scratch: Scratch) -> None:
    scratch.apply_ok()
    scratch.run(f'SET ROLE "{scratch.role}"')
    try:
        scratch.run("INSERT INTO documents (project_id) VALUES (10)")  # the trigger writes it for them
        for statement in ("SELECT * FROM manda_processing.outbox", "DELETE FROM manda_processing.outbox"):
            with pytest.raises(pg8000.native.DatabaseError, match="permission denied"):
                scratch.run(statement)
    finally:
        scratch.run("RESET ROLE")
    assert len(scratch.outbox()) == 1


def test_timeout_and_vault_name_are_variables(scratch: Scratch) -> None:
    scratch.run("INSERT INTO vault.secrets VALUES ('other_name', 'other-secret-value-123')")
    scratch.apply_ok(timeout_ms="2500", secret_name="other_name")
    scratch.run("INSERT INTO documents (project_id) VALUES (1)")
    (call,) = scratch.calls()
    assert call["timeout_ms"] == 2500
    assert call["headers"]["Authorization"] == "Bearer other-secret-value-123"


def test_triggers_watch_only_what_the_routes_use(scratch: Scratch) -> None:
    routes = {
        "routes": [
            {"name": "a", "table": "documents", "events": ["INSERT"], "queue": "q"},
            {"name": "b", "schema": "public", "table": "documents", "events": ["INSERT", "DELETE"], "queue": "q"},
            {"name": "c", "table": "comments", "events": ["UPDATE"], "queue": "q"},
        ]
    }
    scratch.apply_ok(routes)
    triggers = scratch.triggers()
    assert set(triggers) == {"comments", "documents"}
    assert "AFTER INSERT OR DELETE ON public.documents FOR EACH ROW" in triggers["documents"]
    assert "AFTER UPDATE ON public.comments FOR EACH ROW" in triggers["comments"]
    scratch.run("INSERT INTO documents (project_id) VALUES (1)")
    scratch.run("UPDATE documents SET status = 'x'")  # no route wants it: not sent
    scratch.run("INSERT INTO comments (body) VALUES ('hi')")  # likewise
    assert [c["body"]["type"] for c in scratch.calls()] == ["INSERT"]


def test_changes_by_a_role_without_vault_access_are_sent(scratch: Scratch) -> None:
    scratch.apply_ok()
    scratch.run(f'SET ROLE "{scratch.role}"')
    with pytest.raises(pg8000.native.DatabaseError):
        scratch.run("SELECT * FROM vault.decrypted_secrets")
    scratch.run("RESET ROLE")
    scratch.run(f'SET ROLE "{scratch.role}"')
    scratch.run("INSERT INTO documents (project_id) VALUES (3)")
    scratch.run("RESET ROLE")
    (call,) = scratch.calls()
    assert call["headers"]["Authorization"] == f"Bearer {SECRET}"


def test_the_secret_is_neither_in_the_file_nor_in_the_catalog(scratch: Scratch) -> None:
    scratch.apply_ok()
    catalog = scratch.run(
        "SELECT coalesce(string_agg(encode(tgargs, 'escape'), ' '), '') FROM pg_trigger"
        " UNION ALL SELECT prosrc FROM pg_proc WHERE proname = 'post_row_change'"
    )
    assert catalog and all(SECRET not in text for (text,) in catalog)
    assert URL in catalog[0][0]


def test_rotating_the_vault_secret_needs_no_reapply(scratch: Scratch) -> None:
    scratch.apply_ok()
    scratch.run("UPDATE vault.secrets SET secret = 'rotated-secret-0a9b8c7d' WHERE name = :n", n=VAULT_NAME)
    scratch.run("INSERT INTO documents (project_id) VALUES (4)")
    (call,) = scratch.calls()
    assert call["headers"]["Authorization"] == "Bearer rotated-secret-0a9b8c7d"


def test_a_missing_secret_at_trigger_time_never_blocks_the_write(scratch: Scratch) -> None:
    scratch.apply_ok()
    scratch.run("DELETE FROM vault.secrets")
    scratch.run("INSERT INTO documents (project_id) VALUES (5)")
    assert scratch.run("SELECT count(*) FROM documents") == [[1]]
    assert scratch.calls() == []
    assert [event["record"]["project_id"] for event in scratch.outbox()] == [5], "kept for the scheduled call"


def test_reapplying_converges(scratch: Scratch) -> None:
    scratch.apply_ok()
    scratch.apply_ok()
    assert list(scratch.triggers()) == ["documents"]
    scratch.run("INSERT INTO documents (project_id) VALUES (6)")
    assert len(scratch.calls()) == 1, "one trigger, one request"
    assert len(scratch.outbox()) == 1, "re-applying keeps the outbox and its rows"
    scratch.apply_ok()
    assert len(scratch.outbox()) == 1
    # A table no route watches any more loses its trigger.
    scratch.apply_ok({"routes": [{"name": "c", "table": "comments", "events": ["INSERT"], "queue": "q"}]})
    assert list(scratch.triggers()) == ["comments"]


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"webhook_url": None}, "webhook_url must be"),
        ({"webhook_url": "http://webhook.example.com"}, "webhook_url must be"),
        ({"webhook_url": "https://x', 'y"}, "webhook_url must be"),
        ({"routes": None}, "routes must be"),
        ({"routes": "{not json"}, "routes must be"),
        ({"routes": '{"routes": []}'}, "at least one route"),
        ({"routes": '{"routes": [{"table": "nope", "events": ["INSERT"]}]}'}, "does not exist"),
        ({"routes": '{"routes": [{"table": "documents", "events": ["TRUNCATE; DROP TABLE x"]}]}'}, "an event other"),
        ({"timeout_ms": "0"}, "timeout_ms must be"),
        ({"timeout_ms": "5s"}, "timeout_ms must be"),
        ({"secret_name": "nothing_there"}, "no secret named"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(scratch: Scratch, variables: dict[str, Any], message: str) -> None:
    variables = dict(variables)
    routes = variables.pop("routes", EXAMPLE_ROUTES)
    result = scratch.apply(routes, **variables)
    assert result.returncode != 0
    assert message in result.stderr
    assert scratch.triggers() == {}
    assert scratch.run("SELECT to_regnamespace('manda_processing') IS NULL") == [[True]]


def test_pg_net_must_be_there(scratch: Scratch) -> None:
    scratch.run("DROP FUNCTION net.http_post")
    result = scratch.apply()
    assert result.returncode != 0 and "enable the pg_net extension" in result.stderr


def test_the_webhook_function_accepts_what_the_trigger_sends(
    scratch: Scratch, client_for: Callable[..., FlaskClient], db: Database
) -> None:
    """End to end without the network: the recorded request, replayed to `webhook`."""
    scratch.run("UPDATE vault.secrets SET secret = :s WHERE name = :n", s=WEBHOOK_SECRET, n=VAULT_NAME)
    scratch.apply_ok()
    scratch.run("INSERT INTO documents (project_id, storage_path) VALUES (11, 'p/11/b.pdf')")
    (call,) = scratch.calls()
    cwd = Path.cwd()
    os.chdir(ROOT)  # WEBHOOK_ROUTES_FILE is relative to the deployed source's root
    try:
        client = client_for("webhook", WEBHOOK_ROUTES_FILE="webhook_routes.example.json", CREATE_MISSING_QUEUES="true")
        response = client.post("/", data=json.dumps(call["body"]), headers=call["headers"])
    finally:
        os.chdir(cwd)
    assert 200 <= response.status_code < 300, response.get_data(as_text=True)
    assert count_jobs(db) == 1
    wrong = dict(call["headers"], Authorization="Bearer not-the-secret")
    assert client.post("/", data=json.dumps(call["body"]), headers=wrong).status_code == 401
