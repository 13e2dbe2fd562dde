"""``POST /get_reward`` in OpenRLHF's remote reward-model format (docs/interop.md)."""

from __future__ import annotations

import httpx
import pytest

from rlmec.services.reward.openrlhf import LOG_NAMES
from tests.services.reward.conftest import CORRECT, QUESTION, REWRITE, WRONG, auth

pytestmark = pytest.mark.integration

PROMPT = f"<|user|>{QUESTION}<|assistant|>"


def get_reward(client: httpx.Client, body: dict[str, object], **params: str) -> httpx.Response:
    return client.post("/get_reward", headers=auth("alpha"), json=body, params=params)


def test_batch_with_prompts_and_labels(client: httpx.Client) -> None:
    body = {
        "query": [PROMPT + CORRECT, PROMPT + WRONG, PROMPT + REWRITE],
        "prompts": [PROMPT] * 3,
        "labels": ["72", "72", "72"],
        "future_openrlhf_field": {"ignored": True},
    }
    resp = get_reward(client, body)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert set(out) == {"rewards", "scores", "extra_logs"}
    assert out["rewards"] == out["scores"] == [1.0, 0.0, 1.0]
    logs = out["extra_logs"]
    assert set(logs) == set(LOG_NAMES) and all(len(v) == 3 for v in logs.values())
    assert logs["rlmec_correct"] == [1.0, 0.0, 1.0]
    # The tiny GRM's rewrite misses 72: the wrong answer is reported unscored.
    assert logs["rlmec_scored"] == [1.0, 0.0, 1.0]
    assert all(0.0 <= v <= 0.5 for v in logs["rlmec_mean_token_reward"])
    assert all(0.0 <= v <= 1.0 for v in logs["rlmec_negative_token_fraction"])


def test_one_sample_per_request_and_cache(client: httpx.Client) -> None:
    body = {"query": [PROMPT + CORRECT], "prompts": [PROMPT], "labels": ["72"]}
    first = get_reward(client, body).json()
    second = get_reward(client, body).json()
    assert first["rewards"] == second["rewards"] == [1.0]
    assert first["extra_logs"]["rlmec_cached"] == [0.0]
    assert second["extra_logs"]["rlmec_cached"] == [1.0]
    assert (
        second["extra_logs"]["rlmec_mean_token_reward"]
        == first["extra_logs"]["rlmec_mean_token_reward"]
    )


def test_empty_lists_in_empty_lists_out(client: httpx.Client) -> None:
    resp = get_reward(client, {"query": [], "prompts": [], "labels": []})
    assert resp.status_code == 200
    assert resp.json() == {"rewards": [], "scores": [], "extra_logs": {}}


def test_without_prompts_or_labels(client: httpx.Client) -> None:
    """No prompts: the query is both question and response. No labels: nothing to judge."""
    no_prompts = get_reward(client, {"query": [PROMPT + CORRECT], "labels": ["72"]}).json()
    assert no_prompts["rewards"] == [1.0]
    no_labels = get_reward(client, {"query": [PROMPT + CORRECT], "prompts": [PROMPT]}).json()
    assert no_labels["rewards"] == [0.0] and no_labels["extra_logs"]["rlmec_scored"] == [0.0]


def test_qa_task_from_the_url(client: httpx.Client) -> None:
    body = {"query": ["Q? A: the answer is Paris."], "prompts": ["Q? A:"], "labels": ["paris"]}
    assert get_reward(client, body, task="qa").json()["rewards"] == [1.0]
    assert get_reward(client, body, task="poker").status_code == 422


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"query": ["a", "b"], "labels": ["1"]}, "labels has 1 entries but query has 2"),
        ({"query": ["abc"], "prompts": ["xyz"]}, "query[0] does not start with prompts[0]"),
        ({"query": "abc"}, "query"),
        ({"query": ["a\x00"], "labels": ["1"]}, "query[0]"),
    ],
)
def test_bad_openrlhf_body_is_422(
    client: httpx.Client, body: dict[str, object], needle: str
) -> None:
    resp = get_reward(client, body)
    assert resp.status_code == 422
    assert needle in resp.json()["error"]["message"]


def test_needs_a_key(client: httpx.Client) -> None:
    resp = client.post("/get_reward", json={"query": []})
    assert resp.status_code == 401
