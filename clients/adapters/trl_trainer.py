"""The RLMEC objective inside TRL: :class:`RlmecGRPOTrainer`, the smallest subclass of TRL's
``GRPOTrainer`` that optimises method §5 with token-level credit (issue 29, item 3).

TRL's GRPO gives every token of a completion one advantage, its group-normalised scalar
reward. This subclass keeps TRL's generation, reward calls, batching, logging and
checkpoints, and changes two methods:

- ``_generate_and_score_completions``: after TRL's own, the advantages become §3.1's token
  rewards on the completion's own ids (``(B, T)``, which TRL's ``_compute_loss`` takes from a
  subclass), and the batch gains the regular sequence (the GRM's rewrite of a wrong
  completion, the completion itself when correct) with its §3.3 imitation weights. Both come
  from the results of the reward function :func:`rlmec.clients.adapters.trl.make_reward_func`
  made: one call to the service per generation batch.
- ``_compute_loss``: ``L = L_RL + λ·L_IM``. ``L_RL = -Σ_t w_t log π(y_t) / N_r`` with
  ``w_t = stopgrad(min(ρ_t r_t, clip(ρ_t, 1-ε, 1+ε) r_t))`` over the completion (``ρ_t``
  against TRL's old log-probs, 1 when TRL computes none); ``L_IM = -Σ_t c_t log π(ŷ_t) / N_c``
  over the regular sequence after the same prompt. ``N_r``, ``N_c``: the micro-batch's tokens
  with a non-zero reward or weight (the paper's normalisation), then divided by TRL's gradient
  accumulation steps as its ``grpo`` loss is.

An unscored sample (the GRM's rewrite missed the reference) gets its 0/1 correctness on its
last token and no imitation; one that cannot be judged gets 0 and no imitation.

Switching a GRPO script over::

    from rlmec.clients.adapters.trl import make_reward_func
    from rlmec.clients.adapters.trl_trainer import RlmecGRPOTrainer

    reward = make_reward_func("http://reward:8002", api_key=KEY, answer_key="answer")
    trainer = RlmecGRPOTrainer(model=model, reward_funcs=[reward], args=GRPOConfig(...),
                               train_dataset=dataset, processing_class=tokenizer)
"""

from __future__ import annotations

from typing import Any

import torch
from trl import GRPOTrainer

from rlmec.clients.adapters._objective import clipped_weights
from rlmec.clients.adapters._tokens import imitation_tokens, token_rewards
from rlmec.shared.schemas import ScoredSample

DEFAULT_EPSILON = 0.3  # ε of §5 (the paper's)
DEFAULT_IMITATION_COEF = 1.0  # λ of §5


class RlmecGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` with the RLMEC objective (see the module docstring)."""

    def __init__(
        self,
        *args: Any,
        epsilon: float = DEFAULT_EPSILON,
        imitation_coef: float = DEFAULT_IMITATION_COEF,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        found = [f for f in self.reward_funcs if hasattr(f, "last_results")]
        if not found:
            raise ValueError(
                "RlmecGRPOTrainer needs the service's token rewards: put a reward function "
                "from rlmec.clients.adapters.trl.make_reward_func in reward_funcs"
            )
        self.rlmec_reward: Any = found[0]
        self.rlmec_epsilon, self.rlmec_imitation_coef = epsilon, imitation_coef

    def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
        output: dict[str, Any] = super()._generate_and_score_completions(inputs)
        results: list[ScoredSample | None] = self.rlmec_reward.last_results
        ids, mask = output["completion_ids"], output["completion_mask"]
        if len(results) != ids.size(0):
            raise RuntimeError(f"{len(results)} rlmec results for {ids.size(0)} completions")
        output.update(rlmec_batch(self.processing_class, ids, mask, results))
        return output

    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        logps = self._logps(model, prompt_ids, prompt_mask, completion_ids, completion_mask)
        old = inputs.get("old_per_token_logps")
        regular_ids, regular_mask = inputs["rlmec_regular_ids"], inputs["rlmec_regular_mask"]
        if self.rlmec_imitation_coef and regular_mask.any():
            regular_logps = self._logps(model, prompt_ids, prompt_mask, regular_ids, regular_mask)
        else:  # no regular sequence in this micro-batch (all unscored), or λ = 0: no forward
            regular_logps = torch.zeros(regular_ids.shape, device=regular_ids.device)
        parts = rlmec_objective(
            logps, logps.detach() if old is None else old, inputs["advantages"],
            completion_mask, regular_logps, inputs["rlmec_imitation_weights"], regular_mask,
            epsilon=self.rlmec_epsilon, imitation_coef=self.rlmec_imitation_coef,
        )  # fmt: skip
        mode = "train" if model.training else "eval"
        for name, value in parts.items():
            self._metrics[mode][f"rlmec/{name}"].append(float(value.detach()))
        accumulation = self.current_gradient_accumulation_steps if mode == "train" else 1.0
        return parts["loss"] / accumulation

    def _logps(self, model: Any, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
               ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """TRL's per-token log-probs of ``ids`` after the prompt, ``[B, ids.size(1)]``."""
        logps, _, _ = self._get_per_token_logps_and_entropies(
            model, torch.cat([prompt_ids, ids], dim=1), torch.cat([prompt_mask, mask], dim=1),
            ids.size(1),
        )  # fmt: skip
        return logps


def rlmec_batch(tokenizer: Any, ids: torch.Tensor, mask: torch.Tensor,
                results: list[ScoredSample | None]) -> dict[str, torch.Tensor]:  # fmt: skip
    """The per-token advantages ``[B, T]`` on the completions' ids and the regular sequences
    (``rlmec_regular_ids``/``_mask``/``rlmec_imitation_weights``, ``[B, T2]``, right-padded)."""
    rewards = torch.zeros(ids.shape, dtype=torch.float32, device=ids.device)
    regular = [imitation_tokens(tokenizer, r) for r in results]
    width = max([1, *(len(r[0]) for r in regular)])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    regular_ids = torch.full((len(results), width), pad, dtype=ids.dtype, device=ids.device)
    regular_mask = torch.zeros((len(results), width), dtype=mask.dtype, device=ids.device)
    weights = torch.zeros((len(results), width), dtype=torch.float32, device=ids.device)
    for i, result in enumerate(results):
        n = int(mask[i].sum())
        values = token_rewards(tokenizer, ids[i, :n].tolist(), result)
        rewards[i, : len(values)] = torch.tensor(values)
        tokens, w = regular[i]
        regular_ids[i, : len(tokens)] = torch.tensor(tokens, dtype=ids.dtype)
        regular_mask[i, : len(tokens)] = 1
        weights[i, : len(w)] = torch.tensor(w)
    return {"advantages": rewards, "rlmec_regular_ids": regular_ids,
            "rlmec_regular_mask": regular_mask, "rlmec_imitation_weights": weights}  # fmt: skip


def rlmec_objective(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    rewards: torch.Tensor,
    mask: torch.Tensor,
    regular_logps: torch.Tensor,
    imitation_weights: torch.Tensor,
    regular_mask: torch.Tensor,
    *,
    epsilon: float = DEFAULT_EPSILON,
    imitation_coef: float = DEFAULT_IMITATION_COEF,
) -> dict[str, torch.Tensor]:
    """§5 with the micro-batch's counts (a test holds it equal to
    ``rlmec.trainer.loss.rlmec_loss``).

    Args:
        logps, old_logps, rewards, mask: ``[B, T]`` over the completions.
        regular_logps, imitation_weights, regular_mask: ``[B, T2]`` over the regular
            sequences.

    Returns: ``loss`` (with grad), ``rl_loss``, ``imitation_loss``: scalars.
    """
    on, regular_on = mask.bool(), regular_mask.bool()
    zeros = torch.zeros_like(logps)
    logps, old_logps = torch.where(on, logps, zeros), torch.where(on, old_logps, zeros)
    rewards = torch.where(on, rewards, zeros)
    weights, _, _ = clipped_weights(logps, old_logps, rewards, epsilon)
    n_r = (on & (rewards != 0)).sum().clamp(min=1)
    rl = (-weights * logps).sum() / n_r
    c = torch.where(regular_on, imitation_weights, torch.zeros_like(imitation_weights))
    n_c = (regular_on & (c != 0)).sum().clamp(min=1)
    im = (-c * torch.where(regular_on, regular_logps, torch.zeros_like(regular_logps))).sum() / n_c
    return {"loss": rl + imitation_coef * im, "rl_loss": rl, "imitation_loss": im}
