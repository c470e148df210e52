"""Flows (contract §5.3, §8 #16, flowTest) — one way only: pg-boss creates and resolves them.

Our client creates no flows and runs no flow resolver, so the "Python acts" half of #16 does
not exist. What does exist, and matters in production, is a Node app creating flows whose
jobs we work: our fetch must skip blocked children, our complete must leave ``blocking`` for
pg-boss's resolver, and our fail (retry or for good) must leave parents exactly as pg-boss's
own fail does, so the resolver releases or holds children the same way. Each scenario runs as
a twin: pg-boss creates the same flow twice and resolves it; our client works one copy and
pg-boss works the other; the job tables must agree.

Schemas 31-32 (pg-boss 12.19-12.21) release a completed parent's children in the complete
statement itself and have no resolver; from 33 (12.22) a resolver releases them later.
"""

from __future__ import annotations

from typing import Any

import pytest

from shared.pgboss.capabilities import Capabilities
from tests.interop.actors import Actor, NodeActor
from tests.interop.conftest import Names, Twin
from tests.support.node_boss import NodeBoss

pytestmark = pytest.mark.since(31, "flows (job dependencies)")

ERROR = {"name": "Error", "message": "boom", "stack": "Error: boom"}


def _flow(node: NodeBoss, jobs: list[dict[str, Any]]) -> dict[str, str]:
    return node.call("flow", jobs)


def _resolve(node: NodeBoss, caps: Capabilities) -> None:
    """Run pg-boss's flow resolver once, where the release has one (33+); before, complete
    released the children already."""
    if not caps.complete_releases_children:
        node.call("resolveFlow")


def _tags(claims: list[Any]) -> list[str]:
    return sorted(claim.data["tag"] for claim in claims)


def test_child_waits_for_its_parent(twin: Twin, node_actor: NodeActor, node_boss: NodeBoss, caps: Capabilities) -> None:
    def scenario(actor: Actor, names: Names) -> list[list[str]]:
        node_actor.create_queue(names("q"))
        node_actor.create_queue(names("next"))
        _flow(
            node_boss,
            [
                {"ref": "a", "name": names("q"), "data": {"tag": "parent"}},
                {"ref": "b", "name": names("next"), "data": {"tag": "child"}, "dependsOn": ["a"]},
            ],
        )
        seen = [_tags(actor.fetch(names("next"), 10))]
        [parent] = actor.fetch(names("q"), 10)
        actor.complete(names("q"), [parent], {"done": True})
        seen.append(_tags(actor.fetch(names("next"), 10)))  # completed; released only by 31-32
        _resolve(node_boss, caps)
        seen.append(_tags(actor.fetch(names("next"), 10)))
        return seen

    run = twin(scenario)
    # 31-32: the child is released by the complete and fetched at once; none is left after.
    expected = [[], ["child"], []] if caps.complete_releases_children else [[], [], ["child"]]
    assert run.results["python"] == run.results["node"] == expected
    run.assert_same()


def test_fan_in_needs_every_parent(twin: Twin, node_actor: NodeActor, node_boss: NodeBoss, caps: Capabilities) -> None:
    def scenario(actor: Actor, names: Names) -> list[list[str]]:
        node_actor.create_queue(names("q"))
        ids = _flow(
            node_boss,
            [
                {"ref": "p1", "name": names("q"), "data": {"tag": "p1"}, "options": {"priority": 2}},
                {"ref": "p2", "name": names("q"), "data": {"tag": "p2"}, "options": {"priority": 1}},
                {"ref": "c", "name": names("q"), "data": {"tag": "c"}, "dependsOn": ["p1", "p2"]},
            ],
        )
        [first] = actor.fetch(names("q"))
        actor.complete(names("q"), [first])
        _resolve(node_boss, caps)
        second = actor.fetch(names("q"), 10)  # p2 only: c still waits on it
        pending = node_actor.node.call("getJobById", names("q"), ids["c"])["pendingDependencies"]
        actor.complete(names("q"), second)
        _resolve(node_boss, caps)
        return [_tags([first]), _tags(second), [str(pending)], _tags(actor.fetch(names("q"), 10))]

    run = twin(scenario)
    assert run.results["python"] == run.results["node"] == [["p1"], ["p2"], ["1"], ["c"]]
    run.assert_same()


def test_parent_failed_for_good_holds_its_child(
    twin: Twin, node_actor: NodeActor, node_boss: NodeBoss, caps: Capabilities
) -> None:
    def scenario(actor: Actor, names: Names) -> list[str]:
        node_actor.create_queue(names("q"), retryLimit=0)
        _flow(
            node_boss,
            [
                {"ref": "a", "name": names("q"), "data": {"tag": "parent"}},
                {"ref": "b", "name": names("q"), "data": {"tag": "child"}, "dependsOn": ["a"]},
            ],
        )
        actor.fail(names("q"), actor.fetch(names("q"), 10), ERROR)
        _resolve(node_boss, caps)
        return _tags(actor.fetch(names("q"), 10))

    run = twin(scenario)
    assert run.results["python"] == run.results["node"] == []
    run.assert_same()
    rows = {row["data"]["tag"]: row for row in run.ours}
    assert (rows["parent"]["state"], rows["parent"]["blocking"]) == ("failed", True)
    assert (rows["child"]["blocked"], rows["child"]["pending_dependencies"]) == (True, 1)


def test_parent_retried_then_completed_releases_its_child(
    twin: Twin, node_actor: NodeActor, node_boss: NodeBoss, caps: Capabilities
) -> None:
    def scenario(actor: Actor, names: Names) -> list[list[str]]:
        node_actor.create_queue(names("q"), retryLimit=1)
        _flow(
            node_boss,
            [
                {"ref": "a", "name": names("q"), "data": {"tag": "parent"}},
                {"ref": "b", "name": names("q"), "data": {"tag": "child"}, "dependsOn": ["a"]},
                {
                    "ref": "late",
                    "name": names("q"),
                    "data": {"tag": "late child"},
                    "dependsOn": ["a"],
                    "options": {"startAfter": 3600},
                },
            ],
        )
        seen = []
        actor.fail(names("q"), actor.fetch(names("q"), 10), ERROR)  # goes to retry, keeps blocking
        _resolve(node_boss, caps)
        [again] = actor.fetch(names("q"), 10)
        seen.append([again.data["tag"], str(again.retry_count)])
        actor.complete(names("q"), [again])
        _resolve(node_boss, caps)
        seen.append(_tags(actor.fetch(names("q"), 10)))  # the late child keeps its start_after
        return seen

    run = twin(scenario)
    assert run.results["python"] == run.results["node"] == [["parent", "1"], ["child"]]
    run.assert_same()
    late = next(row for row in run.ours if row["data"]["tag"] == "late child")
    assert late["blocked"] is False and late["state"] == "created" and late["start_after"] > 3500
