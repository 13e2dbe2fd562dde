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
