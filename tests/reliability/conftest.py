"""Fixtures of the reliability suite: a PostgreSQL server of its own, servers it may kill,
the run's secrets and log directory, and the figures it reports.

Short mode (the default, part of ``./test.sh``) sizes every scenario for CI; soak mode
(``RELIABILITY_SOAK=1``, see ``scripts/reliability.sh``) runs the same scenarios longer
and bigger. Each test adds its figures (``support.add_figures``); the table is printed at the end of the run and
written to ``.reliability/latest.json``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.db import Database
from tests.conftest import ROOT, SCHEMA, require_tool
from tests.reliability import app
from tests.reliability.cluster import Cluster, available
from tests.reliability.servers import Function
from tests.reliability.support import API_KEY, DRAIN_TOKEN, FIGURES, ROUTES, SOAK, WEBHOOK_SECRET
from tests.support.node_boss import migrate


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    mode = "soak" if SOAK else "short"
    terminalreporter.section(f"reliability figures ({mode} mode)")
    for scenario, figures in FIGURES.items():
        line = ", ".join(f"{name} {value}" for name, value in figures.items())
        terminalreporter.write_line(f"{scenario:<24} {line}")
    out = ROOT / ".reliability"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps({"mode": mode, "figures": FIGURES}, indent=2) + "\n")


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    require_tool(available(), "PostgreSQL's initdb and pg_ctl")
    server = Cluster()
    server.start()
    admin = Database(server.url())
    admin.run("CREATE DATABASE template_reliability")
    admin.close()
    migrate(server.url("template_reliability"), SCHEMA)
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def log_dir() -> Iterator[Path]:
    """Every server log of the run; kept when a test failed, for reading."""
    directory = Path(tempfile.mkdtemp(prefix="mp-reliability-logs-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


_databases = iter(range(1, 1_000_000))


@pytest.fixture
def database_url(cluster: Cluster) -> Iterator[str]:
    """A fresh database on the suite's server: pg-boss's schema and the executions table."""
    name = f"reliability_{next(_databases)}"
    admin = Database(cluster.url())
    admin.run(f'CREATE DATABASE "{name}" TEMPLATE template_reliability')
    admin.close()
    url = cluster.url(name)
    recorder = Database(url)
    recorder.run(app.EXECUTIONS_DDL)
    recorder.close()
    yield url
    admin = Database(cluster.url())  # a new connection: the test may have restarted the server
    admin.run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url, statement_timeout_ms=0)
    yield database
    database.close()


def function_env(database_url: str, **overrides: str) -> dict[str, str]:
    env = {
        "DATABASE_URL": database_url,
        "PGBOSS_SCHEMA": SCHEMA,
        "API_KEYS": API_KEY,
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
        "DRAIN_TOKEN": DRAIN_TOKEN,
        "WEBHOOK_ROUTES": json.dumps(ROUTES),
        "CREATE_MISSING_QUEUES": "true",
        "LOG_LEVEL": "DEBUG",
    }
    env.update(overrides)
    return env


@pytest.fixture
def serve(database_url: str, log_dir: Path) -> Iterator[Callable[..., Function]]:
    """``serve(target, **env)``: a function instance on the test's database."""
    started: list[Function] = []

    def start(target: str, *, threads: int = 8, url: str | None = None, **overrides: str) -> Function:
        function = Function(target, function_env(url or database_url, **overrides), log_dir, threads=threads)
        started.append(function)
        return function

    yield start
    for function in started:
        function.close()
