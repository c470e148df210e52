"""Shared fixtures: a real PostgreSQL with pg-boss's schema, one database per test.

pg-boss's own CLI installs its schema once per run into a template database; each
test then gets ``CREATE DATABASE … TEMPLATE`` (fast, isolated) and it is dropped
afterwards. Every database of a run carries the run's prefix, so parallel runs on one
server never meet, and leftovers of killed runs are dropped at the next start.
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import functions_framework
import pg8000.native
import pytest
from flask.testing import FlaskClient

from shared import instance
from shared.db import Database
from shared.pgboss.client import PgBoss
from tests.support import releases
from tests.support.node_boss import NodeBoss, migrate

ROOT = Path(__file__).resolve().parent.parent
MAIN = str(ROOT / "main.py")
# ./test.sh sets it: to a throwaway server of its own unless it was already set.
ADMIN_URL = os.environ.get("TEST_ADMIN_DATABASE_URL", "")
PREFIX = "mp_test_"
RUN = f"{PREFIX}{os.getpid()}_{secrets.token_hex(3)}"
SCHEMA = "pgboss"
# Run the suite against another pg-boss release than the pinned one (tests/versions/),
# e.g. TEST_PGBOSS_RELEASE=11.0.0: its schema, its Node pg-boss.
RELEASE = os.environ.get("TEST_PGBOSS_RELEASE") or None

API_KEY = "test-api-key-0123456789"
WEBHOOK_SECRET = "test-webhook-secret-0123456789"
DRAIN_TOKEN = "test-drain-token-0123456789"

_counter = itertools.count()


# HOST:PORT of a PgBouncer in transaction mode (tests/pooler runs the intake and drain
# tests again with it set): the databases tests are given are then reached through it.
PGBOUNCER = os.environ.get("TESTS_PGBOUNCER")


def url_for(database: str) -> str:
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{database}"


def client_url(database: str) -> str:
    """What a test connects to: the server, or the PgBouncer in front of it."""
    return f"postgresql://postgres@{PGBOUNCER}/{database}" if PGBOUNCER else url_for(database)


def admin_connection() -> pg8000.native.Connection:
    """A connection to the test server's administrative database."""
    if not ADMIN_URL:
        pytest.exit("TEST_ADMIN_DATABASE_URL is not set: run the tests with ./test.sh, which starts a PostgreSQL")
    return Database(ADMIN_URL)._connect()


def _drop_leftovers(admin: pg8000.native.Connection) -> None:
    """Drop databases of earlier runs whose process is gone."""
    rows = admin.run("SELECT datname FROM pg_database WHERE datname LIKE :p", p=PREFIX + "%")
    for (name,) in rows:
        pid = name[len(PREFIX) :].split("_", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            admin.run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def admin() -> Iterator[pg8000.native.Connection]:
    connection = admin_connection()
    _drop_leftovers(connection)
    yield connection
    rows = connection.run("SELECT datname FROM pg_database WHERE datname LIKE :p", p=RUN + "%")
    for (name,) in rows:
        connection.run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    connection.close()


@pytest.fixture(scope="session")
def template_database(admin: pg8000.native.Connection) -> str:
    name = f"{RUN}_template"
    admin.run(f'CREATE DATABASE "{name}"')
    if RELEASE is None:
        migrate(url_for(name), SCHEMA)
    else:
        releases.install()
        releases.install_schema(url_for(name), SCHEMA, RELEASE)
    return name


def create_database(admin: pg8000.native.Connection, template: str | None = None) -> str:
    name = f"{RUN}_{next(_counter)}"
    clause = f' TEMPLATE "{template}"' if template else ""
    admin.run(f'CREATE DATABASE "{name}"{clause}')
    return name


@pytest.fixture
def database_url(admin: pg8000.native.Connection, template_database: str) -> Iterator[str]:
    """A fresh database with pg-boss's schema installed, dropped after the test."""
    name = create_database(admin, template_database)
    yield client_url(name)
    admin.run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_database_url(admin: pg8000.native.Connection) -> Iterator[str]:
    """A fresh database without pg-boss's schema."""
    name = create_database(admin)
    yield client_url(name)
    admin.run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.close()


@pytest.fixture
def boss(db: Database) -> PgBoss:
    return PgBoss(db, SCHEMA)


@pytest.fixture
def node_boss(database_url: str) -> Iterator[NodeBoss]:
    """Real pg-boss (Node) on the test's database, with its background work off."""
    with NodeBoss(
        database_url, SCHEMA, package_dir=node_package(), supervise=False, schedule=False, migrate=False
    ) as node:
        yield node


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip what the release under test cannot do (``@pytest.mark.since(30, "heartbeats")``)."""
    if RELEASE is None:
        return
    releases.install()
    schema = releases.schema_of(RELEASE)
    for item in items:
        marker = item.get_closest_marker("since")
        if marker is not None and schema < marker.args[0]:
            item.add_marker(pytest.mark.skip(reason=f"pg-boss {RELEASE} (schema {schema}) has no {marker.args[1]}"))


def node_package() -> Path | None:
    """The package folder of the pg-boss release under test; None for the pinned one."""
    return None if RELEASE is None else releases.package_dir(RELEASE)


def function_env(database_url: str, **overrides: str) -> dict[str, str]:
    env = {
        "DATABASE_URL": database_url,
        "PGBOSS_SCHEMA": SCHEMA,
        "API_KEYS": API_KEY,
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
        "DRAIN_TOKEN": DRAIN_TOKEN,
        "LOG_LEVEL": "INFO",
    }
    if PGBOUNCER and PGBOUNCER in database_url:
        # As deployed behind Supabase: statements through the transaction pooler, LISTEN
        # on a session of its own (the session pooler there, the server here).
        env["DRAIN_LISTEN_DATABASE_URL"] = url_for(database_url.rpartition("/")[2])
    env.update(overrides)
    return env


@pytest.fixture
def configure(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Set the process environment the functions read, and reset per-instance state."""

    def apply(database_url: str, **overrides: str) -> None:
        for name, value in function_env(database_url, **overrides).items():
            monkeypatch.setenv(name, value)
        instance.reset()

    yield apply
    instance.reset()


@pytest.fixture
def client_for(configure: Callable[..., None], database_url: str) -> Callable[..., FlaskClient]:
    """A test client of one function, loaded through functions-framework from main.py."""

    def make(target: str, *, url: str | None = None, **overrides: str) -> FlaskClient:
        configure(url or database_url, **overrides)
        return functions_framework.create_app(target, MAIN).test_client()

    return make


def require_tool(available: bool, what: str) -> None:
    """Skip a test whose outside tool is missing, except where every test must run.

    ``.ci/run`` sets ``TESTS_REQUIRE_TOOLS=1``: there a missing tool fails the test, so a
    machine without it cannot pass by skipping. Elsewhere (a laptop, Cloud Build's
    Python image without the Google Cloud SDK) the test is skipped, saying why.
    """
    if available:
        return
    if os.environ.get("TESTS_REQUIRE_TOOLS") == "1":
        pytest.fail(f"{what} is required here (TESTS_REQUIRE_TOOLS=1) but missing")
    pytest.skip(f"{what} is not installed")


def count_jobs(db: Database) -> int:
    return int(db.run(f"SELECT count(*) AS n FROM {SCHEMA}.job")[0]["n"])
