"""§3.1 token rewards from teacher-forced GRM log-probabilities."""

from __future__ import annotations

import math
from collections.abc import Sequence

from rlmec.shared.schemas import RewardParams


def token_rewards(
    logprobs: Sequence[float], *, correct: bool, params: RewardParams | None = None
) -> list[float]:
    """``r_t`` for every token of the prediction (EOS included), from ``log p_t``.

    Wrong answer: ``clip(p_t - threshold, floor, 0)``; correct: ``clip(p_t - threshold, 0, cap)``
    (docs/method.md §3.1). No discounting: each token's own value is its weight.
    """
    p = params or RewardParams()
    low, high = (0.0, p.cap) if correct else (p.floor, 0.0)
    return [min(max(math.exp(lp) - p.threshold, low), high) for lp in logprobs]


def penalise_edits(rewards: Sequence[float], dropped: Sequence[bool], floor: float) -> list[float]:
    """``RewardParams.edit_penalty``: ``floor`` on each token the rewrite does not keep
    (``dropped``, one flag per reward), the §3.1 reward elsewhere. Shapes: both ``[T]``."""
    if len(rewards) != len(dropped):
        raise ValueError(f"{len(rewards)} rewards but {len(dropped)} edit flags")
    return [floor if d else r for r, d in zip(rewards, dropped, strict=True)]
