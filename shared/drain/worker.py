"""What runs inside a worker process: a handler found by module and name, run on jobs sent as JSON.

The parent starts ``python -c`` with this module's ``main`` and its own ``sys.path``, which
replaces the worker's, so a worker imports exactly the code the instance runs, from the
same places in the same order, and nothing of the parent's state.
Requests arrive on stdin and answers leave on the original stdout, one JSON document
per line; the handler's own ``print`` goes to stderr, the instance's log.

Requests: ``{"kind": "check"|"run", "module", "name", "job"}``. Answers: ``{"ok": output}``,
``{"failed": {name, message, stack}}`` (pg-boss's error shape) or, for a handler the
worker cannot load, ``{"refused": why}``. Only JSON crosses the boundary, as it does the
database's.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, fields
from datetime import datetime
from typing import IO, Any

from shared.drain.failures import HandlerOutputInvalid
from shared.handlers.registry import locate
from shared.pgboss.models import Job, error_output

# How the parent starts a worker: the parent's sys.path, then this module's main().
BOOT = "import json, sys; sys.path[:] = json.loads(sys.argv[1]); from shared.drain.worker import main; main()"


def encode_job(job: Job) -> dict[str, Any]:
    values = asdict(job)
    if job.started_on is not None:
        values["started_on"] = job.started_on.isoformat()
    return values


def decode_job(values: dict[str, Any]) -> Job:
    if values.get("started_on") is not None:
        values = {**values, "started_on": datetime.fromisoformat(values["started_on"])}
    return Job(**{field.name: values[field.name] for field in fields(Job)})


def main() -> None:
    """The worker's life: answer each request until the parent goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    threading.Thread(target=_exit_with, args=(os.getppid(),), name="parent-watch", daemon=True).start()
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # what handlers print goes to stderr, not into the answers
    for line in sys.stdin:
        _answer(answers, _handle(json.loads(line)))


def _exit_with(parent: int) -> None:
    """End this process when its parent has gone, even while a handler is stuck in a loop."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


_functions: dict[tuple[str, str], Callable[..., Any]] = {}


def _handle(request: dict[str, Any]) -> dict[str, Any]:
    where = (request["module"], request["name"])
    function = _functions.get(where)
    if function is None:
        try:
            function = _functions[where] = locate(*where)
        except BaseException as exc:
            return {"refused": f"{type(exc).__name__}: {exc}"}
    if request["kind"] == "check":
        return {"ok": None}
    try:
        output = function(decode_job(request["job"]))
    except BaseException as exc:  # a handler's failure, whatever it is, is the job's failure
        return {"failed": error_output(exc)}
    return {"ok": output}


def _answer(answers: IO[str], answer: dict[str, Any]) -> None:
    try:
        line = json.dumps(answer, allow_nan=False)
    except (TypeError, ValueError) as exc:
        line = json.dumps(
            {"failed": error_output(HandlerOutputInvalid(f"handler output cannot be stored as JSON: {exc}"))}
        )
    answers.write(line + "\n")
    answers.flush()
