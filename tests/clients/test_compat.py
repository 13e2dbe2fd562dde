"""Old clients keep working: today's SDK (and the trainer) read a response of every contract
version and of a future one; the oldest supported SDK reads today's and the future's. The
contract promises additive changes within major version 1, so readers ignore what they do
not know and keep a new reason or status as a string (docs/token-rewards-contract.md)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from rlmec.clients import Client
from rlmec.shared.schemas import TokenRewardsResponse
from tests.clients import frozen_sdk

SAVED = Path(__file__).parent / "contract"
VERSIONS = ("1.0", "1.1", "1.2", "1.3")


def saved(version: str) -> dict[str, Any]:
    return json.loads((SAVED / f"response-{version}.json").read_text())


def future() -> dict[str, Any]:
    """A 1.x body after additive changes: a field at every level, a new reason and status."""
    body = copy.deepcopy(saved("1.3"))
    body["novel_top"] = {"any": [1, 2]}
    body["grm"]["novel"] = "x"
    wrong, _, unscored = body["results"]
    for result in body["results"]:
        result["novel_field"] = {"nested": True}
        result["params"]["novel_knob"] = 3
    wrong["rewards"]["novel_per_token"] = [0.0] * len(wrong["rewards"]["values"])
    wrong["policy"]["rewards"]["novel"] = 1
    wrong["reward_spans"]["spans"][0]["novel"] = 1
    unscored["reason"] = "brand_new_reason"
    body["results"].append({**copy.deepcopy(unscored), "status": "deferred", "reason": None})
    return body


def _through_the_sdk(body: dict[str, Any]) -> TokenRewardsResponse:
    """The body as Client.token_rewards receives it over HTTP."""
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=body))
    with Client("http://reward.test", api_key="k", transport=transport, max_retries=0) as client:
        return client.token_rewards(
            [{"question": "q", "reference_solution": "r", "prediction": "p"}]
        )


@pytest.mark.parametrize("version", [*VERSIONS, "future"])
def test_todays_sdk_reads_every_version(version: str) -> None:
    body = future() if version == "future" else saved(version)
    got = _through_the_sdk(body)
    wrong, correct, unscored = got.results[:3]
    assert (wrong.status, correct.status, unscored.status) == ("scored", "scored", "unscored")
    assert wrong.rewards is not None and wrong.policy is not None and wrong.rewrite
    assert unscored.reason == body["results"][2]["reason"] and unscored.rewards is None
    if version == "future":
        assert got.results[3].status == "deferred"
        assert not hasattr(wrong, "novel_field") and wrong.params.cap == 0.5


@pytest.mark.parametrize("version", ["1.3", "future"])
def test_the_oldest_supported_sdk_reads_todays_and_future_responses(version: str) -> None:
    body = future() if version == "future" else saved(version)
    got = frozen_sdk.TokenRewardsResponse.model_validate(body)
    assert [r.status for r in got.results[:3]] == ["scored", "scored", "unscored"]
    assert got.results[0].policy is not None


def test_the_trainer_reads_a_future_scored_record_and_drops_what_is_not_scored(
    tiny_model_dir: Path,
) -> None:
    from transformers import AutoTokenizer

    from rlmec.trainer.data import PolicyEncoder, parse_record

    tok = PolicyEncoder(AutoTokenizer.from_pretrained(tiny_model_dir), max_length=4096)
    results = future()["results"]
    assert parse_record(results[0], tok) is not None  # scored: trainable, new fields ignored
    assert parse_record(results[2], tok) is None  # a new reason: unscored, dropped
    assert parse_record(results[3], tok) is None  # a new status: not scored, dropped
