"""Option validation mirrors pg-boss 12.38's attorney.js, with per-field messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from shared.pgboss.models import (
    Group,
    JobState,
    QueueOptions,
    QueuePolicy,
    SendOptions,
    check_queue_name,
    error_output,
)


def field_errors(model: type, data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return {".".join(str(part) for part in error["loc"]): error["msg"] for error in caught.value.errors()}


def test_send_options_use_pg_boss_names_and_python_attributes() -> None:
    options = SendOptions.model_validate(
        {
            "id": "6f1c1d1e-0e0e-4c4c-9a9a-123456789abc",
            "priority": 3,
            "startAfter": 30,
            "singletonKey": "k",
            "singletonSeconds": 60,
            "singletonNextSlot": True,
            "retryLimit": 4,
            "retryDelay": 5,
            "retryBackoff": True,
            "retryDelayMax": 60,
            "expireInSeconds": 120,
            "retentionSeconds": 3600,
            "deleteAfterSeconds": 0,
            "deadLetter": "dlq",
            "heartbeatSeconds": 30,
            "group": {"id": "tenant-1", "tier": "gold"},
        }
    )
    assert options.retry_delay_max == 60
    assert options.group == Group(id="tenant-1", tier="gold")
    assert SendOptions(retry_limit=1, start_after=5).wire() == {"retryLimit": 1, "startAfter": 5}


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"retryDelayMax": 5}, "retryDelayMax", "retryDelayMax can only be set if retryBackoff is true"),
        ({"retryBackoff": False, "retryDelayMax": 5}, "retryDelayMax", "retryBackoff is true"),
        ({"retryLimit": -1}, "retryLimit", "greater than or equal to 0"),
        ({"retryDelay": -1}, "retryDelay", "greater than or equal to 0"),
        ({"expireInSeconds": 0}, "expireInSeconds", "greater than or equal to 1"),
        ({"expireInSeconds": 86401}, "expireInSeconds", "less than or equal to 86400"),
        ({"retentionSeconds": 0}, "retentionSeconds", "greater than or equal to 1"),
        ({"deleteAfterSeconds": -1}, "deleteAfterSeconds", "greater than or equal to 0"),
        ({"heartbeatSeconds": 9}, "heartbeatSeconds", "greater than or equal to 10"),
        ({"singletonSeconds": 0}, "singletonSeconds", "greater than or equal to 1"),
        ({"singletonNextSlot": True}, "singletonNextSlot", "requires singletonSeconds"),
        ({"deadLetter": "no spaces"}, "deadLetter", "can only contain"),
        ({"priority": 1.5}, "priority", "valid integer"),
        ({"priority": "1"}, "priority", "valid integer"),
        ({"priority": 2**31}, "priority", "less than or equal to 2147483647"),
        ({"retryLimit": 2**31}, "retryLimit", "less than or equal to 2147483647"),
        ({"retryBackoff": "yes"}, "retryBackoff", "valid boolean"),
        ({"startAfter": -1}, "startAfter", "must be >= 0"),
        ({"startAfter": 1.5}, "startAfter", "ISO-8601"),
        ({"startAfter": "5 minutes"}, "startAfter", "ISO-8601"),
        ({"group": {"id": ""}}, "group.id", "at least 1 character"),
        ({"group": {"id": "g", "tier": ""}}, "group.tier", "at least 1 character"),
        ({"id": "not-a-uuid"}, "id", "valid UUID"),
        ({"singletonMinutes": 1}, "singletonMinutes", "Extra inputs are not permitted"),
        ({"db": {}}, "db", "Extra inputs are not permitted"),
    ],
)
def test_send_options_refuse_what_pg_boss_refuses(data: dict[str, Any], field: str, message: str) -> None:
    errors = field_errors(SendOptions, data)
    assert field in errors
    assert message in errors[field]


def test_expire_in_seconds_accepts_the_24_hour_maximum() -> None:
    assert SendOptions(expireInSeconds=86400).expire_in_seconds == 86400


def test_start_after_date_times_without_a_zone_are_utc() -> None:
    assert SendOptions(startAfter="2030-01-02T03:04:05").start_after == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert SendOptions(startAfter="2030-01-02").start_after == datetime(2030, 1, 2, tzinfo=UTC)
    zoned = SendOptions(startAfter="2030-01-02T03:04:05+05:30").start_after
    assert zoned == datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    assert SendOptions(startAfter=datetime(2030, 1, 1)).start_after == datetime(2030, 1, 1, tzinfo=UTC)


def test_queue_options_default_to_the_standard_policy_and_validate_like_jobs() -> None:
    assert QueueOptions().wire() == {"policy": "standard"}
    assert QueueOptions(policy="key_strict_fifo", partition=True).policy is QueuePolicy.KEY_STRICT_FIFO
    assert "policy" in field_errors(QueueOptions, {"policy": "fifo"})
    assert "warningQueueSize" in field_errors(QueueOptions, {"warningQueueSize": 0})
    assert "retryDelayMax" in field_errors(QueueOptions, {"retryDelayMax": 1})
    assert "notify" in field_errors(QueueOptions, {"notify": "true"})


def test_queue_names_follow_pg_boss_rule() -> None:
    for name in ("q", "a.b-c/d_e", "__pgboss__send-it"):
        assert check_queue_name(name) == name
    for name in ("", "a b", "é", "a;b", "a\n"):
        with pytest.raises(ValueError, match="can only contain"):
            check_queue_name(name)


def test_job_states_sort_like_the_enum_in_postgres() -> None:
    assert [state.value for state in JobState] == [
        "created",
        "retry",
        "active",
        "completed",
        "cancelled",
        "failed",
    ]


def test_error_output_has_pg_boss_shape() -> None:
    try:
        raise KeyError("missing")
    except KeyError as error:
        output = error_output(error)
    assert output is not None
    assert output["name"] == "KeyError"
    assert output["message"] == "'missing'"
    assert "Traceback" in output["stack"] and "KeyError" in output["stack"]
    assert error_output({"code": 7}) == {"code": 7}
    assert error_output("boom") == {"value": "boom"}
    assert error_output([1, 2]) == {"value": [1, 2]}
    assert error_output(0) == {"value": 0}
    assert error_output(None) is None
