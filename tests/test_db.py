"""The database connection: reuse, reconnection, timeouts and error translation."""

from __future__ import annotations

import ssl
import time

import pg8000.native
import pytest

from shared.db import ConnectionParams, Database
from shared.errors import ConfigError, DatabaseError, DatabaseUnavailable


def _backend_pid(db: Database) -> int:
    return int(db.run("SELECT pg_backend_pid() AS pid")[0]["pid"])


def _kill(admin: pg8000.native.Connection, pid: int) -> None:
    admin.run("SELECT pg_terminate_backend(:pid)", pid=pid)
    for _ in range(50):
        if not admin.run("SELECT 1 FROM pg_stat_activity WHERE pid = :pid", pid=pid):
            return
        time.sleep(0.02)


def test_rows_are_dicts_and_values_are_bound(db: Database) -> None:
    rows = db.run("SELECT :a::int + 1 AS answer, :b::text AS text", {"a": 41, "b": "x'; drop"})
    assert rows == [{"answer": 42, "text": "x'; drop"}]
    assert db.run("SELECT 1 WHERE false") == []


def test_one_connection_is_reused(db: Database) -> None:
    assert _backend_pid(db) == _backend_pid(db)


def test_safe_statement_is_retried_on_a_new_connection(db: Database, admin) -> None:
    first = _backend_pid(db)
    _kill(admin, first)
    rows = db.run("SELECT pg_backend_pid() AS pid", safe_to_retry=True)
    assert rows[0]["pid"] != first


def test_unsafe_statement_is_not_repeated_but_next_call_recovers(db: Database, admin) -> None:
    db.run("CREATE TABLE counter (n int)")
    _kill(admin, _backend_pid(db))
    with pytest.raises(DatabaseUnavailable):
        db.run("INSERT INTO counter VALUES (1)")
    db.run("INSERT INTO counter VALUES (2)")
    assert db.run("SELECT n FROM counter") == [{"n": 2}]


def test_idle_connection_is_checked_before_use(database_url: str, admin) -> None:
    db = Database(database_url, idle_check_seconds=0)
    try:
        db.run("CREATE TABLE counter (n int)")
        _kill(admin, _backend_pid(db))
        time.sleep(0.01)
        db.run("INSERT INTO counter VALUES (1)")  # not retry-safe, yet it succeeds
        assert db.run("SELECT count(*) AS n FROM counter") == [{"n": 1}]
    finally:
        db.close()


def test_statement_timeout_is_unavailable(database_url: str) -> None:
    db = Database(database_url, statement_timeout_ms=100)
    try:
        with pytest.raises(DatabaseUnavailable, match="did not answer in time"):
            db.run("SELECT pg_sleep(2)")
        assert db.run("SELECT 1 AS one") == [{"one": 1}]
    finally:
        db.close()


def test_refused_statement_carries_its_sqlstate(db: Database) -> None:
    with pytest.raises(DatabaseError) as caught:
        db.run("SELEC 1")
    assert caught.value.sqlstate == "42601"
    assert db.run("SELECT 1 AS one") == [{"one": 1}]


def test_transaction_commits_or_rolls_back(db: Database) -> None:
    db.run("CREATE TABLE t (n int)")
    with db.transaction() as tx:
        tx.run("INSERT INTO t VALUES (1)")
    with pytest.raises(RuntimeError), db.transaction() as tx:
        tx.run("INSERT INTO t VALUES (2)")
        raise RuntimeError("abort")
    with pytest.raises(DatabaseError), db.transaction() as tx:
        tx.run("INSERT INTO t VALUES (3)")
        tx.run("INSERT INTO missing VALUES (3)")
    assert db.run("SELECT n FROM t") == [{"n": 1}]


def test_closed_port_is_unavailable() -> None:
    db = Database("postgresql://postgres@127.0.0.1:1/postgres", connect_timeout=1)
    with pytest.raises(DatabaseUnavailable, match="unreachable"):
        db.run("SELECT 1")


def test_unknown_database_is_unavailable() -> None:
    db = Database("postgresql://postgres@127.0.0.1:5432/no_such_database_here")
    with pytest.raises(DatabaseUnavailable, match="refused"):
        db.run("SELECT 1")


