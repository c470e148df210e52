"""Log lines are JSON that Cloud Logging reads, carrying the request's trace."""

from __future__ import annotations

import json
import logging

from shared import log


def test_trace_from_cloud_header_and_traceparent() -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    assert log.trace_from_headers({"X-Cloud-Trace-Context": f"{trace}/1;o=1"}, "proj") == (
        f"projects/proj/traces/{trace}"
    )
    assert log.trace_from_headers({"traceparent": f"00-{trace}-00f067aa0ba902b7-01"}, None) == trace
    assert log.trace_from_headers({"traceparent": "garbage"}, "proj") is None
    assert log.trace_from_headers({"X-Cloud-Trace-Context": "not-hex!/1"}, "proj") is None


def test_request_line_is_structured_json(client_for, capsys) -> None:
    client = client_for("health", GOOGLE_CLOUD_PROJECT="proj")
    capsys.readouterr()
    client.get("/", headers={"X-Cloud-Trace-Context": "abc123/1;o=1"})
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    entry = next(line for line in lines if line.get("function") == "health")
    assert entry["severity"] == "INFO"
    assert entry["status"] == 200
    assert entry[log.TRACE_FIELD] == "projects/proj/traces/abc123"
    assert entry["message"] == "GET health -> 200"


def test_formatter_adds_fields_and_stack() -> None:
    formatter = log.CloudLoggingFormatter()
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed %s", ("here",), sys.exc_info())
    record.fields = {"job_id": "j1"}
    with log.request_scope(outcome="x"):
        entry = json.loads(formatter.format(record))
    assert entry["severity"] == "ERROR"
    assert entry["message"] == "failed here"
    assert entry["job_id"] == "j1" and entry["outcome"] == "x"
    assert "ValueError: boom" in entry["stack_trace"]
