"""§5's clipped token weights, for the framework plug-ins (veRL's policy loss, TRL's trainer).
``clients`` does not import the trainer, so they are written out here; the plug-ins' tests
hold them equal to :func:`rlmec.trainer.loss.importance_weights` through the whole loss."""

from __future__ import annotations

import torch


def clipped_weights(
    logps: torch.Tensor, old_logps: torch.Tensor, rewards: torch.Tensor, epsilon: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``w_t = stopgrad(min(ρ_t r_t, clip(ρ_t, 1-ε, 1+ε) r_t))``, ``ρ_t = exp(lp - lp_old)``.

    Args: ``[B, T]`` each, already zero outside the response. Returns ``(w, ρ, clipped)``, all
    ``[B, T]`` and detached; ``clipped`` is True where the clipped branch was taken.
    """
    ratio = torch.exp(logps.detach() - old_logps)
    unclipped, clipped = ratio * rewards, ratio.clamp(1 - epsilon, 1 + epsilon) * rewards
    return torch.minimum(unclipped, clipped), ratio, clipped < unclipped