def test_sslmode_require_refuses_a_server_without_tls(database_url: str) -> None:
    db = Database(database_url + "?sslmode=require", connect_timeout=2)
    with pytest.raises(DatabaseUnavailable):
        db.run("SELECT 1")


def test_url_parsing() -> None:
    params = ConnectionParams.from_url("postgresql://us%40er:p%3Ass@db.host:6543/app?sslmode=require")
    assert (params.user, params.password, params.host, params.port, params.database) == (
        "us@er",
        "p:ss",
        "db.host",
        6543,
        "app",
    )
    assert isinstance(params.ssl_context, ssl.SSLContext)
    assert params.ssl_context.verify_mode == ssl.CERT_NONE
    assert ConnectionParams.from_url("postgresql://u@h/d?sslmode=disable").ssl_context is False
    assert ConnectionParams.from_url("postgresql://u@h/d").ssl_context is None
    full = ConnectionParams.from_url("postgresql://u@h/d?sslmode=verify-full").ssl_context
    assert isinstance(full, ssl.SSLContext) and full.check_hostname
    with pytest.raises(ConfigError, match="sslmode"):
        ConnectionParams.from_url("postgresql://u@h/d?sslmode=sometimes")


def test_statements_are_prepared_once_per_connection(db: Database) -> None:
    db.run("CREATE TABLE t (n int)")
    for n in range(3):
        db.run("INSERT INTO t VALUES (:n)", {"n": n})
    prepared = db.run("SELECT count(*) AS n FROM pg_prepared_statements")[0]["n"]
    assert prepared == 1
    assert db.run("SELECT sum(n) AS total FROM t WHERE n >= :low", {"low": 0}) == [{"total": 3}]


def test_a_schema_change_under_a_prepared_statement_is_survived(db: Database) -> None:
    db.run("CREATE TABLE t (n int)")
    db.run("INSERT INTO t VALUES (1)")
    assert db.run("SELECT * FROM t WHERE n = :n", {"n": 1}) == [{"n": 1}]
    db.run("ALTER TABLE t ADD COLUMN label text DEFAULT 'x'")
    assert db.run("SELECT * FROM t WHERE n = :n", {"n": 1}) == [{"n": 1, "label": "x"}]
    db.run("ALTER TABLE t ADD COLUMN flag bool DEFAULT true")
    with pytest.raises(DatabaseError), db.transaction() as tx:
        tx.run("SELECT * FROM t WHERE n = :n", {"n": 1})
    assert db.run("SELECT * FROM t WHERE n = :n", {"n": 1}) == [{"n": 1, "label": "x", "flag": True}]


def test_through_a_transaction_pooler_nothing_is_prepared(database_url: str) -> None:
    db = Database(database_url, prepared_statements=False)
    try:
        db.run("SELECT :a::int AS a", {"a": 1})
        assert db.run("SELECT count(*) AS n FROM pg_prepared_statements") == [{"n": 0}]
    finally:
        db.close()
    assert ConnectionParams.from_url("postgresql://u@pooler.supabase.com:6543/postgres").through_transaction_pooler
    assert not ConnectionParams.from_url("postgresql://u@db.supabase.co:5432/postgres").through_transaction_pooler


def test_a_listening_session_has_a_connection_of_its_own(db: Database, admin) -> None:
    session = db.listen("wake_up")
    try:
        listening_pid = admin.run("SELECT pid FROM pg_stat_activity WHERE query = 'LISTEN \"wake_up\"'")[0][0]
        assert listening_pid != _backend_pid(db)
        db.run("SELECT pg_notify('wake_up', 'a'), pg_notify('other', 'b')")
        assert session.notifications(5) == ["a"]  # its own channel only
        assert session.notifications(0) == []
        _kill(admin, listening_pid)
        with pytest.raises(DatabaseUnavailable):  # messages may have been missed: say so
            session.notifications(1)
    finally:
        session.close()


def test_a_listening_channel_must_be_a_plain_identifier(db: Database) -> None:
    with pytest.raises(ValueError, match="channel"):
        db.listen('x"; DROP TABLE y; --')
