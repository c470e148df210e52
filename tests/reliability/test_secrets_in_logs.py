"""No configured secret ever appears in a log line or an answer.

The run's credentials and the database password are random per run, so finding one
cannot be a coincidence. This test sends its own mix of accepted, refused and failing
calls, then searches every line every server of the run has printed so far (this
module sorts last, so that includes the other modules' crashes, faults and fuzzing)
and every answer body it got.
"""

from __future__ import annotations

import time

from tests.reliability import app
from tests.reliability.support import API_KEY, DRAIN, DRAIN_TOKEN, HOOK, KEY, WEBHOOK_SECRET, add_figures
from tests.support.signing import sign


def test_no_secret_in_any_log_line_or_answer(serve, db, cluster, log_dir) -> None:
    enqueue, webhook, drain = serve("enqueue"), serve("webhook"), serve("drain")
    unreachable = cluster.url("postgres").replace(f":{cluster.port}/", ":1/")
    down = serve("enqueue", url=unreachable)
    wrong_password = serve("enqueue", url=cluster.url("postgres").replace(cluster.password, cluster.password + "x"))
    event = {"type": "INSERT", "table": "documents", "schema": "public", "record": {"id": 3, "seq": 3}}
    raw = b'{"type": "INSERT", "table": "documents", "schema": "public", "record": {"id": 4}}'
    stamp = str(int(time.time()) - 3600)
    answers = [
        enqueue.post({"name": app.QUEUE, "data": {"fail": True}}, headers=KEY),
        enqueue.post({"name": app.QUEUE}, headers={"X-API-Key": API_KEY[:-1]}),
        enqueue.post({"name": app.QUEUE, "options": {"nope": API_KEY}}, headers=KEY),
        enqueue.post(raw=API_KEY.encode(), headers=KEY),
        down.post({"name": app.QUEUE}, headers=KEY),
        wrong_password.post({"name": app.QUEUE}, headers=KEY),
        webhook.post(event, headers=HOOK),
        webhook.post(event, headers={"X-Webhook-Secret": WEBHOOK_SECRET + "x"}),
        webhook.post(raw=raw, headers={"X-Webhook-Timestamp": stamp, "X-Webhook-Signature": sign(raw, "x")}),
        drain.post({"queues": [app.QUEUE], "budgetSeconds": 0}, headers=DRAIN),
        drain.post({"budgetSeconds": 0}, headers={"Authorization": f"Bearer {DRAIN_TOKEN}x"}),
        drain.post({"queues": ["no-such-queue"]}, headers=DRAIN),
    ]
    statuses = sorted(answer.status_code for answer in answers)
    assert {201, 401, 422, 503, 200} <= set(statuses), statuses
    for function in (enqueue, webhook, drain, down, wrong_password):
        function.close()
    secrets = {"API_KEYS": API_KEY, "WEBHOOK_SECRET": WEBHOOK_SECRET, "DRAIN_TOKEN": DRAIN_TOKEN}
    secrets["database password"] = cluster.password
    lines = [line for path in sorted(log_dir.iterdir()) for line in path.read_text(errors="replace").splitlines()]
    found = [(name, line[:200]) for line in lines for name, secret in secrets.items() if secret in line]
    found += [
        (name, answer.text[:200]) for answer in answers for name, secret in secrets.items() if secret in answer.text
    ]
    add_figures("secrets", log_lines_searched=len(lines), answers_searched=len(answers), secrets_found=len(found))
    assert not found, found
    assert len(lines) > len(answers)
