"""The service's responses hold to the published contract (docs/token-rewards-contract.md):
scored wrong and correct samples with the policy projection, and an unscored one."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import jsonschema
import pytest

from tests.services.reward.conftest import CORRECT, WRONG, auth, sample

pytestmark = pytest.mark.integration
SCHEMA = Path(__file__).resolve().parents[3] / "docs" / "token-rewards-contract.schema.json"


def test_responses_validate_against_the_committed_schema(client: httpx.Client) -> None:
    no_answer = sample("I do not know.", reference_solution="no final answer here")
    body = {"samples": [sample(WRONG), sample(CORRECT), no_answer], "policy_tokenizer": "tiny"}
    resp = client.post("/v1/token-rewards", json=body, headers=auth("alpha"))
    assert resp.status_code == 200, resp.text
    payload = resp.json()
    jsonschema.validate(payload, json.loads(SCHEMA.read_text()))
    wrong, correct, unscored = payload["results"]
    assert correct["status"] == "scored"
    # Alignment: the policy's response ids, EOS last, one value each.
    for result in (wrong, correct):
        if result["status"] == "scored":
            rewards = result["policy"]["rewards"]
            assert len(rewards["token_ids"]) == len(rewards["values"])
            assert rewards["offsets"][-1] == [len(result["prediction"])] * 2  # EOS
    assert unscored["status"] == "unscored" and unscored["reason"] == "no_reference_answer"
    assert unscored["rewards"] is None and unscored["policy"] is None


def test_the_oldest_supported_sdk_reads_todays_responses(client: httpx.Client) -> None:
    from tests.clients import frozen_sdk

    body = {"samples": [sample(WRONG), sample(CORRECT)], "policy_tokenizer": "tiny"}
    resp = client.post("/v1/token-rewards", json=body, headers=auth("alpha"))
    assert resp.status_code == 200, resp.text
    got = frozen_sdk.TokenRewardsResponse.model_validate(resp.json())
    assert [r.correct for r in got.results] == [False, True]
    assert all(r.status in ("scored", "unscored") for r in got.results)
    assert got.results[1].policy is not None and got.results[1].rewards is not None
