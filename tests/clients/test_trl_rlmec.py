"""``RlmecGRPOTrainer`` (issue 29, item 3) with the installed TRL and the tiny model: on a frozen
batch its loss and gradient are ``rlmec_loss``'s, and the per-token advantages it builds from
the service's results differ from a broadcast scalar where the GRM edited (real reward
service, real GRM, real Redis)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import trl
from transformers import AutoModelForCausalLM, AutoTokenizer

import datasets
from rlmec.clients import Client
from rlmec.clients.adapters.trl import make_reward_func
from rlmec.clients.adapters.trl_trainer import RlmecGRPOTrainer, rlmec_batch
from rlmec.loop.redis_server import LocalRedis
from rlmec.trainer.loss import rlmec_loss
from tests.clients.conftest import team_service

KEY = "trl-rlmec-key-0123456789"
QUESTION = "Natalia sold 48 clips in April and half as many in May. How many in total?"
REFERENCE = "She sold 48/2 = 24 clips in May.\nShe sold 48+24 = 72 clips.\nThe answer is: 72"
WRONG = "She sold 48*2 = 96 clips in May.\nShe sold 48+96 = 144 clips.\nThe answer is: 144"


def _trainer(model_dir: Path, tmp_path: Path, reward: Any) -> RlmecGRPOTrainer:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = trl.GRPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=2, num_generations=2,
        max_completion_length=8, max_steps=1, logging_steps=1, report_to="none",
        save_strategy="no", use_cpu=True, bf16=False, seed=0, log_completions=False,
    )  # fmt: skip
    rows = [{"prompt": "Q: Natalia sold 48/2 clips. How many?\nA:", "answer": "24"}] * 2
    return RlmecGRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir), reward_funcs=[reward],
        args=config, train_dataset=datasets.Dataset.from_list(rows), processing_class=tokenizer,
    )  # fmt: skip


def test_a_trainer_without_the_services_reward_function_is_refused(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    def plain(completions: list[str], **_: Any) -> list[float]:
        return [0.0] * len(completions)

    with pytest.raises(ValueError, match="make_reward_func"):
        _trainer(tiny_model_dir, tmp_path, plain)


def _frozen_batch(vocab: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    prompt_mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])  # left-padded, as TRL pads
    completion_mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]])
    regular_mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0]])
    rewards = torch.tensor([[0.0, -1.0, -0.5, 0.0, 0.0, 0.0], [0.2, 0.2, 0.3, 0.0, 0.0, 0.0]])
    weights = torch.tensor([[0.5, 0.5, 1.0, 1.0, 1.0, 0.5, 0.0], [0.5] * 4 + [0.0] * 3])
    return {
        "prompt_ids": torch.randint(3, vocab, (2, 4), generator=gen),
        "prompt_mask": prompt_mask,
        "completion_ids": torch.randint(3, vocab, (2, 6), generator=gen),
        "completion_mask": completion_mask,
        "advantages": rewards * completion_mask,
        "rlmec_regular_ids": torch.randint(3, vocab, (2, 7), generator=gen),
        "rlmec_regular_mask": regular_mask,
        "rlmec_imitation_weights": weights * regular_mask,
    }


def test_the_loss_on_a_frozen_batch_is_rlmec_loss(tiny_model_dir: Path, tmp_path: Path) -> None:
    trainer = _trainer(tiny_model_dir, tmp_path, make_reward_func("http://127.0.0.1:9"))
    model = trainer.model
    model.train()
    trainer.current_gradient_accumulation_steps = 1
    batch = _frozen_batch(model.config.vocab_size)
    with torch.no_grad():
        logps = trainer._logps(model, batch["prompt_ids"], batch["prompt_mask"],
                               batch["completion_ids"], batch["completion_mask"])  # fmt: skip
    # Ratios away from 1 on both sides of the clip: the behaviour log-probs of an older policy.
    batch["old_per_token_logps"] = logps + torch.tensor([[0.5, -0.6, 0.4, 0.0, 0.1, 0.0]] * 2)

    ours = trainer._compute_loss(model, batch)
    ours.backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    logps = trainer._logps(model, batch["prompt_ids"], batch["prompt_mask"],
                           batch["completion_ids"], batch["completion_mask"])  # fmt: skip
    regular = trainer._logps(model, batch["prompt_ids"], batch["prompt_mask"],
                             batch["rlmec_regular_ids"], batch["rlmec_regular_mask"])  # fmt: skip
    want = rlmec_loss(logps, batch["old_per_token_logps"], batch["advantages"],
                      batch["completion_mask"], regular, batch["rlmec_imitation_weights"],
                      batch["rlmec_regular_mask"], epsilon=0.3, imitation_coef=1.0)  # fmt: skip
    want.loss.backward()
    torch.testing.assert_close(ours, want.loss, atol=1e-6, rtol=0)
    assert got and want.imitation_loss > 0 and want.clip_fraction > 0
    for name, param in model.named_parameters():
        if param.grad is not None:
            torch.testing.assert_close(got[name], param.grad, atol=1e-6, rtol=1e-5)


@pytest.fixture(scope="module")
def reward_url(grm_url: str, redis_server: LocalRedis) -> Iterator[str]:
    with team_service(grm_url, redis_server.url, "trl-rlmec", KEY, cache_enabled=False) as url:
        yield url


@pytest.mark.integration
def test_token_advantages_differ_from_the_broadcast_scalar_where_the_grm_edited(
    reward_url: str, tiny_model_dir: Path
) -> None:
    """A wrong completion scored by the service (with a teacher's rewrite, so that the tiny
    GRM's own rewrite cannot miss): its tokens get different advantages, and the rewrite is
    the regular sequence the imitation term trains on."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    sample = {"question": QUESTION, "reference_solution": REFERENCE, "prediction": WRONG,
              "rewrite": REFERENCE}  # fmt: skip
    # The tiny random GRM gives every token p_t of about 1/vocab: at the paper's threshold of
    # 0.5 it would keep none. At 0.01 it keeps some and edits others, as a trained GRM does.
    with Client(reward_url, api_key=KEY) as client:
        [result] = client.token_rewards([sample], params={"threshold": 0.01}).results
    assert result.status == "scored", result
    ids = [*tokenizer(WRONG, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    batch = rlmec_batch(tokenizer, torch.tensor([ids]), torch.ones(1, len(ids)), [result])
    advantages = batch["advantages"][0].tolist()
    assert advantages == pytest.approx(result.rewards.values if result.rewards else [])
    assert len(set(advantages)) > 1  # GRPO: one number for every token of the completion
    regular = batch["rlmec_regular_ids"][0][batch["rlmec_regular_mask"][0].bool()].tolist()
    assert tokenizer.decode(regular, skip_special_tokens=True) == REFERENCE
    assert set(batch["rlmec_imitation_weights"][0][: len(regular)].tolist()) == {0.5, 1.0}


@pytest.mark.integration
@pytest.mark.slow
def test_a_real_training_step_against_the_service(
    reward_url: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """TRL generates, the service scores, the step runs on (B, T) advantages and the regular
    sequences, and the RLMEC terms reach TRL's logs. The tiny random policy's completions come
    back unscored or unjudged (no rewrite reaches 24), so the loss is 0 and nothing moves: the
    frozen-batch test above checks the objective itself."""
    reward = make_reward_func(reward_url, api_key=KEY, params={"threshold": 0.01})
    trainer = _trainer(tiny_model_dir, tmp_path, reward)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    logged = trainer.state.log_history[0]
    assert len(reward.last_results) == 2  # type: ignore[attr-defined]
    assert {"rlmec/loss", "rlmec/rl_loss", "rlmec/imitation_loss"} <= set(logged), logged
    assert torch.isfinite(torch.tensor(logged["rlmec/loss"]))
    moved = any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())
    assert moved == (logged["rlmec/loss"] != 0)
