"""``openapi.yaml`` is the contract as built: generated from the models the functions validate with."""

from __future__ import annotations

import yaml

from scripts import generate_openapi
from shared import intake, job_status, scheduling
from shared.pgboss.client import FIND_JOBS_MAX_LIMIT
from shared.pgboss.models import SendOptions

DOCUMENT = generate_openapi.OUTPUT


def committed() -> dict:
    return yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))


def test_committed_document_is_current() -> None:
    assert DOCUMENT.read_text(encoding="utf-8") == generate_openapi.render(), (
        "openapi.yaml is stale; run .venv/bin/python scripts/generate_openapi.py"
    )


def test_request_schemas_are_the_models_own() -> None:
    schemas = committed()["components"]["schemas"]
    ref = generate_openapi.REF
    for model in (intake.JobIn, intake.BatchIn, intake.DatabaseEvent, scheduling.ScheduleIn, SendOptions):
        own = model.model_json_schema(by_alias=True, ref_template=ref)
        own.pop("$defs", None)
        assert schemas[model.__name__] == own, model.__name__


def test_every_status_the_functions_answer_is_documented() -> None:
    paths = committed()["paths"]
    refusals = {"400", "401", "404", "405", "413", "415", "422", "503"}
    assert set(paths["/enqueue"]["post"]["responses"]) == {"200", "201"} | refusals
    assert set(paths["/webhook"]["post"]["responses"]) == {"200", "202"} | refusals
    assert set(paths["/jobs"]["get"]["responses"]) == {"200", "401", "404", "405", "422", "503"}
    schedules = paths["/schedules"]
    assert set(schedules["post"]["responses"]) == {"200"} | refusals
    assert set(schedules["get"]["responses"]) == {"200", "401", "405", "422", "503"}
    assert set(schedules["delete"]["responses"]) == {"200", "401", "404", "405", "422", "503"}


def test_jobs_parameters_are_the_query_models_fields() -> None:
    parameters = {p["name"]: p for p in committed()["paths"]["/jobs"]["get"]["parameters"]}
    fields = job_status.JobsQuery.model_fields
    assert set(parameters) == {field.alias or name for name, field in fields.items()}
    assert [name for name, p in parameters.items() if p["required"]] == ["queue"]
    assert parameters["ids"]["style"] == "form" and parameters["ids"]["explode"] is False
    assert parameters["data"]["content"]["application/json"]["schema"]["type"] == "object"
    assert parameters["limit"]["schema"]["maximum"] == FIND_JOBS_MAX_LIMIT


def test_the_job_answer_has_every_field_node_returns() -> None:
    """The fields of pg-boss 12.38's getJobById (its JOB_COLUMNS_ALL aliases)."""
    properties = committed()["components"]["schemas"]["JobStatus"]["properties"]
    node_fields = {
        "id", "name", "data", "retryCount", "expireInSeconds", "heartbeatSeconds", "groupId", "groupTier",
        "policy", "state", "priority", "retryLimit", "retryDelay", "retryBackoff", "retryDelayMax",
        "startAfter", "startedOn", "singletonKey", "singletonOn", "deleteAfterSeconds", "heartbeatOn",
        "createdOn", "completedOn", "keepUntil", "deadLetter", "blocked", "blocking", "pendingDependencies",
        "output", "sourceName", "sourceId", "sourceCreatedOn", "sourceRetryCount", "sourceOutput", "sourceRootId",
    }  # fmt: skip
    assert set(properties) == node_fields
    assert committed()["openapi"] == "3.1.0"
