"""The RLMEC objective's RL term inside veRL, through veRL's own registries (issue 29, item 2).

- ``algorithm.adv_estimator=rlmec``: each response token's advantage is its §3.1 token reward,
  as the reward manager (:mod:`.verl_rewards`) placed it. veRL's ``grpo``, ``rloo`` and ``opo``
  sum a response's token rewards into one number; ``gae`` and ``reinforce_plus_plus`` discount,
  accumulate and whiten them. Here nothing is summed, discounted or whitened: the token the GRM
  would not keep is the token that is pushed down.
- ``actor_rollout_ref.actor.policy_loss.loss_mode=rlmec``: method §5's
  ``L_RL = -Σ_t w_t · log π_θ(y_t) / N``, ``w_t = stopgrad(min(ρ_t r_t, clip(ρ_t, 1-ε, 1+ε) r_t))``,
  ``ρ_t = π_θ / π_old``, with ε = ``actor.clip_ratio`` (the paper's 0.3: set it) and the sum
  aggregated by veRL's own ``agg_loss`` (``loss_agg_mode``; ``token-mean`` divides by the
  response tokens of the global batch, so the loss does not depend on the micro-batch split).
  The paper's ``N_r`` counts only the tokens with a non-zero reward: per step that is a constant
  factor, which Adam's scale invariance absorbs.

The imitation term (§5 ``λ·L_IM``) is not here: it is a loss over the GRM's *rewrite*, a
sequence the policy did not generate, and veRL's policy-loss interface carries only the
generated response's log-probs (``old_log_prob``, ``log_prob``, ``advantages``,
``response_mask``). Nor do the rewrite and its imitation weights travel in
``reward_extra_info``: veRL computes means and bootstrap statistics of every key there, so its
values must be numbers. veRL's RLMEC is therefore the paper's ``λ = 0`` ablation (``rlmec_no_im``
of the learning benchmark); ``rlmec train`` runs the whole objective, and the SDK's results
carry ``rewrite`` and ``imitation_weights`` for a trainer that adds the term itself.

Both register when this module is imported. veRL imports it in every process (driver and
workers) when the package is installed: ``import verl`` loads the ``verl.plugins`` entry point
``rlmec`` (``VERL_USE_EXTERNAL_PLUGINS``, default ``auto``). Without the entry point, name it
in ``actor_rollout_ref.model.external_lib=rlmec.clients.adapters.verl_objective``.
"""

from __future__ import annotations

from typing import Any

import torch
from verl.trainer.ppo.core_algos import agg_loss, register_adv_est, register_policy_loss

from rlmec.clients.adapters._objective import clipped_weights

NAME = "rlmec"


@register_adv_est(NAME)
def compute_rlmec_advantage(
    token_level_rewards: torch.Tensor, response_mask: torch.Tensor, **_: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages = token rewards on the response, 0 elsewhere.

    Args:
        token_level_rewards: ``[batch, response_len]`` (the reward manager's, minus veRL's KL
            penalty when ``algorithm.use_kl_in_reward`` is on).
        response_mask: ``[batch, response_len]``, 1 on response tokens.

    Returns: ``(advantages, returns)``, both ``[batch, response_len]`` and equal.
    """
    advantages = torch.where(response_mask.bool(), token_level_rewards, 0.0)
    return advantages, advantages


@register_policy_loss(NAME)
def compute_rlmec_policy_loss(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    config: Any = None,
    rollout_is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """§5's RL term with veRL's aggregation.

    Args:
        old_log_prob, log_prob, advantages, response_mask: ``[batch, response_len]``
            (``advantages`` are the token rewards of :func:`compute_rlmec_advantage`).
        loss_agg_mode: veRL's ``agg_loss`` mode.
        config: veRL's ``ActorConfig`` (``clip_ratio`` is ε; ``global_batch_info`` the
            global counts ``agg_loss`` normalises by).
        rollout_is_weights: veRL's rollout-correction weights, multiplied in when given.

    Returns: ``(scalar loss, metrics)``.
    """
    epsilon = float(config.clip_ratio) if config is not None else 0.3
    mask = response_mask.bool()
    zeros = torch.zeros_like(log_prob)
    behaviour = torch.where(mask, old_log_prob, zeros)
    rewards = torch.where(mask, advantages, zeros)
    current = torch.where(mask, log_prob, zeros)
    weights, ratio, clipped = clipped_weights(current, behaviour, rewards, epsilon)
    losses = -weights * current
    if rollout_is_weights is not None:
        losses = losses * rollout_is_weights
    batch_info = dict(getattr(config, "global_batch_info", None) or {})
    loss = agg_loss(loss_mat=losses, loss_mask=response_mask, loss_agg_mode=loss_agg_mode,
                    **batch_info)  # fmt: skip
    scored = mask & (rewards != 0)
    n = scored.sum().clamp(min=1)
    responses = mask.sum().clamp(min=1)
    metrics = {
        "actor/pg_clipfrac": float((clipped & scored).sum() / n),
        "actor/ppo_kl": float(
            torch.where(mask, behaviour - current.detach(), zeros).sum() / responses
        ),
        "actor/rlmec_mean_ratio": float(torch.where(scored, ratio, 0.0).sum() / n),
        "actor/rlmec_scored_tokens": float(scored.sum()),
    }
    return loss, metrics
