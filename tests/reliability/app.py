"""The drain servers of the suite: ``main.py``'s functions plus a handler that records each run.

functions-framework serves this file (``--source``) exactly as it serves ``main.py``; the
only addition is the ``reliability-work`` handler. Every run of it writes a row to
``executions`` on a connection of its own, before and after the work, so the suite can
count runs per job and tell a re-run after a crash from a true duplicate. A job's data
steers it: ``{"ms": N}`` works N milliseconds, ``{"fail": true}`` raises, and
``{"crash": POINT}`` kills this server's whole process group on the job's first attempt:
``fetched`` (claimed, nothing run), ``inside`` (mid-work) or ``after`` (the handler
returned; the kill lands while drain settles it).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import uuid
from typing import Any

from main import drain, enqueue, health, jobs, ready, webhook
from shared.db import Database
from shared.handlers import HANDLERS, sleep
from shared.pgboss.models import Job

__all__ = ["drain", "enqueue", "health", "jobs", "ready", "webhook"]

QUEUE = "reliability-work"
RETRY_LIMIT = 4
EXPIRE_SECONDS = 3

EXECUTIONS_DDL = """
CREATE TABLE IF NOT EXISTS executions (
    run uuid PRIMARY KEY,
    job_id uuid NOT NULL,
    retry_count int NOT NULL,
    pgid int NOT NULL,
    outcome text,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz
)
"""

_recorder: Database | None = None
_lock = threading.Lock()


class PlannedFailure(Exception):
    """A job that asked to fail."""


def _record() -> Database:
    global _recorder
    with _lock:
        if _recorder is None:
            _recorder = Database(os.environ["DATABASE_URL"], statement_timeout_ms=0)
        return _recorder


def _die() -> None:
    os.killpg(os.getpgid(0), signal.SIGKILL)


@HANDLERS.handler(QUEUE, retry_limit=RETRY_LIMIT, retry_delay=0, retry_backoff=False, expire_in_seconds=EXPIRE_SECONDS)
def work(job: Job) -> dict[str, Any]:
    data = job.data if isinstance(job.data, dict) else {}
    crash = data.get("crash") if job.retry_count == 0 else None
    if crash == "fetched":
        _die()
    run = str(uuid.uuid4())
    _record().run(
        "INSERT INTO executions (run, job_id, retry_count, pgid) VALUES (:run::uuid, :job::uuid, :retry, :pgid)",
        {"run": run, "job": job.id, "retry": job.retry_count, "pgid": os.getpgid(0)},
    )
    if crash == "inside":
        _die()
    sleep(float(data.get("ms", 0)) / 1000)
    outcome = "fail" if data.get("fail") else "ok"
    _record().run(
        "UPDATE executions SET outcome = :outcome, finished_at = clock_timestamp() WHERE run = :run::uuid",
        {"run": run, "outcome": outcome},
    )
    if outcome == "fail":
        raise PlannedFailure(f"job {job.id} fails on purpose")
    if crash == "after":
        threading.Timer(random.uniform(0, 0.02), _die).start()
    return {"run": run}
