"""The RLMEC objective (docs/method.md §5) as pure functions of tensors.

Per-token terms first, one explicit reduction after (torchtune ``rlhf`` style). Everything here
is usable from any trainer: give it per-token log-probs and the masks/values of the glossary
(``loss_mask``, ``logprobs``, ``ref_logprobs``, ``rewards``, ``imitation_weights``).

Normalisation. The paper divides each micro-batch's sums by that micro-batch's token counts
(``N_r``, ``N_c``), so the loss of an optimizer step depends on how its batch is split across
accumulation steps and ranks. ``normalization="step"`` (the default of the trainer) divides by
the counts of the whole optimizer step instead: pass those counts as ``num_reward_tokens`` /
``num_imitation_tokens`` and the micro-batch losses add up to exactly the loss of the whole
batch, whatever the split. ``normalization="micro_batch"`` (counts left ``None``) is the
paper-exact mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

Normalization = Literal["step", "micro_batch"]
RlTokens = Literal["rewarded", "response"]  # which response tokens N_r counts

DEFAULT_EPSILON = 0.3
DEFAULT_IMITATION_COEF = 1.0


@dataclass(frozen=True)
class RlmecLossOutput:
    """The total loss and its parts; statistics are detached scalars over the masked tokens.

    ``loss``/``rl_loss``/``imitation_loss`` keep the graph. ``mean_ratio`` and
    ``clip_fraction`` are over tokens with a non-zero reward; ``mean_reward`` over all response
    tokens of the predictions. ``num_reward_tokens``/``num_imitation_tokens`` are the counts of
    this call's tokens (not the normaliser), for aggregation by the caller.
    """

    loss: torch.Tensor
    rl_loss: torch.Tensor
    imitation_loss: torch.Tensor
    mean_ratio: torch.Tensor
    clip_fraction: torch.Tensor
    mean_reward: torch.Tensor
    num_reward_tokens: torch.Tensor
    num_imitation_tokens: torch.Tensor
    kl: torch.Tensor | None = None  # the KL term before its coefficient (loss.kl_coef > 0)


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Log-probability of each token given the tokens before it.

    Args:
        logits: ``[batch, seq, vocab]`` model outputs (position ``j`` predicts token ``j+1``).
        input_ids: ``[batch, seq]``.

    Returns:
        ``[batch, seq]``: entry ``j`` is ``log p(input_ids[:, j] | input_ids[:, :j])``; entry 0
        has no context and is 0 (never inside a response mask, which starts after the prompt).
    """
    targets = input_ids[:, 1:]
    flat = logits[:, :-1].float().reshape(-1, logits.size(-1))
    lp = -F.cross_entropy(flat, targets.reshape(-1), reduction="none").view_as(targets)
    return F.pad(lp, (1, 0), value=0.0)


def importance_weights(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    rewards: torch.Tensor,
    *,
    epsilon: float = DEFAULT_EPSILON,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """§5 ``w_t = stopgrad(min(ρ_t·r_t, clip(ρ_t, 1-ε, 1+ε)·r_t))``, ``ρ_t = exp(lp - lp_ref)``.

    Args: all ``[batch, seq]``. Returns ``(w, ρ, clipped)``, all ``[batch, seq]`` and detached;
    ``clipped`` is True where the clipped branch is strictly smaller (it was the one taken).
    """
    ratio = torch.exp(logprobs.detach().float() - ref_logprobs.float())
    unclipped = ratio * rewards
    clipped_val = ratio.clamp(1.0 - epsilon, 1.0 + epsilon) * rewards
    weights = torch.minimum(unclipped, clipped_val)
    return weights, ratio, clipped_val < unclipped


def _masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, values, torch.zeros_like(values)).sum()


