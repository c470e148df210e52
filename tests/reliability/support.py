"""What the reliability suite's tests share: the mode, this run's credentials, the figures."""

from __future__ import annotations

import os
import secrets
from typing import Any

from shared.db import Database
from tests.conftest import SCHEMA

SOAK = os.environ.get("RELIABILITY_SOAK") == "1"

# This run's credentials: random, so that finding one in a log cannot be a coincidence.
API_KEY = "rk-" + secrets.token_hex(16)
WEBHOOK_SECRET = "rw-" + secrets.token_hex(16)
DRAIN_TOKEN = "rd-" + secrets.token_hex(16)
DRAIN = {"Authorization": f"Bearer {DRAIN_TOKEN}"}
KEY = {"X-API-Key": API_KEY}
HOOK = {"X-Webhook-Secret": WEBHOOK_SECRET}

ROUTES = {
    "routes": [
        {
            "name": "document-uploaded",
            "table": "documents",
            "events": ["INSERT"],
            "queue": "document-process",
            "data": {"documentId": "record.id", "seq": "record.seq"},
        }
    ]
}

FIGURES: dict[str, dict[str, Any]] = {}


def size(short: int, soak: int) -> int:
    return soak if SOAK else short


def add_figures(scenario: str, **figures: Any) -> None:
    """Report a scenario's figures in the run's summary table."""
    FIGURES.setdefault(scenario, {}).update(figures)


def job_states(db: Database, queue: str) -> dict[str, int]:
    rows = db.run(
        f"SELECT state::text AS state, count(*) AS n FROM {SCHEMA}.job WHERE name = :q GROUP BY 1", {"q": queue}
    )
    return {row["state"]: int(row["n"]) for row in rows}
