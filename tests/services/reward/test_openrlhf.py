"""``POST /get_reward`` in OpenRLHF's remote reward-model format (docs/interop.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from rlmec.services.reward.app import create_app
from rlmec.services.reward.openrlhf import LOG_NAMES
from rlmec.services.reward.settings import RewardSettings
from tests.frameworks import openrlhf_2025_post, openrlhf_post
from tests.servers import serve_app
from tests.services.reward.conftest import (
    CORRECT,
    QUESTION,
    REWRITE,
    WRONG,
    auth,
    reward_settings,
)

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


def test_without_prompts_the_query_is_the_response(client: httpx.Client) -> None:
    no_prompts = get_reward(client, {"query": [PROMPT + CORRECT], "labels": ["72"]}).json()
    assert no_prompts["rewards"] == [1.0]


def test_without_labels_is_a_clear_422_not_a_silent_zero(client: httpx.Client) -> None:
    resp = get_reward(client, {"query": [PROMPT + CORRECT], "prompts": [PROMPT]})
    assert resp.status_code == 422
    assert "--data.label_key" in resp.json()["error"]["message"]


def test_a_bad_query_fails_alone(client: httpx.Client) -> None:
    """Control characters, a prompt the query lacks, a missing label, an oversized text: each
    of those queries scores 0 with its reason; the good ones in the batch are scored."""
    good = PROMPT + CORRECT
    body = {
        "query": [good, PROMPT + "72 \x07 bell \x00", "<|user|>other<|assistant|>72", good,
                  PROMPT + "9" * 100_001, good],
        "prompts": [PROMPT] * 6,
        "labels": ["72", "72", "72", None, "72", 72],
    }  # fmt: skip
    resp = get_reward(client, body)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["rewards"] == [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]  # the numeric label 72 works
    logs = out["extra_logs"]
    assert set(logs) == set(LOG_NAMES) and all(len(v) == 6 for v in logs.values())
    assert logs["rlmec_unscored"] == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    assert logs["rlmec_unscored_invalid_text"] == [0, 1, 0, 0, 0, 0]
    assert logs["rlmec_unscored_prompt_not_in_query"] == [0, 0, 1, 0, 0, 0]
    assert logs["rlmec_unscored_missing_label"] == [0, 0, 0, 1, 0, 0]
    assert logs["rlmec_unscored_text_too_long"] == [0, 0, 0, 0, 1, 0]


def test_2025_protocol_left_padded_batch(client: httpx.Client) -> None:
    """OpenRLHF 0.6-0.8 decodes left-padded sequences with their special tokens and posts the
    batch: the prompt is found after the padding, trailing EOS/pad tokens are not judged."""
    pad = "<|endoftext|>"
    body = {
        "query": [pad * 3 + PROMPT + CORRECT + "<|im_end|>" + pad * 2, PROMPT + WRONG + pad],
        "prompts": [PROMPT, PROMPT],
        "labels": ["72", "72"],
    }
    out = get_reward(client, body).json()
    assert out["rewards"] == [1.0, 0.0]
    assert out["extra_logs"]["rlmec_unscored_prompt_not_in_query"] == [0.0, 0.0]
    # the tiny GRM's rewrite misses the answer: the service's own reason has its column too
    assert out["extra_logs"]["rlmec_unscored_rewrite_incorrect"] == [0.0, 1.0]


def test_a_batch_over_1024_queries_is_scored(client: httpx.Client) -> None:
    n = 1100
    body = {"query": [PROMPT + CORRECT] * n, "prompts": [PROMPT] * n, "labels": ["72"] * n}
    resp = get_reward(client, body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["rewards"] == [1.0] * n


def test_the_grm_gets_the_question_without_the_chat_markup(client: httpx.Client) -> None:
    """A ChatML prompt with ``?chat_template=chatml``: the sample is the user's question (its
    cached result is found again by the plain question through /v1/token-rewards)."""
    chat_prompt = (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        f"Face<|im_end|>\n<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
    )
    body = {"query": [chat_prompt + WRONG], "prompts": [chat_prompt], "labels": ["72"]}
    assert get_reward(client, body, chat_template="chatml").json()["rewards"] == [0.0]
    plain = {"question": QUESTION, "reference_solution": "72", "reference_answer": "72",
             "prediction": WRONG}  # fmt: skip
    again = client.post("/v1/token-rewards", headers=auth("alpha"), json={"samples": [plain]})
    assert again.json()["results"][0]["cached"] is True
    unknown = get_reward(client, body, chat_template="nope")
    assert unknown.status_code == 422 and "not registered" in unknown.json()["error"]["message"]
    no_template = get_reward(client, body, chat_template="tiny")
    assert no_template.status_code == 422
    assert no_template.json()["error"]["code"] == "no_chat_template"


def test_qa_task_from_the_url(client: httpx.Client) -> None:
    body = {"query": ["Q? A: the answer is Paris."], "prompts": ["Q? A:"], "labels": ["paris"]}
    assert get_reward(client, body, task="qa").json()["rewards"] == [1.0]
    assert get_reward(client, body, task="poker").status_code == 422


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"query": ["a", "b"], "labels": ["1"]}, "labels has 1 entries but query has 2"),
        ({"query": ["abc"], "labels": ["1"], "prompts": []}, "prompts has 0 entries"),
        ({"query": "abc"}, "query"),
        ({"query": ["a"], "labels": [{"x": 1}]}, "labels"),
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


@pytest.fixture
def anonymous_service(grm_url: str, redis_url: str) -> Iterator[str]:
    """The service as an operator runs it for OpenRLHF on a private network: key-less access
    with the default quota and admission wait. Long rewrites (400 tokens) make the tiny GRM as
    slow per sample as a real one, so a burst outlasts OpenRLHF's 5 x 1 s retries (without the
    admission wait, 23 of 64 rewards were lost here)."""
    settings = reward_settings(grm_url, redis_url, allow_anonymous=True, grm_max_new_tokens=400)
    settings.admission_wait_s = RewardSettings.model_fields["admission_wait_s"].default
    with serve_app(create_app(settings)) as url:
        yield url


def test_current_openrlhf_64_samples_in_flight_get_64_rewards(anonymous_service: str) -> None:
    """One request per sample, all 64 at once (one rollout step), against the default
    concurrency quota: the ones over it wait for a slot, none is lost."""
    predictions = [f"Sample {i}.\n" + (CORRECT if i % 2 else WRONG) for i in range(64)]

    async def step() -> list[Any]:
        url = anonymous_service + "/get_reward"
        return await asyncio.gather(
            *(openrlhf_post(url, {"query": [PROMPT + p], "prompts": [PROMPT],
                                           "labels": ["72"]})
              for p in predictions)
        )  # fmt: skip

    answers = asyncio.run(step())
    rewards = [a["rewards"][0] if a else None for a in answers]
    assert None not in rewards, f"{rewards.count(None)} of 64 rewards lost"
    assert rewards == [float(i % 2) for i in range(64)]


def test_2025_openrlhf_batch_posted_as_its_code_posts_it(anonymous_service: str) -> None:
    """One whole micro-batch per request, queries decoded with their padding."""
    pad = "<|endoftext|>"
    queries = [pad * (i % 3) + PROMPT + (CORRECT if i % 2 else WRONG) + pad for i in range(8)]
    answer = openrlhf_2025_post(
        anonymous_service + "/get_reward",
        {"query": queries, "prompts": [PROMPT] * 8, "labels": ["72"] * 8},
    )
    assert answer is not None and answer["rewards"] == [float(i % 2) for i in range(8)]


def _grm_score_calls(grm_url: str) -> float:
    text = httpx.get(f"{grm_url}/metrics", timeout=30).text
    score = [ln for ln in text.splitlines() if ln.startswith("rlmec_grm_requests_total{")]
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in score if 'endpoint="score"' in ln)


def test_per_sample_requests_in_flight_share_grm_calls(grm_url: str, redis_url: str) -> None:
    """OpenRLHF's one sample per request, 16 in flight: the service scores them in a few GRM
    batches (coalesce_window_ms), not 16 calls, and each request gets its own reward."""
    settings = reward_settings(grm_url, redis_url, allow_anonymous=True, coalesce_window_ms=200,
                               redis_prefix="rlmec:coalesce-test", cache_enabled=False)  # fmt: skip
    predictions = [f"Try {i}.\n" + (CORRECT if i % 2 else WRONG) for i in range(16)]
    with serve_app(create_app(settings)) as url:
        before = _grm_score_calls(grm_url)

        async def step() -> list[Any]:
            return await asyncio.gather(
                *(openrlhf_post(url + "/get_reward", {"query": [PROMPT + p], "prompts": [PROMPT],
                                                      "labels": ["72"]})
                  for p in predictions)
            )  # fmt: skip

        answers = asyncio.run(step())
        calls = _grm_score_calls(grm_url) - before
    assert [a["rewards"][0] if a else None for a in answers] == [float(i % 2) for i in range(16)]
    assert 1 <= calls <= 4, f"{calls} GRM score calls for 16 one-sample requests"
