"""§3.1 rewards of a wrong sample, with and without ``edit_penalty``, on a character-level
GRM tokenization (one token per character, then EOS): what the option adds is exactly the
tokens the GRM's own rewrite does not keep."""

from __future__ import annotations

import math

import pytest

from rlmec.services.reward.assemble import Item, finish
from rlmec.shared.answers import AnswerCheck
from rlmec.shared.grm_schemas import ScoreResult, TokenizeResult
from rlmec.shared.schemas import GrmInfo, RewardParams, Sample

# The slip is the 6 of the step; the answer line repeats it, and a GRM reading the prediction's
# own prefix finds that second 6 likely (the case edit_penalty is for).
PREDICTION = "9 + 8 = 16\nThe answer is: 16"
REWRITE = "9 + 8 = 17\nThe answer is: 17"
SLIP = PREDICTION.index("6")


def _tokens(text: str, logprobs: list[float] | None = None) -> dict[str, object]:
    ids = [*(ord(c) for c in text), 0]
    offsets = [*((i, i + 1) for i in range(len(text))), (len(text), len(text))]
    out: dict[str, object] = {"token_ids": ids, "tokens": [*text, ""], "offsets": offsets}
    if logprobs is not None:
        out |= {"logprobs": logprobs, "prompt_tokens": 3}
    return out


def _item() -> Item:
    # p_t = 0.9 everywhere but the step's slip (p = 0.2): §3.1 penalises that token only.
    logprobs = [math.log(0.9)] * (len(PREDICTION) + 1)
    logprobs[SLIP] = math.log(0.2)
    sample = Sample(question="9 + 8?", reference_solution="9 + 8 = 17\nThe answer is: 17",
                    prediction=PREDICTION)  # fmt: skip
    return Item(
        sample=sample, reference="17", rewrite=REWRITE, located_step=0,
        check=AnswerCheck(correct=False, predicted_answer="16", reason="mismatch"),
        score=ScoreResult.model_validate(_tokens(PREDICTION, logprobs)),
        rewrite_tokens=TokenizeResult.model_validate(_tokens(REWRITE)),
    )  # fmt: skip


def _rewards(params: RewardParams) -> list[float]:
    result = finish(_item(), params=params, grm=GrmInfo(model_id="m", revision="r"),
                    tokenizer=None)  # fmt: skip
    assert result.status == "scored" and result.rewards is not None
    return result.rewards.values


def test_the_paper_rewards_penalise_only_what_the_grm_finds_unlikely() -> None:
    rewards = _rewards(RewardParams())
    assert [i for i, r in enumerate(rewards) if r < 0] == [SLIP]
    assert rewards[SLIP] == pytest.approx(-0.1)


def test_edit_penalty_adds_the_floor_on_every_token_the_rewrite_changes() -> None:
    rewards = _rewards(RewardParams(edit_penalty=True, floor=-0.2))
    repeated = PREDICTION.rindex("6")
    assert [i for i, r in enumerate(rewards) if r < 0] == [SLIP, repeated]
    assert rewards[SLIP] == rewards[repeated] == pytest.approx(-0.2)
