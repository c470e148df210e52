"""Helpers of the intake tests: queues, a routes table, a job-table snapshot, a real server."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pg8000.native
import pytest
import requests
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from shared import intake
from shared.db import Database
from tests.conftest import MAIN, ROOT, SCHEMA, create_database, function_env, url_for

QUEUE = "intake-test"

ROUTES: dict[str, Any] = {
    "routes": [
        {
            "name": "document-uploaded",
            "table": "documents",
            "events": ["INSERT"],
            "queue": "document-process",
            "data": {"documentId": "record.id", "path": "record.storage_path"},
            "options": {"retryLimit": 7, "priority": 3},
        },
        {
            "name": "document-ready",
            "table": "documents",
            "events": ["UPDATE"],
            "queue": "document-index",
            "when": {"changed": ["status"], "equals": {"status": "ready"}},
            "key": ["id"],
        },
        {
            "name": "document-audit",
            "schema": "public",
            "table": "documents",
            "events": ["INSERT", "UPDATE", "DELETE"],
            "queue": "audit",
        },
    ]
}
ROUTE_QUEUES = ("document-process", "document-index", "audit")


def routes_env(routes: dict[str, Any] | None = None) -> dict[str, str]:
    return {"WEBHOOK_ROUTES": json.dumps(ROUTES if routes is None else routes)}


def create_queues(db: Database, *names: str) -> None:
    """Queues the way the Node app makes them: pg-boss's own create_queue function."""
    for name in names:
        db.run(
            f"SELECT {SCHEMA}.create_queue(:name, :options::jsonb)",
            {"name": name, "options": '{"policy": "standard"}'},
        )


def snapshot(db: Database) -> tuple[list[Any], list[Any]]:
    """Every job (id, queue, data) and every queue name: what a refused request must not change."""
    jobs = db.run(f"SELECT id::text, name, data::text FROM {SCHEMA}.job ORDER BY name, id")
    queues = db.run(f"SELECT name FROM {SCHEMA}.queue ORDER BY name")
    return [tuple(row.values()) for row in jobs], [row["name"] for row in queues]


@contextlib.contextmanager
def unchanged(db: Database) -> Iterator[None]:
    """Assert the block leaves the job and queue tables exactly as they were."""
    before = snapshot(db)
    yield
    assert snapshot(db) == before, "a refused request changed the job table"


def jobs_in(db: Database, queue: str) -> list[dict[str, Any]]:
    return db.run(f"SELECT * FROM {SCHEMA}.job WHERE name = :name ORDER BY created_on, id", {"name": queue})


# --- requests through functions-framework's test client ------------------------------


def post_to(
    client: FlaskClient,
    body: Any = None,
    *,
    headers: dict[str, str],
    raw: bytes | None = None,
    content_type: str = "application/json",
) -> TestResponse:
    """POST ``body`` as JSON, or ``raw`` bytes as they are, with ``headers``."""
    data = raw if raw is not None else json.dumps(body).encode()
    return client.post("/", data=data, headers=headers, content_type=content_type)


def refused_by(client: FlaskClient, db: Database, status: int, body: Any = None, **kwargs: Any) -> TestResponse:
    """``post_to`` that must answer ``status`` with an error body and leave the tables as they were."""
    with unchanged(db):
        response = post_to(client, body, **kwargs)
    assert response.status_code == status, response.get_data(as_text=True)
    intake.ErrorBody.model_validate(response.get_json())
    return response


# --- a real functions-framework server ----------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """``functions-framework --target T`` on 127.0.0.1, as Cloud Functions runs it."""

    def __init__(self, target: str, env: dict[str, str]) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = Path(os.environ.get("TMPDIR", "/tmp")) / f"intake-{target}-{self.port}.log"
        self._out = self.log.open("w")
        framework = str(Path(sys.executable).parent / "functions-framework")
        self.process = subprocess.Popen(
            [framework, "--source", MAIN, "--target", target, "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT,
            env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **env},
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        self._wait()

    def _wait(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.output()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.1)
        raise RuntimeError(f"server did not listen within {timeout}s: {self.output()}")

    def output(self) -> str:
        self._out.flush()
        return self.log.read_text()

    def post(
        self, body: Any = None, *, raw: bytes | None = None, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> requests.Response:
        headers = {"Content-Type": "application/json", **(headers or {})}
        data = raw if raw is not None else json.dumps(body).encode()
        return requests.post(self.url, data=data, headers=headers, timeout=15, **kwargs)

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._out.close()


@pytest.fixture(scope="module")
def module_database(admin: pg8000.native.Connection, template_database: str) -> Iterator[str]:
    """One database for a module's real servers, which outlive a single test."""
    name = create_database(admin, template_database)
    yield url_for(name)
    admin.run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def module_db(module_database: str) -> Iterator[Database]:
    database = Database(module_database)
    yield database
    database.close()


@pytest.fixture(scope="module")
def serve(module_database: str) -> Iterator[Callable[..., Server]]:
    """Start ``functions-framework`` for a target against the module's database."""
    servers: list[Server] = []

    def start(target: str, **overrides: str) -> Server:
        server = Server(target, function_env(module_database, **overrides))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
