"""Per-token RLMEC rewards into SkyRL (issue 29, item 4), through SkyRL's own preprocessing
(``convert_prompts_responses_to_batch_tensors`` of the installed ``skyrl`` 0.3.0) against the
live reward service (real GRM on the tiny model, real Redis): the right-aligned rewards land
on the right response ids."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from skyrl.train.dataset.preprocess import convert_prompts_responses_to_batch_tensors
from transformers import AutoTokenizer

from rlmec.clients.adapters.skyrl import add_token_rewards
from rlmec.loop.redis_server import LocalRedis
from tests.clients.conftest import team_service

pytestmark = pytest.mark.integration

KEY = "skyrl-key-0123456789"
QUESTION = "Natalia sold 48 clips in April and half as many in May. How many in total?"
CORRECT = "She sold 48/2 = 24 clips in May.\nShe sold 48+24 = 72 clips.\nThe answer is: 72"
SHORT = "The answer is: 72"


@pytest.fixture(scope="module")
def reward_url(grm_url: str, redis_server: LocalRedis) -> Iterator[str]:
    with team_service(grm_url, redis_server.url, "skyrl", KEY, cache_enabled=False) as url:
        yield url


def test_token_rewards_land_on_the_right_ids_after_skyrls_preprocessing(
    reward_url: str, tiny_model_dir: Path
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompts = [[{"role": "user", "content": QUESTION}]] * 3
    truth = {"reward_spec": {"method": "rule", "ground_truth": "72"}}
    input_batch = {"prompts": prompts, "env_extras": [truth, truth, {"no": "reward_spec"}]}
    responses = [tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
                 for text in (CORRECT, SHORT, SHORT)]  # fmt: skip
    output = {"response_ids": responses, "prompt_token_ids": [[5, 6, 7], [5, 6], [5]],
              "loss_masks": [[1] * len(r) for r in responses]}  # fmt: skip
    # The tiny random GRM gives every token p_t of about 1/vocab; at this threshold it keeps
    # some tokens and not others, as a trained GRM does.
    asyncio.run(add_token_rewards(input_batch, output, tokenizer, url=reward_url, api_key=KEY,
                                  params={"threshold": 0.01}))  # fmt: skip
    results = output["rlmec_results"]
    assert [r.status if r else None for r in results] == ["scored", "scored", None]
    rewards = output["rewards"]
    assert [len(v) for v in rewards] == [len(r) for r in responses]
    # Same tokenizer: exactly the service's own token values, EOS included, and not one number.
    assert rewards[0] == pytest.approx(results[0].rewards.values)
    assert len(set(rewards[0])) > 1
    assert rewards[2] == [0.0] * len(responses[2])  # unjudged: 0 on its last token

    _, _, action_mask, batch_rewards, _, _, _ = convert_prompts_responses_to_batch_tensors(
        tokenizer, output["prompt_token_ids"], responses, rewards, output["loss_masks"]
    )
    width = max(len(r) for r in responses)
    for i, values in enumerate(rewards):
        pad = width - len(values)
        torch.testing.assert_close(batch_rewards[i, pad:], torch.tensor(values))
        assert not batch_rewards[i, :pad].any() and action_mask[i, pad:].all()
