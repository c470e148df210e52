"""The handler registry: one handler per queue, pg-boss's option rules, the test job."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from shared.errors import ConfigError
from shared.handlers import HANDLERS, Attempt, Failed, Registry, load, sleep, stopping
from shared.handlers.echo import RequestedFailure, burn
from shared.handlers.registry import run_attempt
from shared.pgboss.models import Job, QueuePolicy


def job(data: object = None, retry_count: int = 0) -> Job:
    return Job(
        id="00000000-0000-0000-0000-000000000001",
        name="test-job",
        data=data,
        retry_count=retry_count,
        retry_limit=3,
        expire_seconds=900,
        heartbeat_seconds=None,
        started_on=None,
        group_id=None,
        group_tier=None,
        priority=0,
        singleton_key=None,
    )


def test_default_queue_options_retry_three_times_with_backoff_and_notify() -> None:
    registry = Registry()

    @registry.handler("plain")
    def plain(job: Job) -> None:
        return None

    options = registry.get("plain").options
    assert options.wire() == {"policy": "standard", "retryLimit": 3, "retryBackoff": True, "notify": True}


def test_a_handler_overrides_options_by_python_name() -> None:
    registry = Registry()
    registry.handler(
        "docs",
        retry_limit=5,
        retry_delay=10,
        expire_in_seconds=300,
        dead_letter="docs-dead",
        policy="singleton",
        heartbeat_seconds=30,
        expected_seconds=20,
    )(lambda job: None)
    handler = registry.get("docs")
    assert handler.options.retry_limit == 5
    assert handler.options.policy is QueuePolicy.SINGLETON
    assert handler.options.dead_letter == "docs-dead"
    assert handler.expected_seconds == 20


def test_registering_a_queue_twice_is_an_error() -> None:
    registry = Registry()
    registry.handler("once")(lambda job: None)
    with pytest.raises(ConfigError, match="already has a handler"):
        registry.handler("once")(lambda job: None)


@pytest.mark.parametrize(
    ("queue", "options", "message"),
    [
        ("bad name!", {}, "alphanumeric"),
        ("__pgboss__send-it", {}, "belong to pg-boss"),
        ("q", {"notify": False}, "notify on"),
        ("q", {"heartbeat_seconds": 5}, "heartbeat_seconds.*greater than or equal to 10"),
        ("q", {"retry_backoff": False, "retry_delay_max": 5}, "retryBackoff"),
        ("q", {"retry_limit": "3"}, "retry_limit"),
        ("q", {"colour": "red"}, "colour"),
    ],
)
def test_options_pg_boss_would_refuse_fail_at_registration(queue: str, options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Registry().handler(queue, **options)(lambda job: None)


def test_the_package_ships_the_test_job() -> None:
    assert "test-job" in load().names()
    assert load() is HANDLERS  # loading twice registers nothing twice


def test_test_job_echoes_fails_and_sleeps() -> None:
    handler = load().get("test-job")
    assert handler(job({"hello": 1})) == {"echo": {"hello": 1}}
    assert handler(job([1, 2])) == {"echo": [1, 2]}
    with pytest.raises(RequestedFailure, match="attempt 2"):
        handler(job({"fail": True}, retry_count=1))
    with pytest.raises(ValueError, match="sleep"):
        handler(job({"sleep": "long"}))
    started = time.monotonic()
    assert handler(job({"sleep": 0.05})) == {"echo": {"sleep": 0.05}}
    assert time.monotonic() - started >= 0.05


def test_a_sleeping_handler_returns_early_when_drain_gives_up() -> None:
    handler = load().get("test-job")
    attempt = Attempt(job({"sleep": 30}))
    threading.Timer(0.05, attempt.stop.set).start()
    started = time.monotonic()
    assert run_attempt(handler, attempt) == {"echo": {"sleep": 30}, "stopped": True}
    assert time.monotonic() - started < 5


def test_stopping_and_sleep_outside_a_drain() -> None:
    assert stopping() is False
    assert sleep(0) is False


def test_every_twin_of_the_test_job_is_shipped_with_its_model() -> None:
    registry = load()
    models = {name: registry.get(name).model for name in registry.names() if name.startswith("test-job")}
    assert models == {
        "test-job": "thread",
        "test-job-batch": "batch",
        "test-job-async": "async",
        "test-job-process": "process",
    }


def test_the_twins_answer_the_same_data_the_same_way() -> None:
    registry = load()
    jobs = [job({"hello": 1}), job({"fail": True}), job({"burn": 0.01, "n": 2})]
    assert registry.get("test-job")(jobs[0]) == {"echo": {"hello": 1}}
    assert registry.get("test-job-process")(jobs[2]) == {"echo": {"burn": 0.01, "n": 2}}
    assert asyncio.run(registry.get("test-job-async")(jobs[2])) == {"echo": {"burn": 0.01, "n": 2}}
    first, failed, third = registry.get("test-job-batch")(jobs)
    assert (first, third) == ({"echo": {"hello": 1}}, {"echo": {"burn": 0.01, "n": 2}})
    assert isinstance(failed, Failed) and isinstance(failed.error, RequestedFailure)
    with pytest.raises(RequestedFailure):
        asyncio.run(registry.get("test-job-async")(jobs[1]))
    with pytest.raises(ValueError, match="burn"):
        registry.get("test-job")(job({"burn": -1}))


def test_only_the_process_twin_accepts_hang() -> None:
    registry = load()
    with pytest.raises(ValueError, match="only for test-job-process"):
        registry.get("test-job")(job({"hang": True}))
    with pytest.raises(ValueError, match="only for test-job-process"):
        asyncio.run(registry.get("test-job-async")(job({"hang": True})))
    (refused,) = registry.get("test-job-batch")([job({"hang": True})])
    assert isinstance(refused, Failed) and "only for test-job-process" in str(refused.error)


def test_burn_spends_cpu_time_and_stops_when_drain_gives_up() -> None:
    started = time.thread_time()
    assert burn(0.05) is False
    assert time.thread_time() - started >= 0.05
    handler = load().get("test-job")
    attempt = Attempt(job({"burn": 30}))
    threading.Timer(0.05, attempt.stop.set).start()
    assert run_attempt(handler, attempt) == {"echo": {"burn": 30}, "stopped": True}
