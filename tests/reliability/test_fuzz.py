"""Schema-driven and property-based fuzzing of enqueue, webhook and jobs over HTTP.

schemathesis turns ``openapi.yaml`` into request strategies, valid (positive) and
deliberately invalid (negative), with and without credentials; hypothesis adds raw
bodies of arbitrary bytes and arbitrary JSON. Each answer must come within seconds,
be anything but a 5xx (the database is up), and a refusal must write nothing.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from shared.db import Database
from tests.conftest import ROOT, SCHEMA
from tests.reliability.support import HOOK, KEY, add_figures, size

DOCUMENT = schemathesis.openapi.from_path(str(ROOT / "openapi.yaml"))
CREDENTIALS = {"enqueue": KEY, "jobs": KEY, "webhook": HOOK}
TIMEOUT = 10


def snapshot(db: Database) -> tuple[Any, ...]:
    """Every job's id, queue and data and every queue's name, digested by the server: taken
    twice per request, so reading the rows themselves would grow with every job the run made."""
    row = db.run(
        f"SELECT count(*) AS jobs, md5(coalesce(string_agg(concat(id, '|', name, '|', data), ',' ORDER BY id), ''))"
        f" AS digest, (SELECT string_agg(name, ',' ORDER BY name) FROM {SCHEMA}.queue) AS queues FROM {SCHEMA}.job"
    )[0]
    return row["jobs"], row["digest"], row["queues"]


@contextlib.contextmanager
def checked(db: Database, answers: Counter[int]) -> Iterator[list[int]]:
    """Record the status the block puts in its list; no 5xx, and a refusal leaves the tables alone."""
    before = snapshot(db)
    status: list[int] = []
    yield status
    [code] = status
    answers[code] += 1
    assert code < 500, f"answered {code}"
    if code >= 400:
        assert snapshot(db) == before, f"a refused request ({code}) changed the tables"


def examples(short: int, soak: int) -> Any:
    return settings(
        max_examples=size(short, soak),
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )


@pytest.mark.parametrize(("target", "method"), [("enqueue", "POST"), ("webhook", "POST"), ("jobs", "GET")])
def test_openapi_driven_requests_get_no_5xx_and_refusals_write_nothing(serve, db, target, method) -> None:
    server = serve(target)
    operation = DOCUMENT[f"/{target}"][method]
    credentials = CREDENTIALS[target]
    strategy = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE, headers=credentials),
        operation.as_strategy(GenerationMode.NEGATIVE, headers=credentials),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )
    answers: Counter[int] = Counter()

    @examples(100, 1000)
    @given(case=strategy)
    def send(case: Any) -> None:
        with checked(db, answers) as status:
            status.append(case.call(base_url=server.url.rstrip("/"), timeout=TIMEOUT).status_code)

    send()
    add_figures(f"fuzz {target} (openapi)", requests=sum(answers.values()), answers=dict(sorted(answers.items())))
    assert len(answers) > 1, answers


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
NAMES = st.sampled_from(["reliability-work", "", "x" * 300, "a/b.c-d_e", "'; --"]) | st.text(max_size=20)


@pytest.mark.parametrize("target", ["enqueue", "webhook"])
def test_arbitrary_bodies_get_no_5xx_and_refusals_write_nothing(serve, db, target) -> None:
    server = serve(target)
    credentials = CREDENTIALS[target]
    shaped = st.fixed_dictionaries(
        {"name": NAMES, "data": JSON, "type": st.sampled_from(["INSERT", "UPDATE", "DELETE", "x"])},
        optional={"options": st.dictionaries(st.sampled_from(["priority", "retryLimit", "startAfter", "id"]), JSON)},
    )
    bodies = (
        st.binary(max_size=300)
        | JSON.map(lambda value: json.dumps(value).encode())
        | shaped.map(lambda value: json.dumps(value).encode())
    )
    answers: Counter[int] = Counter()

    @examples(60, 1000)
    @given(raw=bodies)
    def send(raw: bytes) -> None:
        with checked(db, answers) as status:
            status.append(server.post(raw=raw, headers=credentials, timeout=TIMEOUT).status_code)

    send()
    add_figures(f"fuzz {target} (raw)", requests=sum(answers.values()), answers=dict(sorted(answers.items())))
    assert len(answers) > 1, answers
