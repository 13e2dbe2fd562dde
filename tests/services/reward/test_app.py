"""The reward service end to end: real GRM service (tiny model) and real Redis on loopback."""

from __future__ import annotations

import math
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from rlmec.shared.alignment import imitation_weights
from rlmec.shared.grm_schemas import ScoreResponse
from rlmec.shared.prompts import scoring_prompt
from rlmec.shared.rewards import token_rewards
from rlmec.shared.schemas import RewardParams, TokenRewardsResponse
from rlmec.shared.spans import project
from tests.services.reward.conftest import (
    CORRECT,
    QUESTION,
    REFERENCE,
    REWRITE,
    WRONG,
    auth,
    sample,
)

pytestmark = pytest.mark.integration


def grm_score(grm_url: str, prediction: str) -> ScoreResponse:
    body = {"mode": "rlmec", "samples": [sample(prediction)], "add_eos": True}
    resp = httpx.post(f"{grm_url}/v1/score", json=body, timeout=60)
    assert resp.status_code == 200, resp.text
    return ScoreResponse.model_validate(resp.json())


def grm_tokens(grm_url: str, output: str) -> list[int]:
    item = {"prompt": scoring_prompt(QUESTION, REFERENCE, WRONG), "output": output}
    resp = httpx.post(f"{grm_url}/v1/score", json={"mode": "raw", "items": [item]}, timeout=60)
    assert resp.status_code == 200, resp.text
    return ScoreResponse.model_validate(resp.json()).results[0].token_ids


def score(client: httpx.Client, *samples: dict[str, object], **extra: object) -> httpx.Response:
    return client.post(
        "/v1/token-rewards", headers=auth("alpha"), json={"samples": list(samples), **extra}
    )


def test_correct_prediction_values_match_grm_logprobs(client: httpx.Client, grm_url: str) -> None:
    params = {"threshold": 0.4, "floor": -0.2, "cap": 0.3}
    resp = score(client, sample(CORRECT, id="c1", metadata={"k": 1}), params=params)
    assert resp.status_code == 200, resp.text
    body = TokenRewardsResponse.model_validate(resp.json())
    result = body.results[0]
    assert (result.status, result.correct, result.id, result.metadata) == (
        "scored", True, "c1", {"k": 1},
    )  # fmt: skip
    assert result.predicted_answer == result.reference_answer == "72"
    assert result.regular_sequence == CORRECT and not result.cached
    grm = grm_score(grm_url, CORRECT).results[0]
    expected = token_rewards(grm.logprobs, correct=True, params=RewardParams(**params))
    assert result.rewards is not None and result.imitation_weights is not None
    assert result.rewards.token_ids == grm.token_ids
    assert result.rewards.offsets == grm.offsets
    assert result.rewards.values == pytest.approx(expected, abs=1e-6)
    assert all(0.0 <= v <= 0.3 for v in result.rewards.values)
    assert result.imitation_weights.values == [0.5] * len(grm.token_ids)
    assert result.reward_spans is not None and result.reward_spans.eos == result.rewards.values[-1]
    assert body.grm.model_id and result.grm == body.grm


def test_wrong_prediction_with_given_rewrite(client: httpx.Client, grm_url: str) -> None:
    resp = score(client, sample(WRONG, rewrite=REWRITE))
    assert resp.status_code == 200, resp.text
    result = TokenRewardsResponse.model_validate(resp.json()).results[0]
    assert (result.status, result.correct, result.predicted_answer) == ("scored", False, "144")
    assert result.rewrite == result.regular_sequence == REWRITE
    grm = grm_score(grm_url, WRONG).results[0]
    expected = [min(max(math.exp(lp) - 0.5, -0.1), 0.0) for lp in grm.logprobs]
    assert result.rewards is not None and result.imitation_weights is not None
    assert result.rewards.values == pytest.approx(expected, abs=1e-6)
    rewrite_ids = grm_tokens(grm_url, REWRITE)
    assert result.imitation_weights.token_ids == rewrite_ids
    assert result.imitation_weights.values == imitation_weights(grm.token_ids, rewrite_ids)
    assert 1.0 in result.imitation_weights.values and 0.5 in result.imitation_weights.values


