"""Per-instance state: settings, the database connection and the pg-boss client.

A Cloud Functions instance serves many requests, so each of these is created once,
on first use, and reused. ``reset`` exists for tests and for local reloads.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from shared.config import Settings
from shared.db import Database
from shared.pgboss.client import PgBoss

_lock = threading.RLock()  # re-entrant: boss() builds database() under it
_state: dict[str, Any] = {}


def settings() -> Settings:
    return _once("settings", lambda: Settings.from_environ(os.environ))


def database() -> Database:
    return _once("database", lambda: Database.from_settings(settings()))


def boss() -> PgBoss:
    return _once("boss", lambda: PgBoss(database(), settings().pgboss_schema))


def reset() -> None:
    """Forget everything; the next call builds fresh settings and a fresh connection."""
    with _lock:
        db = _state.pop("database", None)
        _state.clear()
    if db is not None:
        db.close()


def _once(key: str, build: Any) -> Any:
    value = _state.get(key)
    if value is None:
        with _lock:
            value = _state.get(key)
            if value is None:
                value = _state[key] = build()
    return value
