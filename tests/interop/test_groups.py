"""Group concurrency across both clients (contract §4.4, §8 #19, concurrencyGroupTest).

A group limit is a fetch-time option of each worker, counted live from the ``active`` rows, so
it holds across Node and Python only if both count and rank the same way. Each test mixes the
two clients' claims on one queue and checks the limit against the table after every fetch.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from shared.db import Database
from tests.interop.actors import Actor, NodeActor
from tests.interop.conftest import Names, Twin

pytestmark = pytest.mark.since(27, "job groups")

TIERED = {"default": 1, "tiers": {"vip": 3}}


def _active_by_group(db: Database, queue: str) -> Counter[str]:
    rows = db.run(
        "SELECT group_id, group_tier, count(*)::int AS n FROM pgboss.job"
        " WHERE name = :q AND state = 'active' AND group_id IS NOT NULL GROUP BY 1, 2",
        {"q": queue},
    )
    return Counter({row["group_id"]: row["n"] for row in rows})


def _groups(claims: list[Any]) -> Counter[str]:
    return Counter(claim.group_id or "-" for claim in claims)


def test_group_limit_holds_across_clients(actor: Actor, observer: Actor, db: Database) -> None:
    a, b = actor, observer
    b.create_queue("q")
    for n in range(6):
        a.send("q", {"n": n}, group={"id": "g1"})
    for n in range(3):
        b.send("q", {"n": n}, group={"id": "g2", "tier": "any"})
    a.send("q", {"n": "free"})
    b.send("q", {"n": "free"})
    # The batch is cut to 10 in queue order before groups are trimmed, as pg-boss does: the
    # second ungrouped job is not in the first 10 and waits for the next fetch.
    first = a.fetch("q", 10, groupConcurrency=2)
    assert _groups(first) == {"g1": 2, "g2": 2, "-": 1}
    assert _groups(b.fetch("q", 10, groupConcurrency=2)) == {"-": 1}
    assert b.fetch("q", 10, groupConcurrency=3) and _active_by_group(db, "q") == {"g1": 3, "g2": 3}
    held = [claim for claim in first if claim.group_id == "g1"]
    assert b.complete("q", held[:1]) == 1
    assert a.fetch("q", 10, groupConcurrency=2) == []  # g1 has 2 active still: at its limit
    [one] = a.fetch("q", 10, groupConcurrency=3)
    assert one.group_id == "g1"


def test_tiered_limits_leave_room_for_active_jobs(actor: Actor, observer: Actor, db: Database) -> None:
    """pg-boss's "should preserve tiered batch capacity when groups are already active"."""
    a, b = actor, observer
    a.create_queue("q")
    for group, tier, count in (("vip-full", "vip", 3), ("vip", "vip", 1)):
        for n in range(count):
            b.send("q", {"group": group, "n": n, "held": True}, group={"id": group, "tier": tier}, priority=9)
    assert len(b.fetch("q", 4)) == 4
    for group, tier, count in (("vip-full", "vip", 3), ("vip", "vip", 3), ("default", None, 2)):
        for n in range(count):
            a.send("q", {"group": group, "n": n}, group={"id": group, "tier": tier} if tier else {"id": group})
    claims = a.fetch("q", 10, groupConcurrency=TIERED)
    assert Counter(claim.data["group"] for claim in claims) == {"vip": 2, "default": 1}
    assert b.fetch("q", 10, groupConcurrency=TIERED) == []


def test_first_group_fetch_matches_pg_boss(twin: Twin, node_actor: NodeActor) -> None:
    def scenario(actor: Actor, names: Names) -> list[dict[str, int]]:
        node_actor.create_queue(names("q"))
        layout = [("a", "vip")] * 5 + [("b", None)] * 4 + [(None, None)] * 3 + [("c", "basic")] * 3
        for n, (group, tier) in enumerate(layout):
            options: dict[str, Any] = {}
            if group:
                options["group"] = {"id": group, **({"tier": tier} if tier else {})}
            node_actor.send(names("q"), {"tag": f"{n}"}, priority=n % 3, **options)
        counts = [dict(_groups(actor.fetch(names("q"), 6, groupConcurrency=TIERED)))]
        counts.append(dict(_groups(actor.fetch(names("q"), 20, groupConcurrency=2))))
        return counts

    run = twin(scenario)
    assert run.results["python"] == run.results["node"]


def test_limits_hold_while_both_clients_race(python_actor: Actor, node_actor: NodeActor, db: Database) -> None:
    rng = random.Random(19)
    python_actor.create_queue("q")
    groups = [("a", "vip"), ("b", "vip"), ("c", None), ("d", "basic"), (None, None)]
    limits = {"a": 3, "b": 3, "c": 1, "d": 1}
    jobs = []
    for n in range(120):
        group, tier = rng.choice(groups)
        options: dict[str, Any] = {"priority": rng.randint(0, 2)}
        if group:
            options["group"] = {"id": group, **({"tier": tier} if tier else {})}
        jobs.append({"data": {"n": n}, **options})
    python_actor.insert("q", jobs[:60])
    node_actor.insert("q", jobs[60:])
    held: list[Any] = []
    done = 0
    for _ in range(80):
        client = rng.choice([python_actor, node_actor])
        claims = client.fetch("q", rng.randint(1, 8), groupConcurrency=TIERED)
        held += claims
        active = _active_by_group(db, "q")
        assert all(active[group] <= limit for group, limit in limits.items()), active
        rng.shuffle(held)
        for _ in range(rng.randint(0, len(held))):
            claim = held.pop()
            # Whichever client fetched it, either may settle it: the fenced claim is what counts.
            settler = rng.choice([python_actor, node_actor])
            assert settler.complete("q", [claim]) == 1
            done += 1
        if done == len(jobs):
            break
    left = db.run("SELECT count(*) AS n FROM pgboss.job WHERE name = 'q' AND state <> 'completed'")[0]["n"]
    assert left == len(jobs) - done
