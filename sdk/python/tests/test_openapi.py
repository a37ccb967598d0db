"""The SDK's models against the OpenAPI document the server serves: every field a model reads is
a property of its schema, and every required property is read, so neither side can change
without this failing. (Request bodies are checked against the same document after every test:
see conftest.check_request_bodies.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from aitbc_agent import models
from aitbc_agent.provider import PERIOD

MODELS = [models.Listing, models.ListingStatus, models.Earnings, models.Receipt, models.Job, models.Quote, models.Balance, models.Balances, models.Contract, models.Reservation, models.Analytics, models.Monitoring, models.Suggestion, models.Sharing, models.Signal]
REPO = Path(__file__).resolve().parents[3]


def properties(doc: dict[str, Any], name: str) -> tuple[set[str], set[str]]:
    """A schema's properties and required ones, through allOf and $ref."""
    schema = doc["components"]["schemas"][name]
    props: set[str] = set(schema.get("properties", {}))
    required: set[str] = set(schema.get("required", []))
    for part in schema.get("allOf", []):
        if "$ref" in part:
            p, r = properties(doc, part["$ref"].rsplit("/", 1)[1])
        else:
            p, r = set(part.get("properties", {})), set(part.get("required", []))
        props |= p
        required |= r
    return props, required


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_models_match_the_served_schemas(model: type[models.WireModel], openapi: dict[str, Any]) -> None:
    props, required = properties(openapi, model.SCHEMA)
    fields = set(model.wire_fields())
    assert fields - props == set(), f"{model.__name__} reads fields {model.SCHEMA} does not have"
    assert required - fields == set(), f"{model.__name__} does not read required {model.SCHEMA} fields"



def test_the_earnings_period_pattern_is_the_servers(openapi: dict[str, Any]) -> None:
    params = openapi["paths"]["/v1/listings/{gpu_id}/earnings"]["get"]["parameters"]
    period = next(p for p in params if p["name"] == "period")
    assert period["schema"]["pattern"] == PERIOD.pattern


def test_the_body_check_catches_a_drifted_body(openapi: dict[str, Any]) -> None:
    # The conftest's check, on a body the server would refuse: it must fail.
    schema = openapi["paths"]["/v1/listings"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    validator = jsonschema.Draft202012Validator({**schema, "components": openapi["components"]})
    assert list(validator.iter_errors({"name": "x", "memory_gib": 24, "cuda_version": "12.1", "base_price": 0.1, "region": "us-west"}))
    assert not list(validator.iter_errors({"name": "x", "memory_gib": 24, "cuda_version": "12.1", "base_price": "0.1", "region": "us-west"}))
