"""``ready`` says whether the database answers and pg-boss's schema is one we support."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.conftest import SCHEMA


def test_ready_against_a_migrated_database(client_for) -> None:
    response = client_for("ready").get("/")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ready"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["pgboss_schema"] == {
        "ok": True,
        "schema": SCHEMA,
        "version": 46,
        "pgboss_releases": "12.38.0",
        "supported": "21..46 (pg-boss 10.0.0..12.38.0)",
    }


def test_closed_port_is_not_ready(client_for) -> None:
    response = client_for("ready", url="postgresql://postgres@127.0.0.1:1/postgres").get("/")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "not_ready"
    assert body["checks"]["database"]["ok"] is False
    assert "unreachable" in body["checks"]["database"]["reason"]
    assert response.headers["Retry-After"]


def test_database_without_pgboss_is_not_ready(client_for, empty_database_url) -> None:
    response = client_for("ready", url=empty_database_url).get("/")
    assert response.status_code == 503
    checks = response.get_json()["checks"]
    assert checks["database"]["ok"] is True
    assert checks["pgboss_schema"]["ok"] is False
    assert "missing" in checks["pgboss_schema"]["reason"]


@pytest.mark.parametrize("version", [20, 47])
def test_unsupported_schema_version_is_not_ready(client_for, db, version: int) -> None:
    db.run(f"UPDATE {SCHEMA}.version SET version = {version}")
    response = client_for("ready").get("/")
    assert response.status_code == 503
    reason = response.get_json()["checks"]["pgboss_schema"]["reason"]
    assert reason == (
        f"pg-boss schema version {version} (pg-boss unknown) is unsupported;"
        " supported range is 21..46 (pg-boss 10.0.0..12.38.0)"
    )


def test_black_hole_host_answers_within_three_seconds(client_for) -> None:
    # A listener that accepts TCP connections and never says a word stands in for a
    # host that swallows packets: the client waits on the handshake forever.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(silent.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        port = silent.getsockname()[1]
        client = client_for("ready", url=f"postgresql://postgres@127.0.0.1:{port}/postgres")
        started = time.monotonic()
        response = client.get("/")
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        silent.close()
    assert response.status_code == 503
    assert response.get_json()["checks"]["database"]["ok"] is False
    assert elapsed < 3.5


def test_other_methods_are_refused(client_for) -> None:
    response = client_for("ready").post("/")
    assert response.status_code == 405