def test_a_rewrite_through_a_false_equation_is_not_taught(client: httpx.Client) -> None:
    false = "Natalia sold 48/2 = 26 clips in May.\nShe sold 48+24 = 72 clips.\nThe answer is: 72"
    resp = score(client, sample(WRONG, id="f", rewrite=false), sample(WRONG, rewrite=REWRITE))
    assert resp.status_code == 200, resp.text
    bad, good = TokenRewardsResponse.model_validate(resp.json()).results
    assert (bad.status, bad.reason, bad.rewards) == ("unscored", "rewrite_false_equation", None)
    assert "48/2 = 26" in (bad.message or "") and bad.rewrite == false
    assert good.status == "scored" and good.params is not None and good.params.check_equations
    off = score(client, sample(WRONG, rewrite=false), params={"check_equations": False})
    assert off.json()["results"][0]["status"] == "scored"


def test_grm_rewrite_missing_reference_is_unscored(client: httpx.Client) -> None:
    """The tiny random GRM never writes a correct solution: reported, not dropped."""
    resp = score(client, sample(WRONG, id="w"), sample(CORRECT, id="c"))
    assert resp.status_code == 200, resp.text
    wrong, correct = TokenRewardsResponse.model_validate(resp.json()).results
    assert (wrong.id, wrong.status, wrong.reason) == ("w", "unscored", "rewrite_incorrect")
    assert wrong.rewrite is not None and wrong.located_step is not None
    assert wrong.rewards is None and "reference answer '72'" in (wrong.message or "")
    assert (correct.id, correct.status) == ("c", "scored")


def test_no_reference_answer_is_unscored(client: httpx.Client) -> None:
    resp = score(client, {**sample(CORRECT), "reference_solution": "Count them."})
    assert resp.status_code == 200, resp.text
    result = resp.json()["results"][0]
    assert (result["status"], result["reason"]) == ("unscored", "no_reference_answer")


def test_policy_projection_same_tokenizer_is_identity(client: httpx.Client) -> None:
    resp = score(client, sample(WRONG, rewrite=REWRITE), policy_tokenizer="tiny")
    assert resp.status_code == 200, resp.text
    result = TokenRewardsResponse.model_validate(resp.json()).results[0]
    assert result.policy is not None and result.rewards is not None
    assert result.imitation_weights is not None and result.reward_spans is not None
    assert result.policy.tokenizer == "tiny"
    assert result.policy.rewards.token_ids == result.rewards.token_ids
    assert result.policy.rewards.values == result.rewards.values
    assert result.policy.imitation_weights.values == result.imitation_weights.values
    offsets = result.policy.rewards.offsets[:-1]
    assert project(result.reward_spans, offsets) == result.policy.rewards.values


def test_chat_markup_fails_its_sample_only(client: httpx.Client) -> None:
    """A prediction ending in <|im_end|> or a chat-templated question is refused with the fix,
    never scored as solution text; the plain sample of the batch is scored."""
    resp = score(
        client,
        {**sample(CORRECT + "<|im_end|>"), "id": "end"},
        {**sample(CORRECT), "id": "q", "question": f"<|im_start|>user\n{QUESTION}<|im_end|>"},
        {**sample(CORRECT), "id": "plain"},
    )
    assert resp.status_code == 200, resp.text
    end, q, plain = resp.json()["results"]
    for r in (end, q):
        assert (r["status"], r["reason"], r["rewards"]) == ("unscored", "chat_markup", None)
    assert "prediction contains '<|im_end|>'" in end["message"]
    assert "skip_special_tokens=True" in end["message"]
    assert "question contains '<|im_start|>'" in q["message"]
    assert plain["status"] == "scored"


def test_the_policy_tokenizers_own_special_tokens_are_markup(
    client: httpx.Client, tiny_model_dir: Path
) -> None:
    from transformers import AutoTokenizer

    eos = AutoTokenizer.from_pretrained(tiny_model_dir).eos_token
    resp = score(client, sample(CORRECT + eos), policy_tokenizer="tiny")
    result = resp.json()["results"][0]
    assert (result["status"], result["reason"]) == ("unscored", "chat_markup"), result
    assert repr(eos) in result["message"]


