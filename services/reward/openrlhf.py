"""OpenRLHF remote reward model (``POST /get_reward``, ``docs/interop.md``), without
FastAPI: requests become samples, scored samples become the scalar answer.

- response = ``query[len(prompt):]``, question = the prompt; without ``prompts`` both are the
  whole query (the GRM then sees the response in the problem too: send ``prompts``).
- reference answer = the label, which also serves as the reference solution text.
- reward = score = 1.0 when the final answer matches the label, else 0.0 (in [0, 1] as
  OpenRLHF's dynamic filtering expects); RLMEC token summaries go to ``extra_logs``.
- a query without a label (or with an empty one) cannot be judged: 0.0, ``rlmec_scored`` 0.
"""

from __future__ import annotations

from pydantic import ValidationError

from rlmec.services.reward.schemas import GetRewardRequest, GetRewardResponse
from rlmec.shared.errors import InvalidRequestError
from rlmec.shared.prompts import TaskType
from rlmec.shared.schemas import Sample, ScoredSample

LOG_NAMES = (
    "rlmec_correct",
    "rlmec_scored",
    "rlmec_cached",
    "rlmec_mean_token_reward",
    "rlmec_negative_token_fraction",
    "rlmec_edit_fraction",
)


def to_samples(request: GetRewardRequest, task: TaskType) -> list[Sample | None]:
    """One sample per query, or None where there is nothing to judge against."""
    out: list[Sample | None] = []
    for i, query in enumerate(request.query):
        prompt = request.prompts[i] if request.prompts is not None else None
        label = request.labels[i].strip() if request.labels is not None else ""
        question = prompt if prompt else query
        if not label or not question.strip():
            out.append(None)
            continue
        response = query[len(prompt) :] if prompt is not None else query
        try:
            sample = Sample(
                id=str(i),
                question=question,
                reference_solution=label,
                reference_answer=label,
                prediction=response,
                task=task,
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            raise InvalidRequestError(
                f"query {i}: {field}: {first['msg']}", param=f"query.{i}", code="invalid_sample"
            ) from None
        out.append(sample)
    return out


def _summary(result: ScoredSample | None) -> dict[str, float]:
    logs = dict.fromkeys(LOG_NAMES, 0.0)
    if result is None:
        return logs
    logs["rlmec_correct"] = float(result.correct)
    logs["rlmec_scored"] = float(result.status == "scored")
    logs["rlmec_cached"] = float(result.cached)
    if result.rewards is not None and result.rewards.values:
        values = result.rewards.values
        logs["rlmec_mean_token_reward"] = sum(values) / len(values)
        logs["rlmec_negative_token_fraction"] = sum(v < 0 for v in values) / len(values)
    if result.imitation_weights is not None and result.imitation_weights.values:
        weights = result.imitation_weights.values
        logs["rlmec_edit_fraction"] = sum(w >= 1.0 for w in weights) / len(weights)
    return logs


def to_response(results: list[ScoredSample | None]) -> GetRewardResponse:
    summaries = [_summary(r) for r in results]
    rewards = [s["rlmec_correct"] for s in summaries]
    return GetRewardResponse(
        rewards=rewards,
        scores=list(rewards),
        extra_logs={name: [s[name] for s in summaries] for name in LOG_NAMES},
    )
