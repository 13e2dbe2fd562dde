"""A bounded schemathesis run against both services on loopback (real GRM on the tiny model,
real Redis, a team key): no input the OpenAPI documents allow may give a 5xx or an answer
that violates the documented schema."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.services.reward.conftest import auth

pytestmark = pytest.mark.integration

CHECKS = [not_a_server_error, response_schema_conformance]
FUZZ = settings(
    max_examples=15,
    deadline=None,
    derandomize=True,  # the same cases on every CI run
    suppress_health_check=list(HealthCheck),
)


def fuzz(base_url: str, headers: dict[str, str] | None = None) -> dict[str, int]:
    """Run every operation of the service's OpenAPI document; returns the cases run per
    operation.
    (schemathesis' own pytest plugin does not run under pytest 9, so the strategies are
    driven by hypothesis directly.)"""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    ran: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        _fuzz_operation(operation, base_url, headers, ran)
    return ran


def _fuzz_operation(
    operation: Any, base_url: str, headers: dict[str, str] | None, ran: dict[str, int]
) -> None:
    label = operation.label

    @FUZZ
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS, timeout=120)
        ran[label] = ran.get(label, 0) + 1

    run()


def test_reward_service_never_5xx(reward_app: tuple[FastAPI, str]) -> None:
    ran = fuzz(reward_app[1], auth("alpha"))
    assert ran["POST /v1/token-rewards"] >= 10 and ran["POST /get_reward"] >= 10


def test_grm_service_never_5xx(grm_url: str) -> None:
    ran = fuzz(grm_url)
    assert all(ran[op] >= 10 for op in ("POST /v1/score", "POST /v1/rewrite", "POST /v1/tokenize"))
