"""The package through a real PgBouncer in transaction mode (Debian's package), the way
it runs behind Supabase's transaction pooler: no start-up options, the statement timeout
per transaction, no statement crossing from one client to another, and the intake and
drain test modules passing through it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from shared.db import Database
from shared.errors import DatabaseUnavailable
from shared.pgboss.client import PgBoss
from shared.pgboss.supervisor import PASSES, Intervals, Plan, Supervisor
from tests.conftest import ADMIN_URL, ROOT, SCHEMA, require_tool
from tests.support.pgbouncer import PgBouncer, binary

DRAINER = "tests/drain/test_drainer.py"
# Left out of the run through PgBouncer, and why.
NOT_THROUGH_PGBOUNCER = {
    # It makes the drain LISTEN on the pooled URL itself (drain never does: it polls, or
    # LISTENs on DRAIN_LISTEN_DATABASE_URL), then kills server sessions; behind a pooler
    # the client's connection outlives them, so the listener cannot notice.
    f"{DRAINER}::test_a_killed_database_connection_mid_call_loses_no_job": "LISTEN through the pooler",
    # Sub-second windows sized for a direct connection (each statement through the pooler
    # is an explicit transaction: two more round trips, plus the pooler's hop).
    f"{DRAINER}::test_two_overlapping_drains_and_a_node_worker_complete_each_job_exactly_once": "timing",
    f"{DRAINER}::test_polling_finds_a_job_sent_mid_call_when_it_cannot_listen": "timing",
    f"{DRAINER}::test_a_long_handler_on_a_heartbeat_queue_keeps_its_job_alive": "timing",
}


def start_pgbouncer(pool_size: int) -> PgBouncer:
    require_tool(binary() is not None, "PgBouncer (Debian package pgbouncer)")
    return PgBouncer(ADMIN_URL, pool_size=pool_size)


@pytest.fixture(scope="module")
def pgbouncer() -> Iterator[PgBouncer]:
    # Two server connections for several clients: consecutive transactions of one client
    # land on different server sessions, as on a busy pooler.
    bouncer = start_pgbouncer(pool_size=2)
    yield bouncer
    bouncer.stop()


@pytest.fixture
def pooled_url(pgbouncer: PgBouncer, database_url: str) -> str:
    return pgbouncer.url(database_url.rpartition("/")[2])


def test_the_package_knows_it_is_behind_a_transaction_pooler(pooled_url: str) -> None:
    db = Database(pooled_url)
    assert db._params.through_transaction_pooler
    assert db.run("SELECT :n::int AS n", {"n": 7}) == [{"n": 7}]
    db.close()


def test_the_statement_timeout_applies_per_transaction(pooled_url: str) -> None:
    timed = Database(pooled_url, statement_timeout_ms=1500)
    untimed = Database(pooled_url, statement_timeout_ms=0)
    try:
        for _ in range(5):  # alternate over the pool's server sessions
            assert timed.run("SELECT current_setting('statement_timeout') AS t") == [{"t": "1500ms"}]
            # Nothing of the other client's setting stays on a server session.
            assert untimed.run("SELECT current_setting('statement_timeout') AS t") == [{"t": "0"}]
        with timed.transaction() as tx:
            assert tx.run("SELECT current_setting('statement_timeout') AS t") == [{"t": "1500ms"}]
        with pytest.raises(DatabaseUnavailable, match="did not answer in time"):
            timed.run("SELECT pg_sleep(3)")
    finally:
        timed.close()
        untimed.close()


def test_a_direct_connection_sets_the_timeout_once_per_session(database_url: str) -> None:
    """No start-up option there either; 0 sends nothing, so the server's default stands."""
    timed = Database(database_url, statement_timeout_ms=1500)
    untimed = Database(database_url, statement_timeout_ms=0)
    try:
        assert timed.run("SELECT current_setting('statement_timeout') AS t") == [{"t": "1500ms"}]
        assert untimed.run("SELECT current_setting('statement_timeout') AS t") == [{"t": "0"}]
    finally:
        timed.close()
        untimed.close()


def test_concurrent_clients_never_run_each_others_statements(pooled_url: str) -> None:
    """pg8000 parses, describes and executes an unnamed statement in separate syncs; in
    a transaction they stay on one server session, so no client binds another's."""
    errors: list[BaseException] = []

    def client(tag: str) -> None:
        db = Database(pooled_url)
        try:
            for n in range(150):
                sql = f"SELECT :n::int AS n, '{tag}'::text AS tag" + (" , 1 AS one" if n % 2 else "")
                rows = db.run(sql, {"n": n})
                assert rows[0]["n"] == n and rows[0]["tag"] == tag, rows
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            db.close()

    threads = [threading.Thread(target=client, args=(f"client{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


@pytest.mark.parametrize("suite", ["tests/intake", "tests/drain"])
def test_the_intake_and_drain_tests_pass_through_pgbouncer(suite: str) -> None:
    """The suite again, every test database reached through PgBouncer (tests/conftest.py
    reads TESTS_PGBOUNCER), with room for the drain's concurrent connections."""
    bouncer = start_pgbouncer(pool_size=20)
    deselect = [arg for test in NOT_THROUGH_PGBOUNCER if test.startswith(suite) for arg in ("--deselect", test)]
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pytest", suite, "-q", "-x", "-p", "no:cacheprovider", *deselect],
            cwd=ROOT,
            env={**os.environ, "TESTS_PGBOUNCER": bouncer.host_port},
            capture_output=True,
            text=True,
            timeout=1800,
        )
    finally:
        bouncer.stop()
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary, summary


def test_supervision_through_the_pooler_runs_every_pass_but_index_builds(pooled_url: str) -> None:
    """CREATE INDEX CONCURRENTLY cannot run in the transaction every pooled statement gets:
    the bam pass says so and the others run as on a direct connection."""
    db = Database(pooled_url)
    try:
        boss = PgBoss(db, SCHEMA)
        boss.create_queue("q")
        summary = Supervisor(boss, Plan(passes=frozenset(PASSES), intervals=Intervals(), budget_seconds=30.0)).run()
    finally:
        db.close()
    assert "transaction pooler" in summary.skipped["bam"]
    assert "monitor" not in summary.skipped and "flows" not in summary.skipped
