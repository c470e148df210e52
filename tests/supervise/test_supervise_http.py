"""The supervise function: authenticated like drain, answers with what each pass did."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask.testing import FlaskClient

from shared.config import SUPERVISION_PASSES
from shared.db import Database
from tests.conftest import DRAIN_TOKEN

pytestmark = pytest.mark.since(46, "12.38's version of every pass")


def test_supervise_needs_drains_caller_and_reports_each_pass(
    client_for: Callable[..., FlaskClient], db: Database
) -> None:
    client = client_for("supervise", SUPERVISE_BUDGET_SECONDS="0")
    assert client.post("/").status_code == 401
    assert client.post("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/", headers={"Authorization": f"Bearer {DRAIN_TOKEN}"}).status_code == 405

    answer = client.post("/", headers={"Authorization": f"Bearer {DRAIN_TOKEN}"})
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["rounds"] == 1
    assert set(body) == {*SUPERVISION_PASSES, "rounds"}
    again = client.post("/", headers={"Authorization": f"Bearer {DRAIN_TOKEN}"}).get_json()
    assert again["flows"] == {"skipped": "claimed elsewhere or not due"}
    assert db.run("SELECT flow_on IS NOT NULL AS claimed, cron_on IS NOT NULL AS cron FROM pgboss.version") == [
        {"claimed": True, "cron": True}
    ]


def test_passes_can_be_turned_off(client_for: Callable[..., FlaskClient], db: Database) -> None:
    client = client_for("supervise", SUPERVISE_BUDGET_SECONDS="0", SUPERVISE_PASSES="none")
    body = client.post("/", headers={"Authorization": f"Bearer {DRAIN_TOKEN}"}).get_json()
    assert all(body[name] == {"skipped": "turned off"} for name in SUPERVISION_PASSES)
    assert db.run("SELECT flow_on, cron_on FROM pgboss.version") == [{"flow_on": None, "cron_on": None}]
