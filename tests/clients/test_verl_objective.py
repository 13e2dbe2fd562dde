"""The RLMEC objective's RL term as veRL plug-ins (issue 29, item 2), with the installed veRL:
its registries find them (entry point and ``external_lib``), its ``compute_advantage`` keeps the
token rewards per token where ``grpo`` broadcasts one number, and its policy-loss call gives
``rlmec_loss`` with λ = 0, value and gradient."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import torch
from verl import DataProto
from verl.trainer.config import AlgoConfig
from verl.trainer.ppo.core_algos import get_policy_loss_fn
from verl.trainer.ppo.ray_trainer import compute_advantage
from verl.workers.config import FSDPActorConfig

from rlmec.clients.adapters import verl_objective
from rlmec.trainer.loss import rlmec_loss

MODULE = "rlmec.clients.adapters.verl_objective"


def _registered_in_a_fresh_interpreter(code: str, plugins: str) -> str:
    env = {**os.environ, "VERL_USE_EXTERNAL_PLUGINS": plugins}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300, check=True)  # fmt: skip
    return out.stdout.strip().splitlines()[-1]


LOOKUP = (
    "from verl.trainer.ppo.core_algos import get_adv_estimator_fn, get_policy_loss_fn; "
    "print(get_adv_estimator_fn('rlmec').__module__, get_policy_loss_fn('rlmec').__module__)"
)


def test_import_verl_registers_the_plugins_through_its_entry_points() -> None:
    """``import verl`` loads the installed ``verl.plugins`` entry point in every process."""
    got = _registered_in_a_fresh_interpreter(f"import verl; {LOOKUP}", "auto")
    assert got == f"{MODULE} {MODULE}"


def test_external_lib_registers_the_plugins_without_entry_points() -> None:
    """The documented fallback: ``actor_rollout_ref.model.external_lib`` (veRL's
    ``import_external_libs``), with entry-point discovery off."""
    load = "from verl.utils.import_utils import import_external_libs as load"
    code = f"{load}; load({MODULE!r}); {LOOKUP}"
    assert _registered_in_a_fresh_interpreter(code, "none") == f"{MODULE} {MODULE}"


def _batch() -> dict[str, torch.Tensor]:
    """Three responses of 7, 5 and 3 tokens (right-padded): an edited wrong one (negative
    rewards on the tokens the GRM would not keep), a correct one, and one with mixed rewards."""
    gen = torch.Generator().manual_seed(0)
    mask = torch.zeros(3, 7)
    for row, length in enumerate((7, 5, 3)):
        mask[row, :length] = 1
    rewards = torch.tensor([[0.0, 0.0, -1.0, -1.0, -0.4, 0.0, 0.0],
                            [0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0],
                            [0.3, -0.7, 0.0, 0.0, 0.0, 0.0, 0.0]]) * mask  # fmt: skip
    old = -torch.rand(3, 7, generator=gen) * 3
    # Ratios ρ = exp(delta) inside and outside 1 ± 0.3: on [0, 3] (r < 0, ρ < 0.7) the clipped
    # branch is the smaller one, on [0, 2] and [1, 4] the unclipped one.
    delta = torch.randn(3, 7, generator=gen) * 0.1
    delta[0, 2], delta[0, 3], delta[1, 4] = 0.5, -0.6, 0.4
    current = old + delta
    return {"mask": mask, "rewards": rewards, "old": old, "current": current}


def _advantages(b: dict[str, torch.Tensor], estimator: str) -> torch.Tensor:
    data = DataProto.from_dict(
        tensors={"token_level_rewards": b["rewards"], "response_mask": b["mask"]},
        non_tensors={"uid": np.array(["p0", "p0", "p0"], dtype=object)},
    )
    return compute_advantage(data, adv_estimator=estimator, config=AlgoConfig()).batch["advantages"]


def test_token_advantages_differ_from_the_broadcast_scalar_where_the_grm_edited() -> None:
    b = _batch()
    ours, grpo = _advantages(b, "rlmec"), _advantages(b, "grpo")
    torch.testing.assert_close(ours, b["rewards"])  # per token, as the service gave them
    edited = b["mask"][0].bool()
    assert len(set(ours[0][edited].tolist())) > 1  # the edited tokens stand out
    assert len(set(grpo[0][edited].tolist())) == 1  # grpo: one number for every token


def _actor_config() -> FSDPActorConfig:
    return FSDPActorConfig(strategy="fsdp", ppo_micro_batch_size_per_gpu=2,
                           ppo_mini_batch_size=4, rollout_n=1, clip_ratio=0.3)  # fmt: skip


def test_verls_policy_loss_with_the_plugins_is_rlmec_loss_without_imitation() -> None:
    b = _batch()
    advantages = _advantages(b, "rlmec")
    config = _actor_config()
    verl_lp = b["current"].clone().requires_grad_(True)
    loss_fn = get_policy_loss_fn(verl_objective.NAME)
    verl_loss, metrics = loss_fn(old_log_prob=b["old"], log_prob=verl_lp, advantages=advantages,
                                 response_mask=b["mask"], loss_agg_mode="token-mean",
                                 config=config)  # fmt: skip
    verl_loss.backward()
    our_lp = b["current"].clone().requires_grad_(True)
    empty = torch.zeros(3, 1)
    ours = rlmec_loss(our_lp, b["old"], b["rewards"], b["mask"], empty, empty, empty,
                      epsilon=0.3, imitation_coef=0.0,
                      num_reward_tokens=b["mask"].sum())  # veRL's token-mean  # fmt: skip
    ours.loss.backward()
    torch.testing.assert_close(verl_loss, ours.loss, atol=1e-6, rtol=0)
    assert our_lp.grad is not None and verl_lp.grad is not None
    torch.testing.assert_close(verl_lp.grad, our_lp.grad, atol=1e-6, rtol=0)
    assert 0 < metrics["actor/pg_clipfrac"] < 1  # both branches of the clip were taken
    assert verl_lp.grad[0, 2] > 0  # a token the GRM would not keep is pushed down


def test_the_loss_does_not_depend_on_the_micro_batch_split() -> None:
    """With veRL's global batch counts, micro-batch losses add up to the whole batch's."""
    b = _batch()
    advantages = _advantages(b, "rlmec")
    loss_fn = get_policy_loss_fn(verl_objective.NAME)

    def loss(rows: slice, config: FSDPActorConfig) -> torch.Tensor:
        out, _ = loss_fn(old_log_prob=b["old"][rows], log_prob=b["current"][rows],
                         advantages=advantages[rows], response_mask=b["mask"][rows],
                         loss_agg_mode="token-mean", config=config)  # fmt: skip
        return out

    whole = loss(slice(0, 3), _actor_config())
    split = _actor_config()
    split.global_batch_info.update(dp_size=1, batch_num_tokens=int(b["mask"].sum()))
    parts = loss(slice(0, 1), split) + loss(slice(1, 3), split)
    torch.testing.assert_close(parts, whole, atol=1e-6, rtol=0)
