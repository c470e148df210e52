"""A Supabase-shaped database: pg-boss, the webhook triggers, pg_net and Vault stand-ins.

Each test gets its own database with pg-boss's schema (``database_url``), Supabase's
pieces from ``tests.support.supabase``, and ``webhook_triggers.sql`` applied with psql
for the intake tests' routes table. ``webhook_server`` is the real ``webhook`` function
under functions-framework; the ``Relay`` (pg_net's worker) posts to it, or to a port
where nothing listens when the function is "down".
"""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from shared.db import Database
from tests.conftest import DRAIN_TOKEN, WEBHOOK_SECRET, function_env, require_tool
from tests.intake.conftest import ROUTE_QUEUES, ROUTES, Server, create_queues
from tests.support.supabase import STAND_INS, Relay, apply_triggers

WEBHOOK_URL = "https://webhook-100000000001.europe-west1.run.app"
DRAIN_AUTH = {"Authorization": f"Bearer {DRAIN_TOKEN}"}


@pytest.fixture
def supabase(database_url: str, db: Database) -> Database:
    """The test's database with the triggers applied and the routes' queues created."""
    require_tool(shutil.which("psql") is not None, "psql")
    db.run(STAND_INS)
    db.run(
        "INSERT INTO vault.secrets VALUES ('processing_webhook_secret', :secret)",
        {"secret": WEBHOOK_SECRET},
    )
    result = apply_triggers(database_url, {"webhook_url": WEBHOOK_URL, "routes": ROUTES})
    assert result.returncode == 0, result.stderr
    create_queues(db, *ROUTE_QUEUES)
    return db


@pytest.fixture
def webhook_server(database_url: str) -> Iterator[Server]:
    server = Server("webhook", function_env(database_url, WEBHOOK_ROUTES=json.dumps(ROUTES)))
    yield server
    server.close()


@pytest.fixture
def down_url() -> Iterator[str]:
    """A local URL that refuses connections: the function is down (or mid-deploy)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    yield f"http://127.0.0.1:{port}"


def relay_to(db: Database, target: str) -> Relay:
    return Relay(db, {WEBHOOK_URL: target.rstrip("/")})


@pytest.fixture
def drain(client_for: Callable[..., FlaskClient]) -> Callable[..., dict[str, Any]]:
    """One scheduled drain call (Cloud Scheduler's), answering its JSON; env overrides settings."""

    def call(**env: str) -> dict[str, Any]:
        settings = {"WEBHOOK_ROUTES": json.dumps(ROUTES), "OUTBOX_GRACE_SECONDS": "0", **env}
        client = client_for("drain", **settings)
        response = client.post("/", json={"budgetSeconds": 0}, headers=DRAIN_AUTH)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()

    return call
