"""The functions over HTTP on schemas older than 12.38's: ready, enqueue and drain.

Per release (each family's oldest where the hot path differs most from 12.38's): the
release installs its schema, ``ready`` names its version and releases, ``enqueue``
refuses an option the release lacks with a 422 naming it and the installed version,
and ``drain`` creates the handler's queue the way the schema can (no ``notify`` before
32) and works jobs sent through ``enqueue`` and by that release's Node pg-boss.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pg8000.native
import pytest
from flask.testing import FlaskClient

from shared.pgboss.capabilities import releases_of
from tests.conftest import API_KEY, DRAIN_TOKEN, SCHEMA, create_database, url_for
from tests.support import releases
from tests.support.node_boss import NodeBoss

QUEUE = "test-job"


# Each release with a send option it lacks (None: it has every one enqueue takes).
RELEASES = {
    "10.0.0": {"deleteAfterSeconds": 60},
    "11.0.0": {"group": {"id": "g"}},
    "12.11.2": {"heartbeatSeconds": 30},
    "12.19.1": None,
}


@pytest.fixture(params=sorted(RELEASES))
def release_url(request: pytest.FixtureRequest, admin: pg8000.native.Connection) -> Iterator[tuple[str, str]]:
    releases.install()
    name = create_database(admin)
    releases.install_schema(url_for(name), SCHEMA, request.param)
    yield request.param, url_for(name)
    admin.run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_functions_work_on_an_older_schema(
    release_url: tuple[str, str], client_for: Callable[..., FlaskClient]
) -> None:
    release, url = release_url
    schema = releases.schema_of(release)

    ready = client_for("ready", url=url).get("/")
    assert ready.status_code == 200
    check = ready.get_json()["checks"]["pgboss_schema"]
    assert (check["version"], check["pgboss_releases"]) == (schema, releases_of(schema))

    drain = client_for("drain", url=url)
    auth = {"Authorization": f"Bearer {DRAIN_TOKEN}"}
    assert drain.post("/", json={"budgetSeconds": 0}, headers=auth).status_code == 200  # creates the queue

    enqueue = client_for("enqueue", url=url)
    lacking = RELEASES[release]
    if lacking is not None:
        refused = enqueue.post("/", json={"name": QUEUE, "options": lacking}, headers={"X-API-Key": API_KEY})
        assert refused.status_code == 422
        [error] = refused.get_json()["errors"]
        assert f"schema version {schema}" in error["msg"]
        assert error["loc"][-1] == next(iter(lacking))

    sent = enqueue.post("/", json={"name": QUEUE, "data": {"from": "enqueue"}}, headers={"X-API-Key": API_KEY})
    assert sent.status_code == 201
    with NodeBoss(
        url, SCHEMA, package_dir=releases.package_dir(release), supervise=False, schedule=False, migrate=False
    ) as node:
        from_node = node.call("send", QUEUE, {"from": "node"})
        body = drain.post("/", json={"budgetSeconds": 0}, headers=auth).get_json()
        assert (body["fetched"], body["completed"]) == (2, 2)
        job = node.call("getJobById", QUEUE, from_node)
        assert (job["state"], job["output"]) == ("completed", {"echo": {"from": "node"}})
        mine = node.call("getJobById", QUEUE, sent.get_json()["id"])
        assert (mine["state"], mine["output"]) == ("completed", {"echo": {"from": "enqueue"}})
