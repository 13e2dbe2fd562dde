"""§3.1 token rewards from teacher-forced GRM log-probabilities, hand-computed."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from rlmec.shared.rewards import penalise_edits, token_rewards
from rlmec.shared.schemas import RewardParams

# p_t = 0.9, 0.55, 0.3, 0.45, 1.0 (the last one is EOS)
LOGPROBS = [math.log(p) for p in (0.9, 0.55, 0.3, 0.45)] + [0.0]


def test_wrong_prediction_rewards_are_clipped_to_floor_and_zero() -> None:
    # clip(p - 0.5, -0.1, 0): 0.4->0, 0.05->0, -0.2->-0.1, -0.05->-0.05, 0.5->0
    assert token_rewards(LOGPROBS, correct=False) == pytest.approx([0, 0, -0.1, -0.05, 0])


def test_correct_prediction_rewards_are_clipped_to_zero_and_cap() -> None:
    # clip(p - 0.5, 0, 0.5): 0.4, 0.05, 0, 0, 0.5
    assert token_rewards(LOGPROBS, correct=True) == pytest.approx([0.4, 0.05, 0, 0, 0.5])


def test_parameters_replace_the_paper_defaults() -> None:
    params = RewardParams(threshold=0.6, floor=-0.2, cap=0.25)
    # wrong: clip(p - 0.6, -0.2, 0): 0.3->0, -0.05, -0.3->-0.2, -0.15, 0.4->0
    assert token_rewards(LOGPROBS, correct=False, params=params) == pytest.approx(
        [0, -0.05, -0.2, -0.15, 0]
    )
    # correct: clip(p - 0.6, 0, 0.25): 0.25 (capped from 0.3), 0, 0, 0, 0.25
    assert token_rewards(LOGPROBS, correct=True, params=params) == pytest.approx(
        [0.25, 0, 0, 0, 0.25]
    )


def test_very_unlikely_tokens_and_empty_input() -> None:
    assert token_rewards([-1e9, -math.inf], correct=False) == pytest.approx([-0.1, -0.1])
    assert token_rewards([-1e9], correct=True) == [0.0]
    assert token_rewards([], correct=True) == []


def test_one_reward_per_logprob_and_signs() -> None:
    lps = [math.log(k / 20) for k in range(1, 21)]
    wrong = token_rewards(lps, correct=False)
    right = token_rewards(lps, correct=True)
    assert len(wrong) == len(right) == 20
    assert all(-0.1 <= r <= 0 for r in wrong) and all(0 <= r <= 0.5 for r in right)


@pytest.mark.parametrize(
    "bad", [{"threshold": 1.5}, {"floor": 0.1}, {"cap": -0.1}, {"threshold": 0.5, "x": 1}]
)
def test_reward_params_bounds(bad: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        RewardParams.model_validate(bad)


def test_edit_penalty_puts_the_floor_on_dropped_tokens_only() -> None:
    rewards = token_rewards(LOGPROBS, correct=False)  # [0, 0, -0.1, -0.05, 0]
    dropped = [False, True, False, True, False]
    assert penalise_edits(rewards, dropped, -0.1) == pytest.approx([0, -0.1, -0.1, -0.1, 0])
    with pytest.raises(ValueError, match="5 rewards but 4 edit flags"):
        penalise_edits(rewards, dropped[:4], -0.1)
