"""Turn GRM outputs into a :class:`ScoredSample`: §3.1 rewards, §3.3 imitation weights, §6
spans and the projection onto a policy tokenizer. Pure CPU work, run in a worker thread."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rlmec.services.reward.policy_tokenizers import PolicyTokenizer
from rlmec.shared.alignment import KEPT, imitation_weights, not_kept
from rlmec.shared.answers import AnswerCheck, extract_answer
from rlmec.shared.grm_schemas import ScoreResult, TokenizeResult
from rlmec.shared.rewards import penalise_edits, token_rewards
from rlmec.shared.schemas import (
    GrmInfo,
    PolicyProjection,
    RewardParams,
    Sample,
    ScoredSample,
    SpanValues,
    TokenValues,
    UnscoredReason,
)
from rlmec.shared.spans import project, to_spans


@dataclass
class Item:
    """One cache miss moving through the pipeline; ``result`` is set once it is decided."""

    sample: Sample
    reference: str | None = None
    check: AnswerCheck | None = None
    rewrite: str | None = None
    located_step: int | None = None
    score: ScoreResult | None = None
    rewrite_tokens: TokenizeResult | None = None
    result: ScoredSample | None = None

    @property
    def correct(self) -> bool:
        return self.check is not None and self.check.correct


def _base(item: Item) -> dict[str, object]:
    s = item.sample
    predicted = item.check.predicted_answer if item.check else extract_answer(s.prediction, s.task)
    return {
        "id": s.id,
        "task": s.task,
        "question": s.question,
        "prompt": s.prompt,
        "prediction": s.prediction,
        "correct": item.correct,
        "predicted_answer": predicted,
        "reference_answer": item.reference,
        "reference_solution": s.reference_solution,
        "located_step": item.located_step,
        "rewrite": item.rewrite,
        "behaviour_logprobs": s.behaviour_logprobs,
        "metadata": s.metadata,
    }


def unscored(item: Item, reason: UnscoredReason, message: str) -> ScoredSample:
    return ScoredSample.model_validate(
        {**_base(item), "status": "unscored", "reason": reason, "message": message}
    )


def _values(tokens: ScoreResult | TokenizeResult, values: Sequence[float]) -> TokenValues:
    return TokenValues(
        token_ids=tokens.token_ids,
        tokens=tokens.tokens,
        offsets=tokens.offsets,
        values=list(values),
    )


def _check_shape(tokens: ScoreResult | TokenizeResult, what: str) -> str | None:
    n = len(tokens.token_ids)
    counts = {"tokens": len(tokens.tokens), "offsets": len(tokens.offsets)}
    if isinstance(tokens, ScoreResult):
        counts["log-probs"] = len(tokens.logprobs)
    if n and all(count == n for count in counts.values()):
        return None
    listed = ", ".join(f"{count} {name}" for name, count in counts.items())
    return f"the GRM's {what} tokenization has {n} token ids, {listed} (EOS included)"


def _projection(
    tokenizer: PolicyTokenizer, item: Item, reward_spans: SpanValues, edit_spans: SpanValues
) -> PolicyProjection:
    """§6: values over the policy's own tokens of the prediction and the regular sequence."""
    pred = tokenizer.encode(item.sample.prediction)
    regular_text = item.sample.prediction if item.correct else (item.rewrite or "")
    regular = tokenizer.encode(regular_text)
    return PolicyProjection(
        tokenizer=tokenizer.name,
        rewards=TokenValues(
            token_ids=pred.token_ids,
            tokens=pred.tokens,
            offsets=pred.offsets,
            values=project(reward_spans, pred.text_offsets),
        ),
        imitation_weights=TokenValues(
            token_ids=regular.token_ids,
            tokens=regular.tokens,
            offsets=regular.offsets,
            values=project(edit_spans, regular.text_offsets),
        ),
    )


def finish(
    item: Item, *, params: RewardParams, grm: GrmInfo, tokenizer: PolicyTokenizer | None
) -> ScoredSample:
    """The scored sample of an item whose GRM work is done (or its unscored result)."""
    if item.result is not None:
        return item.result.model_copy(update={"grm": grm, "params": params})
    pred = item.score
    regular: ScoreResult | TokenizeResult | None = pred if item.correct else item.rewrite_tokens
    assert pred is not None and regular is not None, "finish() before the GRM answered"
    for score, what in ((pred, "prediction"), (regular, "rewrite")):
        problem = _check_shape(score, what)
        if problem:
            return unscored(item, "grm_error", problem).model_copy(
                update={"grm": grm, "params": params}
            )
    rewards = token_rewards(pred.logprobs, correct=item.correct, params=params)
    if item.correct:
        weights = [KEPT] * len(pred.token_ids)
    else:
        weights = imitation_weights(pred.token_ids, regular.token_ids)
        if params.edit_penalty:
            dropped = not_kept(pred.token_ids, regular.token_ids)
            rewards = penalise_edits(rewards, dropped, params.floor)
    reward_spans = to_spans(pred.offsets, rewards)
    edit_spans = to_spans(regular.offsets, weights)
    policy = _projection(tokenizer, item, reward_spans, edit_spans) if tokenizer else None
    return ScoredSample.model_validate(
        {
            **_base(item),
            "status": "scored",
            "regular_sequence": item.sample.prediction if item.correct else item.rewrite,
            "rewards": _values(pred, rewards),
            "imitation_weights": _values(regular, weights),
            "reward_spans": reward_spans,
            "edit_spans": edit_spans,
            "policy": policy,
            "grm": grm,
            "params": params,
        }
    )


def finish_all(
    items: Sequence[Item], *, params: RewardParams, grm: GrmInfo, tokenizer: PolicyTokenizer | None
) -> list[ScoredSample]:
    return [finish(it, params=params, grm=grm, tokenizer=tokenizer) for it in items]
