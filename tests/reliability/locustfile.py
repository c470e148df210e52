"""Load for enqueue and webhook, run by locust in a process of its own (see test_load.py).

Every request carries a sequence number unique in the run, so the test can count the
jobs in the table against the requests locust saw accepted. Each user stops after
``LOAD_REQUESTS_PER_USER`` requests; locust's ``--run-time`` bounds the time.
"""

from __future__ import annotations

import itertools
import json
import os

from locust import FastHttpUser, task
from locust.exception import StopUser

REQUESTS_PER_USER = int(os.environ["LOAD_REQUESTS_PER_USER"])
_sequence = itertools.count()
_prefix = os.getpid()


def _next() -> str:
    return f"{_prefix}-{next(_sequence)}"


class Bounded(FastHttpUser):
    abstract = True

    def on_start(self) -> None:
        self.sent = 0

    def _post(self, name: str, body: dict, headers: dict[str, str], accepted: int) -> None:
        if self.sent >= REQUESTS_PER_USER:
            raise StopUser()
        self.sent += 1
        headers = {"Content-Type": "application/json", **headers}
        with self.client.post("/", data=json.dumps(body), headers=headers, name=name, catch_response=True) as answer:
            if answer.status_code == accepted:
                answer.success()
            else:
                answer.failure(f"status {answer.status_code}")


class Enqueue(Bounded):
    host = os.environ["LOAD_ENQUEUE_URL"]

    @task
    def enqueue(self) -> None:
        body = {"name": os.environ["LOAD_QUEUE"], "data": {"seq": _next()}}
        self._post("enqueue", body, {"X-API-Key": os.environ["LOAD_API_KEY"]}, 201)


class Webhook(Bounded):
    host = os.environ["LOAD_WEBHOOK_URL"]

    @task
    def webhook(self) -> None:
        seq = _next()
        event = {"type": "INSERT", "table": "documents", "schema": "public", "record": {"id": seq, "seq": seq}}
        self._post("webhook", event, {"X-Webhook-Secret": os.environ["LOAD_WEBHOOK_SECRET"]}, 202)