def _masked(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``values`` with 0 outside ``mask``, in fp32. where(), not multiplication, and before
    any arithmetic: padded positions may hold NaN/inf (fully masked attention rows), and
    NaN * 0 is NaN in the value and in the gradient."""
    values = values.float()
    return torch.where(mask, values, torch.zeros_like(values))


def _normalise(total: torch.Tensor, count: torch.Tensor | float) -> torch.Tensor:
    """``total / count``, and 0 when ``count`` is 0 (§5: no non-zero reward → ``L_RL = 0``;
    the released code divided by zero). ``total`` is then 0 too, so the graph stays intact."""
    count_t = torch.as_tensor(count, dtype=total.dtype, device=total.device)
    return total / count_t.clamp(min=1.0)


def rl_loss(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    rewards: torch.Tensor,
    loss_mask: torch.Tensor,
    *,
    epsilon: float = DEFAULT_EPSILON,
    num_reward_tokens: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """§5 ``L_RL = -Σ_t w_t · log π_θ(y_t) / N_r`` over the prediction's response tokens.

    Args:
        logprobs: ``[batch, seq]`` policy log-probs of the prediction tokens (with grad).
        ref_logprobs: ``[batch, seq]`` reference (behaviour) log-probs.
        rewards: ``[batch, seq]`` token rewards ``r_t``.
        loss_mask: ``[batch, seq]`` bool, True on response tokens (EOS included).
        epsilon: clip range ε of the ratio.
        num_reward_tokens: normaliser ``N_r``; ``None`` = this call's count of masked tokens
            with ``r_t ≠ 0`` (paper, per micro-batch); pass the optimizer step's count for
            split-invariant normalisation.

    Returns: scalar.
    """
    mask = loss_mask.bool()
    logprobs, ref_logprobs, rewards = (_masked(t, mask) for t in (logprobs, ref_logprobs, rewards))
    weights, _, _ = importance_weights(logprobs, ref_logprobs, rewards, epsilon=epsilon)
    total = (-weights * logprobs).sum()
    if num_reward_tokens is None:
        num_reward_tokens = (mask & (rewards != 0)).sum()
    return _normalise(total, num_reward_tokens)


def imitation_loss(
    logprobs: torch.Tensor,
    imitation_weights: torch.Tensor,
    loss_mask: torch.Tensor,
    *,
    num_imitation_tokens: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """§5 ``L_IM = Σ_t c_t · (-log π_θ(ŷ_t)) / N_c`` over the regular sequence's tokens.

    Args:
        logprobs: ``[batch, seq]`` policy log-probs of the regular-sequence tokens.
        imitation_weights: ``[batch, seq]`` ``c_t`` (§3.3: 1.0 edited, 0.5 kept).
        loss_mask: ``[batch, seq]`` bool, True on response tokens (EOS included).
        num_imitation_tokens: normaliser ``N_c``; ``None`` = this call's count of masked
            tokens with ``c_t ≠ 0``.

    Returns: scalar.
    """
    mask = loss_mask.bool()
    total = (-_masked(imitation_weights, mask) * _masked(logprobs, mask)).sum()
    if num_imitation_tokens is None:
        num_imitation_tokens = (mask & (imitation_weights != 0)).sum()
    return _normalise(total, num_imitation_tokens)


def rlmec_loss(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    rewards: torch.Tensor,
    loss_mask: torch.Tensor,
    regular_logprobs: torch.Tensor,
    imitation_weights: torch.Tensor,
    regular_loss_mask: torch.Tensor,
    *,
    epsilon: float = DEFAULT_EPSILON,
    imitation_coef: float = DEFAULT_IMITATION_COEF,
    num_reward_tokens: torch.Tensor | float | None = None,
    num_imitation_tokens: torch.Tensor | float | None = None,
) -> RlmecLossOutput:
    """§5 ``L = L_RL + λ·L_IM``.

    Args:
        logprobs, ref_logprobs, rewards, loss_mask: ``[batch, seq]`` over the predictions
            (see :func:`rl_loss`).
        regular_logprobs, imitation_weights, regular_loss_mask: ``[batch, seq2]`` over the
            regular sequences (see :func:`imitation_loss`).
        epsilon: ε (0.3 in the paper). imitation_coef: λ (1.0 in the paper).
        num_reward_tokens, num_imitation_tokens: ``N_r``, ``N_c`` of the optimizer step
            (``normalization="step"``) or ``None`` for per-call counts (paper-exact).
    """
    mask = loss_mask.bool()
    l_rl = rl_loss(
        logprobs, ref_logprobs, rewards, mask, epsilon=epsilon, num_reward_tokens=num_reward_tokens
    )
    l_im = imitation_loss(
        regular_logprobs,
        imitation_weights,
        regular_loss_mask,
        num_imitation_tokens=num_imitation_tokens,
    )
    with torch.no_grad():
        lp, ref = _masked(logprobs, mask), _masked(ref_logprobs, mask)
        _, ratio, clipped = importance_weights(lp, ref, rewards, epsilon=epsilon)
        scored = mask & (rewards != 0)
        n_scored = scored.sum()
        n_resp = mask.sum()
        stats = (
            _normalise(_masked_sum(ratio, scored), n_scored),
            _normalise(_masked_sum(clipped.float(), scored), n_scored),
            _normalise(_masked_sum(rewards.float(), mask), n_resp),
        )
        n_im = (regular_loss_mask.bool() & (imitation_weights != 0)).sum()
    return RlmecLossOutput(
        loss=l_rl + imitation_coef * l_im,
        rl_loss=l_rl,
        imitation_loss=l_im,
        mean_ratio=stats[0],
        clip_fraction=stats[1],
        mean_reward=stats[2],
        num_reward_tokens=n_scored,
        num_imitation_tokens=n_im,
    )


def kl_penalty(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    loss_mask: torch.Tensor,
    *,
    num_tokens: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """A per-token KL estimate of the policy to the reference, ``Σ_t k3_t / N``, with
    ``k3_t = exp(d_t) - d_t - 1``, ``d_t = log π_ref(y_t) - log π_θ(y_t)`` (Schulman's
    non-negative estimator, as DeepSeekMath's GRPO uses it). It keeps the policy near the
    start while the RL term carries the learning at a small λ (issue 42: λ = 0 alone collapsed
    the policy).

    Args:
        logprobs: ``[batch, seq]`` policy log-probs of the prediction tokens (with grad).
        ref_logprobs: ``[batch, seq]`` the reference policy's log-probs of the same tokens.
        loss_mask: ``[batch, seq]`` bool, True on response tokens (EOS included).
        num_tokens: normaliser ``N``; ``None`` = this call's masked tokens.

    Returns: scalar (0 when the policy equals the reference).
    """
    mask = loss_mask.bool()
    diff = _masked(ref_logprobs, mask) - _masked(logprobs, mask)
    per_token = torch.exp(diff) - diff - 1.0
    n = mask.sum() if num_tokens is None else num_tokens
    return _normalise(torch.where(mask, per_token, torch.zeros_like(per_token)).sum(), n)


def sft_loss(
    logprobs: torch.Tensor,
    loss_mask: torch.Tensor,
    num_tokens: torch.Tensor | float,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Negative log-likelihood of the target tokens (GRM training, docs/method.md §1 step 4).

    Args:
        logprobs: ``[batch, seq]`` from :func:`token_logprobs`.
        loss_mask: ``[batch, seq]``, True on target tokens (and EOS), never on the prompt.
        num_tokens: the total weight of the whole optimizer step (all micro-batches and
            ranks): its target tokens, or its examples when each example's tokens weigh
            ``1 / len(target)``; so the step's loss is a mean however it is split.
        weights: ``[batch, seq]`` per-token weights (1 on every target token when None).

    Returns:
        The scalar ``-sum(weights * logprobs[mask]) / num_tokens`` (0 for an empty mask).
    """
    nll = -_masked(logprobs, loss_mask)
    if weights is not None:
        nll = nll * weights.float()
    return _normalise(nll.sum(), num_tokens)
