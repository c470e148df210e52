"""``openapi.yaml`` is the contract as built: generated from the models the functions validate with."""

from __future__ import annotations

import yaml

from scripts import generate_openapi
from shared import intake
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
    for model in (intake.JobIn, intake.BatchIn, intake.DatabaseEvent, SendOptions):
        own = model.model_json_schema(by_alias=True, ref_template=ref)
        own.pop("$defs", None)
        assert schemas[model.__name__] == own, model.__name__


def test_every_status_the_functions_answer_is_documented() -> None:
    paths = committed()["paths"]
    refusals = {"400", "401", "404", "405", "413", "415", "422", "503"}
    assert set(paths["/enqueue"]["post"]["responses"]) == {"200", "201"} | refusals
    assert set(paths["/webhook"]["post"]["responses"]) == {"200", "202"} | refusals
    assert committed()["openapi"] == "3.1.0"
