"""Flows on schemas 31-32 (pg-boss 12.19-12.21): complete releases children itself.

From 33 a background resolver releases a completed parent's children (tests/interop
covers that against 12.38); before it, pg-boss's complete statement does, and so must
ours. Per release: that release's Node pg-boss creates a fan-in flow twice; our client
works one copy and Node the other, and each child must become fetchable exactly when
its last parent completes, with the same rows on both sides.
"""

from __future__ import annotations

from collections.abc import Iterator

import pg8000.native
import pytest

from shared.db import Database
from shared.pgboss.client import PgBoss
from tests.conftest import SCHEMA, create_database, url_for
from tests.support import releases
from tests.support.node_boss import NodeBoss


@pytest.fixture(params=["12.19.1", "12.21.1"])
def release_db(request: pytest.FixtureRequest, admin: pg8000.native.Connection) -> Iterator[tuple[str, str]]:
    releases.install()
    name = create_database(admin)
    releases.install_schema(url_for(name), SCHEMA, request.param)
    yield request.param, url_for(name)
    admin.run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _rows(db: Database, prefix: str) -> list[tuple[str, str, bool, int]]:
    rows = db.run(
        f"SELECT data->>'tag' AS tag, state::text AS state, blocked, pending_dependencies"
        f" FROM {SCHEMA}.job WHERE left(name, length(:prefix)) = :prefix ORDER BY tag",
        {"prefix": prefix},
    )
    return [(row["tag"], row["state"], row["blocked"], row["pending_dependencies"]) for row in rows]


def test_completing_the_last_parent_releases_the_child(release_db: tuple[str, str]) -> None:
    release, url = release_db
    db = Database(url)
    boss = PgBoss(db, SCHEMA)
    try:
        assert boss.check_schema().complete_releases_children
        with NodeBoss(
            url, SCHEMA, package_dir=releases.package_dir(release), supervise=False, schedule=False, migrate=False
        ) as node:
            seen: dict[str, list[list[str]]] = {}
            for side in ("python", "node"):
                q, child = f"{side}.q", f"{side}.child"
                node.call("createQueue", q)
                node.call("createQueue", child)
                node.call(
                    "flow",
                    [
                        {"ref": "a", "name": q, "data": {"tag": "a"}},
                        {"ref": "b", "name": q, "data": {"tag": "b"}},
                        {"ref": "c", "name": child, "data": {"tag": "c"}, "dependsOn": ["a", "b"]},
                    ],
                )
                steps: list[list[str]] = []
                for _parent in ("a", "b"):  # either order: both were created at once
                    if side == "python":
                        [ours] = boss.fetch(q, 1)
                        assert boss.complete(q, [(ours, None)]) == [ours.id]
                        steps.append([job.data["tag"] for job in boss.fetch(child, 5)])
                    else:
                        [job] = node.call("fetch", q)
                        node.call("complete", q, job["id"])
                        steps.append([job["data"]["tag"] for job in node.call("fetch", child, {"batchSize": 5})])
                seen[side] = steps
            assert seen["python"] == seen["node"] == [[], ["c"]]
            assert _rows(db, "python.") == _rows(db, "node.")
    finally:
        db.close()
