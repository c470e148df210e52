"""Fixtures for drain: the HTTP function, the loop on its own, and pg-boss side helpers."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from shared.db import Database
from shared.drain.limits import Limits
from shared.drain.loop import Drainer
from shared.handlers import Registry
from shared.pgboss.client import PgBoss
from tests.conftest import DRAIN_TOKEN, SCHEMA

AUTH = {"Authorization": f"Bearer {DRAIN_TOKEN}"}


class DrainClient:
    """The drain function loaded through functions-framework, called like Cloud Scheduler."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def post(self, body: Any = None, *, headers: dict[str, str] | None = None) -> TestResponse:
        headers = AUTH if headers is None else headers
        if body is None:
            return self.client.post("/", headers=headers)
        return self.client.post("/", json=body, headers=headers)


@pytest.fixture
def drain_client(client_for: Callable[..., FlaskClient]) -> Callable[..., DrainClient]:
    """``drain_client(**env)``: a fresh instance of drain with these settings."""

    def make(**env: str) -> DrainClient:
        return DrainClient(client_for("drain", **env))

    return make


def limits(**overrides: Any) -> Limits:
    """Small bounds for the loop on its own: budget 0 (drain what is due) unless told."""
    values: dict[str, Any] = {
        "budget_seconds": 0,
        "ceiling_seconds": 10,
        "max_jobs": 1000,
        "batch_size": 10,
        "concurrency": 4,
        "stop_fetching_seconds": 0.5,
        "poll_seconds": 0.05,
        "listen_poll_seconds": 0.5,
        "settle_seconds": 1.0,
    }
    values.update(overrides)
    return Limits(**values)


@pytest.fixture
def databases(database_url: str) -> Iterator[Callable[[], Database]]:
    """``open()``: another connection to the test's database, closed afterwards."""
    opened: list[Database] = []

    def open_database() -> Database:
        database = Database(database_url)
        opened.append(database)
        return database

    yield open_database
    for database in opened:
        database.close()


@pytest.fixture
def run_drain(databases: Callable[[], Database]) -> Callable[..., Any]:
    """``run_drain(registry, names=None, listen=False, **limits)``: one drain call, on a
    connection of its own (as a separate instance would have)."""

    def run(registry: Registry, names: list[str] | None = None, *, listen: bool = False, **bounds: Any):
        boss = PgBoss(databases(), SCHEMA)
        drainer = Drainer(boss, registry, limits(**bounds), listen=databases if listen else None)
        return drainer.run(names or list(registry.names()))

    return run


def job_row(db: Database, queue: str, job_id: str) -> dict[str, Any]:
    rows = db.run(f"SELECT * FROM {SCHEMA}.job WHERE name = :name AND id = :id::uuid", {"name": queue, "id": job_id})
    assert rows, f"no job {job_id} in {queue}"
    return rows[0]


def make_due(db: Database, queue: str) -> None:
    """Move every retry of ``queue`` to now, instead of waiting out its backoff."""
    db.run(f"UPDATE {SCHEMA}.job SET start_after = now() WHERE name = :name AND state = 'retry'", {"name": queue})


class Proxy:
    """A TCP proxy to PostgreSQL that a test can cut, as a network outage or restart would."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._accepting = threading.Event()
        self._accepting.set()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._accepting.is_set():
                client.close()
                continue
            try:
                server = socket.create_connection(self._target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, server))
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def cut(self, *, refuse: bool) -> None:
        """Drop every connection; with ``refuse``, refuse new ones until ``restore``."""
        if refuse:
            self._accepting.clear()
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for end in pair:
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()

    def restore(self) -> None:
        self._accepting.set()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.cut(refuse=True)


@pytest.fixture
def proxy(database_url: str) -> Iterator[Proxy]:
    parts = urlsplit(database_url)
    proxy = Proxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    yield proxy
    proxy.close()


def via(proxy: Proxy, database_url: str) -> str:
    parts = urlsplit(database_url)
    return urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
