"""``test-job``: the smoke-test handler of a deployment, which echoes its data back.

Send ``{"hello": 1}`` to queue ``test-job`` and the next drain completes it with
output ``{"echo": {"hello": 1}}``. In the data, ``"sleep": SECONDS`` makes the handler
wait first (returning early if drain gives up on it) and ``"fail": true`` makes it
raise, so the job is retried and finally failed as its queue says.
"""

from __future__ import annotations

from typing import Any

from shared.handlers import handler, sleep
from shared.pgboss.models import Job

QUEUE = "test-job"


class RequestedFailure(Exception):
    """Raised on purpose when a test job asks to fail."""


@handler(QUEUE)
def handle_test_job(job: Job) -> dict[str, Any]:
    data = job.data if isinstance(job.data, dict) else {}
    seconds = data.get("sleep")
    if seconds is not None:
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise ValueError('"sleep" must be a number of seconds >= 0')
        if sleep(float(seconds)):
            return {"echo": job.data, "stopped": True}
    if data.get("fail") is True:
        raise RequestedFailure(f"test job {job.id} failed on request (attempt {job.retry_count + 1})")
    return {"echo": job.data}
