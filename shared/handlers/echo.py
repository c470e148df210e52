"""``test-job`` and its twins, one per handler model: the smoke tests of a deployment, which echo their data back.

Send ``{"hello": 1}`` to queue ``test-job`` and the next drain completes it with output
``{"echo": {"hello": 1}}``. The twins ``test-job-batch``, ``test-job-async`` and
``test-job-process`` answer the same data the same way, each run as its name says, so
every model can be checked after a deploy and benchmarked. In the data:

* ``"sleep": SECONDS`` waits first (returning early if drain gives up on it);
* ``"burn": SECONDS`` keeps a CPU busy for that much CPU time first (a pure-Python
  loop, looking for drain giving up as it goes);
* ``"fail": true`` raises, so the job is retried and finally failed as its queue says;
* ``"hang": true`` (``test-job-process`` only) keeps a CPU busy for ever, heeding
  nothing, as a stuck parser would; only killing its worker process ends it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from shared.handlers import Failed, handler, sleep, sleep_async, stopping
from shared.pgboss.models import Job

QUEUE = "test-job"
BATCH_QUEUE = "test-job-batch"
ASYNC_QUEUE = "test-job-async"
PROCESS_QUEUE = "test-job-process"


class RequestedFailure(Exception):
    """Raised on purpose when a test job asks to fail."""


def _data(job: Job) -> dict[str, Any]:
    return job.data if isinstance(job.data, dict) else {}


def _seconds(data: dict[str, Any], name: str) -> float:
    value = data.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f'"{name}" must be a number of seconds >= 0')
    return float(value)


def _refuse_hang(data: dict[str, Any]) -> None:
    if data.get("hang") is True:
        raise ValueError(f'"hang" is only for {PROCESS_QUEUE}, where a stuck handler can be killed')


def burn(seconds: float) -> bool:
    """Spend ``seconds`` of this thread's CPU time in Python; True when drain gave up first.

    CPU time, not wall time: threads taking turns on the GIL each burn their full share.
    """
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        if stopping():
            return True
        _spin()
    return False


def _spin() -> None:
    total = 0
    for n in range(2_000):
        total += n * n


def _answer(job: Job) -> dict[str, Any]:
    if _data(job).get("fail") is True:
        raise RequestedFailure(f"test job {job.id} failed on request (attempt {job.retry_count + 1})")
    return {"echo": job.data}


def _run_one(job: Job) -> dict[str, Any]:
    """The data contract on a thread: sleep, burn, then answer."""
    data = _data(job)
    _refuse_hang(data)
    sleep_seconds, burn_seconds = _seconds(data, "sleep"), _seconds(data, "burn")
    if (sleep_seconds and sleep(sleep_seconds)) or (burn_seconds and burn(burn_seconds)):
        return {"echo": job.data, "stopped": True}
    return _answer(job)


@handler(QUEUE)
def handle_test_job(job: Job) -> dict[str, Any]:
    return _run_one(job)


@handler(BATCH_QUEUE, model="batch", batch_size=500)
def handle_test_job_batch(jobs: list[Job]) -> list[Any]:
    """Each job of the batch in turn; a job that fails fails alone."""
    outputs: list[Any] = []
    for job in jobs:
        try:
            outputs.append(_run_one(job))
        except Exception as exc:
            outputs.append(Failed(exc))
    return outputs


@handler(ASYNC_QUEUE, model="async")
async def handle_test_job_async(job: Job) -> dict[str, Any]:
    data = _data(job)
    _refuse_hang(data)
    sleep_seconds, burn_seconds = _seconds(data, "sleep"), _seconds(data, "burn")
    if sleep_seconds and await sleep_async(sleep_seconds):
        return {"echo": job.data, "stopped": True}
    end = time.thread_time() + burn_seconds
    while time.thread_time() < end:  # in slices, so the other tasks (and a cancel) get their turn
        if burn(min(0.01, end - time.thread_time())):
            return {"echo": job.data, "stopped": True}
        await asyncio.sleep(0)
    return _answer(job)


@handler(PROCESS_QUEUE, model="process")
def handle_test_job_process(job: Job) -> dict[str, Any]:
    if _data(job).get("hang") is True:
        while True:
            _spin()
    return _run_one(job)