def test_unknown_policy_tokenizer_is_422(client: httpx.Client) -> None:
    resp = score(client, sample(CORRECT), policy_tokenizer="llama-9")
    assert resp.status_code == 422
    error = resp.json()["error"]
    assert error["param"] == "policy_tokenizer" and "'llama-9'" in error["message"]
    assert "tiny" in error["message"]


def test_a_private_cache_team_neither_sees_nor_shows_hits(client: httpx.Client) -> None:
    def cached(team: str) -> bool:
        resp = client.post(
            "/v1/token-rewards",
            headers=auth(team),
            json={"samples": [sample(WRONG, rewrite=REWRITE)]},
        )
        assert resp.status_code == 200, resp.text
        return bool(resp.json()["results"][0]["cached"])

    assert not cached("alpha")
    assert not cached("gamma")  # alpha's entry is not gamma's (private_cache)
    assert cached("gamma")  # its own is
    assert cached("alpha")  # and gamma's did not replace the shared one either way


def test_cache_hit_skips_the_grm(client: httpx.Client, reward_app: tuple[FastAPI, str]) -> None:
    first = score(client, sample(CORRECT, id="a"), sample(WRONG, rewrite=REWRITE))
    assert first.status_code == 200
    grm_calls = reward_app[0].state.pipeline.grm.calls
    second = score(
        client, sample(CORRECT, id="b", metadata={"x": 2}), sample(WRONG, rewrite=REWRITE)
    )
    assert second.status_code == 200
    assert reward_app[0].state.pipeline.grm.calls == grm_calls
    a, b = first.json()["results"], second.json()["results"]
    assert [r["cached"] for r in a] == [False, False]
    assert [r["cached"] for r in b] == [True, True]
    assert b[0]["id"] == "b" and b[0]["metadata"] == {"x": 2}
    assert (
        b[0]["rewards"] == a[0]["rewards"]
        and b[1]["imitation_weights"] == a[1]["imitation_weights"]
    )
    # Other reward parameters are another key: a miss.
    third = score(client, sample(CORRECT), params={"threshold": 0.3})
    assert third.json()["results"][0]["cached"] is False


def test_usage_counters_per_team(client: httpx.Client, reward_app: tuple[FastAPI, str]) -> None:
    """Two identical samples in one batch are scored once (one GRM score call)."""
    calls = reward_app[0].state.pipeline.grm.calls
    assert score(client, sample(CORRECT), sample(CORRECT)).status_code == 200
    assert reward_app[0].state.pipeline.grm.calls == calls + 1
    usage = client.get("/v1/usage", headers=auth("alpha")).json()
    assert usage["team"] == "alpha"
    assert usage["usage"]["requests"] == 1 and usage["usage"]["samples"] == 2
    assert usage["usage"]["scored"] == 2 and usage["usage"]["cache_hits"] == 0
    assert score(client, sample(CORRECT)).status_code == 200
    again = client.get("/v1/teams/alpha/usage", headers=auth("alpha"))
    assert again.status_code == 200
    assert again.json()["usage"] | {"requests": 0} == usage["usage"] | {
        "requests": 0, "samples": 3, "scored": 3, "cache_hits": 1,
    }  # fmt: skip


def test_metrics_are_labelled_by_team(client: httpx.Client) -> None:
    assert score(client, sample(CORRECT)).status_code == 200
    assert client.get("/v1/usage").status_code == 401
    text = client.get("/metrics").text
    assert 'rlmec_reward_samples_total{status="scored",team="alpha"}' in text
    assert 'rlmec_reward_request_seconds_count{route="/v1/token-rewards",team="alpha"}' in text
    assert 'rlmec_reward_errors_total{route="/v1/usage",team="unknown",type="auth"}' in text


def test_health_and_ready(client: httpx.Client) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"redis": "ok", "grm": "ok"}}
