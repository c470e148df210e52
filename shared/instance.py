"""Per-instance state: settings, the routes table, the database connection and the pg-boss client.

A Cloud Functions instance serves many requests, so each of these is created once,
on first use, and reused. ``reset`` exists for tests and for local reloads.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from shared.config import Settings
from shared.db import Database
from shared.drain.queues import HandlerQueues
from shared.pgboss.client import PgBoss
from shared.webhook_routes import WebhookRoutes, routes_table

_lock = threading.RLock()  # re-entrant: boss() builds database() under it
_state: dict[str, Any] = {}


def settings() -> Settings:
    return _once("settings", lambda: Settings.from_environ(os.environ))


def webhook_routes() -> WebhookRoutes | None:
    """The webhook's routes table (None when no route is configured), parsed once."""
    return _once("webhook_routes", lambda: routes_table(settings()))


def database() -> Database:
    return _once("database", lambda: Database.from_settings(settings()))


def boss() -> PgBoss:
    return _once("boss", lambda: PgBoss(database(), settings().pgboss_schema))


def handler_queues() -> HandlerQueues:
    """drain's record of the handlers' queues this instance has created."""
    return _once("handler_queues", lambda: HandlerQueues(boss()))


def reset() -> None:
    """Forget everything; the next call builds fresh settings and a fresh connection."""
    with _lock:
        db = _state.pop("database", None)
        _state.clear()
    if db is not None:
        db.close()


def _once(key: str, build: Any) -> Any:
    if key not in _state:
        with _lock:
            if key not in _state:
                _state[key] = build()
    return _state[key]
