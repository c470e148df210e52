"""Fixtures of the interop suite: both clients on one fresh database, and the two ways to pair them.

* ``python_actor`` / ``node_actor``: our client and real pg-boss 12.38 behind one interface
  (``tests.interop.actors``).
* ``actor`` / ``observer``: parametrised over both directions. ``actor`` does the scenario's
  writes and ``observer`` is the other client checking what it sees, so a test written once
  runs as "Python acts, pg-boss observes" and "pg-boss acts, Python observes".
* ``twin``: runs one scenario with each client in its own namespace of queues and returns both
  runs' rows, normalized for comparison (``tests.interop.rows``).
* ``caps``: what the release under test has (``TEST_PGBOSS_RELEASE``; 12.38 by default), so a
  scenario uses the options that release has; ``test_refused`` checks those it lacks are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from shared.db import Database
from shared.pgboss.capabilities import Capabilities
from shared.pgboss.client import PgBoss
from tests.interop.actors import Actor, NodeActor, PythonActor
from tests.interop.rows import differences, normalize, raw_rows
from tests.support.node_boss import NodeBoss


@pytest.fixture
def caps(boss: PgBoss) -> Capabilities:
    return boss.capabilities


def supported(caps: Capabilities, options: dict[str, Any]) -> dict[str, Any]:
    """The send options of ``options`` the release under test has (the rest are refused,
    which ``test_refused`` checks)."""
    missing = set(caps.send_options_missing(options))
    return {key: value for key, value in options.items() if key not in missing}


def supported_queue(caps: Capabilities, options: dict[str, Any]) -> dict[str, Any]:
    """The queue options of ``options`` the release under test has."""
    missing = set(caps.queue_options_missing(options, options.get("policy", "standard")))
    return {key: value for key, value in options.items() if key not in missing}


@pytest.fixture
def python_actor(boss: PgBoss) -> PythonActor:
    return PythonActor(boss)


@pytest.fixture
def node_actor(node_boss: NodeBoss, db: Database, boss: PgBoss) -> NodeActor:
    return NodeActor(node_boss, db, boss.schema_version())


@pytest.fixture(params=["python", "node"], ids=["python-acts", "node-acts"])
def actor(request: pytest.FixtureRequest, python_actor: PythonActor, node_actor: NodeActor) -> Actor:
    return python_actor if request.param == "python" else node_actor


@pytest.fixture
def observer(actor: Actor, python_actor: PythonActor, node_actor: NodeActor) -> Actor:
    return node_actor if actor is python_actor else python_actor


class Names:
    """Queue names of one run: ``names("q")`` is ``q`` inside this run's namespace."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def __call__(self, name: str) -> str:
        return self.prefix + name


Scenario = Callable[[Actor, Names], Any]


@dataclass
class TwinRun:
    ours: list[dict[str, Any]]
    theirs: list[dict[str, Any]]
    results: dict[str, Any]

    def assert_same(self, **options: Any) -> None:
        problems = differences(self.ours, self.theirs, **options)
        assert not problems, "our rows differ from pg-boss's:\n" + "\n".join(problems)


class Twin:
    """Run a scenario once per client, each in its own queue namespace of the same database."""

    def __init__(self, python: PythonActor, node: NodeActor, db: Database) -> None:
        self.python = python
        self.node = node
        self.db = db
        self._runs = 0

    def __call__(self, scenario: Scenario) -> TwinRun:
        """``scenario(actor, names)`` runs with each client as ``actor`` (creating its queues
        too); its return values are kept in ``results``."""
        self._runs += 1
        results: dict[str, Any] = {}
        rows: dict[str, list[dict[str, Any]]] = {}
        for actor in (self.python, self.node):
            names = Names(f"{actor.name}{self._runs}.")
            results[actor.name] = scenario(actor, names)
            rows[actor.name] = normalize(raw_rows(self.db, names.prefix), names.prefix)
        return TwinRun(rows["python"], rows["node"], results)


@pytest.fixture
def twin(python_actor: PythonActor, node_actor: NodeActor, db: Database) -> Twin:
    return Twin(python_actor, node_actor, db)
