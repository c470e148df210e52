"""Abuse over HTTP: bad credentials, replays, forged tokens and injection attempts.

Every refusal must be a clear 4xx that writes nothing; drain must never fetch for an
unauthenticated caller; hostile strings reach PostgreSQL only as bound parameters and
come back byte for byte, or are refused with a 4xx naming the problem.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from shared import auth
from shared.db import Database
from tests.conftest import SCHEMA
from tests.drain.test_oidc import AUDIENCE, KEY_ID, SCHEDULER, CertsServer, KeyPair
from tests.reliability.support import API_KEY, DRAIN_TOKEN, HOOK, KEY, WEBHOOK_SECRET, add_figures
from tests.support.signing import sign

QUEUE = "abuse"
REFUSALS: list[int] = []


def snapshot(db: Database) -> tuple[Any, ...]:
    jobs = db.run(f"SELECT id::text, name, state::text, data::text FROM {SCHEMA}.job ORDER BY id")
    queues = db.run(f"SELECT name FROM {SCHEMA}.queue ORDER BY name")
    return tuple(tuple(row.values()) for row in jobs), tuple(row["name"] for row in queues)


@contextlib.contextmanager
def unchanged(db: Database) -> Iterator[None]:
    before = snapshot(db)
    yield
    assert snapshot(db) == before, "a refused request changed the tables"


def refused(db: Database, status: int, send: Callable[[], Any]) -> Any:
    with unchanged(db):
        answer = send()
    assert answer.status_code == status, answer.text
    assert set(answer.json()) >= {"error", "message"}
    REFUSALS.append(status)
    return answer


def variants(secret: str) -> list[str]:
    """Missing, wrong, truncated, padded and otherwise near-miss forms of ``secret``.

    Whitespace around a header value is not part of it (HTTP trims it), so a key with a
    trailing tab is the key itself and is not among them.
    """
    return [
        "",
        "wrong",
        secret[:-1],
        secret[1:],
        secret[: len(secret) // 2],
        secret + "x",
        secret + secret,
        "x" + secret,
        secret.upper(),
        secret + "\u00e9",
        secret[:-1] + chr(ord(secret[-1]) ^ 1),
        "x" * 4_000,
    ]


@pytest.fixture
def functions(serve: Callable[..., Any], db: Database) -> dict[str, Any]:
    db.run(
        f"SELECT {SCHEMA}.create_queue(:name, :options::jsonb)", {"name": QUEUE, "options": '{"policy": "standard"}'}
    )
    return {"enqueue": serve("enqueue", CREATE_MISSING_QUEUES="false"), "webhook": serve("webhook")}


def test_near_miss_credentials_are_401_and_write_nothing(functions, db) -> None:
    enqueue, webhook = functions["enqueue"], functions["webhook"]
    body = {"name": QUEUE, "data": {}}
    event = {"type": "INSERT", "table": "documents", "schema": "public", "record": {"id": 1, "seq": 1}}
    tried = 0
    for wrong in variants(API_KEY):
        for headers in ({"X-API-Key": wrong}, {"Authorization": f"Bearer {wrong}"}):
            refused(db, 401, lambda headers=headers: enqueue.post(body, headers=headers))
            tried += 1
    for wrong in variants(WEBHOOK_SECRET):
        for headers in ({"X-Webhook-Secret": wrong}, {"Authorization": f"Bearer {wrong}"}):
            refused(db, 401, lambda headers=headers: webhook.post(event, headers=headers))
            tried += 1
    refused(db, 401, lambda: enqueue.post(body))
    refused(db, 401, lambda: webhook.post(event))
    with unchanged(db):  # a header too big for the server is refused before the function runs
        assert enqueue.post(body, headers={"X-API-Key": "x" * 10_000}).status_code == 431
    # The right key in the wrong place is no key.
    refused(db, 401, lambda: enqueue.post(body, headers={"X-Webhook-Secret": API_KEY}))
    refused(db, 401, lambda: webhook.post(event, headers={"X-API-Key": WEBHOOK_SECRET}))
    assert enqueue.post(body, headers=KEY).status_code == 201
    add_figures("auth", near_miss_credentials=tried + 4)


def test_signed_webhooks_outside_the_window_are_refused(functions, db) -> None:
    webhook = functions["webhook"]
    raw = json.dumps(
        {"type": "INSERT", "table": "documents", "schema": "public", "record": {"id": 7, "seq": 7}}
    ).encode()

    def signed(stamp: int, body: bytes = raw, secret: str = WEBHOOK_SECRET) -> dict[str, str]:
        return {"X-Webhook-Timestamp": str(stamp), "X-Webhook-Signature": sign(body, secret, str(stamp))}

    now = int(time.time())
    for stamp in (now - 400, now - 86_400, now + 400, 0):
        refused(db, 401, lambda stamp=stamp: webhook.post(raw=raw, headers=signed(stamp)))
    refused(db, 401, lambda: webhook.post(raw=raw, headers=signed(now, secret=WEBHOOK_SECRET + "x")))
    tampered = raw.replace(b'"id": 7', b'"id": 8')
    refused(db, 401, lambda: webhook.post(raw=tampered, headers=signed(now)))
    headers = signed(now)
    first = webhook.post(raw=raw, headers=headers)
    assert first.status_code == 202, first.text
    with unchanged(db):  # a replay inside the window is answered as a duplicate, not a second job
        again = webhook.post(raw=raw, headers=headers)
    assert (again.status_code, again.json()["deduplicated"]) == (200, 1)


def test_drain_never_runs_for_an_unauthenticated_caller(serve, db) -> None:
    google, stranger = KeyPair(KEY_ID), KeyPair(KEY_ID)
    certs = CertsServer({google.key_id: google.certificate})
    try:
        drain = serve(
            "drain",
            DRAIN_OIDC_AUDIENCES=AUDIENCE,
            DRAIN_OIDC_SERVICE_ACCOUNTS=SCHEDULER,
            DRAIN_OIDC_CERTS_URL=certs.url,
        )
        ok = drain.post({"budgetSeconds": 0}, headers={"Authorization": f"Bearer {google.token()}"})
        assert ok.status_code == 200, ok.text
        job = db.run(f"INSERT INTO {SCHEMA}.job (name, data) VALUES ('test-job', '{{}}') RETURNING id::text AS id")[0][
            "id"
        ]
        now = int(time.time())
        tokens = [
            google.token(aud="https://someone-else.example"),
            google.token(iss="https://evil.example"),
            google.token(iat=now - 7200, exp=now - 3600),
            google.token(email="intruder@other.iam.gserviceaccount.com"),
            google.token(email_verified=False),
            stranger.token(),
            google.token()[:-3],
            google.token() + "x",
            "not.a.jwt",
        ]
        headers_tried = [{"Authorization": f"Bearer {token}"} for token in tokens]
        headers_tried += [{}, {"Authorization": f"Bearer {DRAIN_TOKEN}x"}, {"X-Serverless-Authorization": tokens[0]}]
        for headers in headers_tried:
            answer = drain.post({"budgetSeconds": 0}, headers=headers)
            assert answer.status_code == 401, (headers, answer.text)
        state = db.run(f"SELECT state::text AS s FROM {SCHEMA}.job WHERE id = :id::uuid", {"id": job})[0]["s"]
        assert state == "created", "an unauthenticated drain call fetched a job"
        add_figures("auth", refused_drain_calls=len(headers_tried))
    finally:
        certs.close()


HOSTILE = [
    "'; DROP TABLE pgboss.job; --",
    '" OR 1=1 --',
    "$1",
    ":name",
    "%s",
    "\\",
    "pgboss.job",
    "x\u2028y",
    "\U0001f600",
    "a" * 1000,
]


def test_hostile_strings_come_back_unchanged_or_are_refused(functions, db) -> None:
    enqueue = functions["enqueue"]
    stored = refused_count = 0
    for text in HOSTILE:
        data = {text: text, "nested": [text, {text: None}]}
        options = {"singletonKey": text[:1024], "id": str(uuid.uuid4())}
        answer = enqueue.post({"name": QUEUE, "data": data, "options": options}, headers=KEY)
        assert answer.status_code == 201, answer.text
        row = db.run(f"SELECT data, singleton_key FROM {SCHEMA}.job WHERE id = :id::uuid", {"id": answer.json()["id"]})[
            0
        ]
        assert (row["data"], row["singleton_key"]) == (data, options["singletonKey"])
        stored += 1
    for text in HOSTILE:  # as a queue name: 422 when pg-boss would refuse the name, else 404
        status = 404 if text in ("pgboss.job", "a" * 1000) else 422
        answer = refused(db, status, lambda text=text: enqueue.post({"name": text}, headers=KEY))
        refused_count += 1
    for raw, status in [
        (b'{"name": "abuse", "data": "a\\u0000b"}', 422),
        (b'{"name": "abuse", "data": {"a\\u0000": 1}}', 422),
        (b'{"name": "abuse", "options": {"singletonKey": "a\\u0000b"}}', 422),
        (b'{"name": "abuse\\u0000"}', 422),
        (b'{"name": "abuse", "options": {"singletonKey": "' + b"k" * 2000 + b'"}}', 422),
        (b'{"name": "' + b"q" * 5000 + b'"}', 404),
        (b'{"name": "abuse", "data": "' + b"x" * 2_000_000 + b'"}', 413),
        (b'{"name": "abuse", "data": ' + b"1" * 5000 + b"}", 400),
        (b'{"name": "abuse", "options": {"priority": 99999999999}}', 422),
    ]:
        refused(db, status, lambda raw=raw: enqueue.post(raw=raw, headers=KEY))
        refused_count += 1
    add_figures("injection", hostile_values_stored_unchanged=stored, hostile_requests_refused=refused_count)


STATEMENT_TEXT = ("LOG:  statement: ", "LOG:  execute ", "STATEMENT:  ")


def test_hostile_strings_reach_postgresql_only_as_bound_parameters(serve, db, cluster, database_url) -> None:
    """With every statement on this database logged by the server, a hostile string may show
    up in the server's log only among a statement's bound parameters, never in its text."""
    db.run(f"ALTER DATABASE \"{database_url.rsplit('/', 1)[1]}\" SET log_statement = 'all'")
    db.run(
        f"SELECT {SCHEMA}.create_queue(:name, :options::jsonb)", {"name": QUEUE, "options": '{"policy": "standard"}'}
    )
    # Started after the setting, so every connection they open logs its statements.
    enqueue, webhook = serve("enqueue", CREATE_MISSING_QUEUES="false"), serve("webhook")
    mark = uuid.uuid4().hex  # only this test's values carry it
    texts = [f"{text}{mark}" for text in HOSTILE[:7]]
    for text in texts:
        options = {"singletonKey": text, "group": {"id": text}}
        answer = enqueue.post({"name": QUEUE, "data": {text: [text]}, "options": options}, headers=KEY)
        assert answer.status_code == 201, answer.text
        lookup = enqueue.post({"name": text}, headers=KEY)  # a valid name is looked up, so sent
        assert lookup.status_code in (404, 422), lookup.text
        event = {"type": "INSERT", "table": "documents", "schema": "public", "record": {"id": text, "seq": text}}
        assert webhook.post(event, headers=HOOK).status_code == 202
    lines = cluster.logfile.read_text(errors="replace").splitlines()
    marked = [line for line in lines if mark in line]
    # A statement's text is logged as "statement: …", "execute <name>: …" or, after an error,
    # "STATEMENT: …"; its bound values as "DETAIL: Parameters: …" (and an error may quote one).
    in_text = [line for line in marked if any(tag in line for tag in STATEMENT_TEXT)]
    add_figures("injection", server_log_lines_with_hostile_values=len(marked), in_statement_text=len(in_text))
    assert len([line for line in marked if "Parameters: " in line]) >= 2 * len(texts), "no statement was logged"
    assert not in_text, in_text[:3]


def test_wrong_key_timing_does_not_depend_on_how_much_matched() -> None:
    """Interleaved rounds time a key wrong at its first character against one wrong only at
    its last; the median ratio must stay near 1. The same measurement of a plain ``==``
    comparison (the control) must find the difference, so the test can tell the two apart.
    """
    secret = "k" * 65_536
    early, late = "x" + secret[1:], secret[:-1] + "x"
    keys = [secret]

    def real(presented: str) -> bool:
        return auth.secret_matches(presented, keys)

    def naive(presented: str) -> bool:
        return presented == secret

    def median_ratio(check: Callable[[str], bool], rounds: int = 301, calls: int = 20) -> float:
        ratios = []
        for number in range(rounds):
            timings = {}
            order = (early, late) if number % 2 else (late, early)
            for presented in order:
                started = time.perf_counter_ns()
                for _ in range(calls):
                    check(presented)
                timings[presented] = time.perf_counter_ns() - started
            ratios.append(timings[late] / max(timings[early], 1))
        ratios.sort()
        return ratios[len(ratios) // 2]

    control = median_ratio(naive)
    measured = median_ratio(real)
    add_figures("timing", wrong_key_late_vs_early=round(measured, 3), plain_equality_control=round(control, 1))
    assert control > 2.0, f"the measurement cannot see a plain comparison's leak (ratio {control:.2f})"
    assert 0.8 < measured < 1.25, f"a key wrong late takes {measured:.2f}x as long as one wrong early"
