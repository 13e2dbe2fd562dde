"""The committed token-rewards contract schema is the one the response models give."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from rlmec.shared.contract import CONTRACT_VERSION, contract_schema

SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "token-rewards-contract.schema.json"


def test_the_committed_schema_is_current() -> None:
    committed = json.loads(SCHEMA.read_text())
    assert committed == contract_schema(), (
        "the response models changed: regenerate with `python -m rlmec.shared.contract > "
        "docs/token-rewards-contract.schema.json` and bump CONTRACT_VERSION (additive: minor)"
    )
    assert committed["x-contract-version"] == CONTRACT_VERSION
    jsonschema.Draft202012Validator.check_schema(committed)


def test_the_schema_accepts_fields_it_does_not_know() -> None:
    """Within a major version changes are additive: a 1.0 consumer accepts a 1.1 body."""
    body = {"results": [], "grm": {"model_id": "m", "revision": "r", "added_in_1_1": True}}
    jsonschema.validate(body, json.loads(SCHEMA.read_text()))
