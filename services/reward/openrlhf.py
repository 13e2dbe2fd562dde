"""OpenRLHF remote reward model (``POST /get_reward``, ``docs/interop.md``), without
FastAPI: requests become samples, scored samples become the scalar answer.

- response = what follows the prompt in the query. OpenRLHF's 2025 protocol decodes left-padded
  batches with their pad tokens, so the prompt is looked for after any padding, and special
  tokens trailing the response (EOS, padding) are not part of the solution. Without ``prompts``
  the query is both question and response (the GRM then sees the response in the problem too:
  send ``prompts``). With a chat template named (``?chat_template=`` or the team's setting),
  the question is the user's message without the markup.
- reference answer = the label (a number is read as text), which also serves as the reference
  solution text.
- reward = score = 1.0 when the final answer matches the label, else 0.0 (in [0, 1] as
  OpenRLHF's dynamic filtering expects); RLMEC token summaries go to ``extra_logs``.
- a query that cannot be judged (no label, control characters, a prompt it does not contain,
  an oversized text) gets 0.0 and ``rlmec_unscored`` 1 with the reason as its own 0/1 column
  (``extra_logs`` values must be numbers: OpenRLHF turns each into a tensor); the rest of the
  batch is scored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import get_args

from rlmec.services.reward.schemas import GetRewardRequest, GetRewardResponse, Label
from rlmec.shared.chat import ChatMarkup
from rlmec.shared.prompts import TaskType
from rlmec.shared.schemas import MAX_TEXT_CHARS, Sample, ScoredSample, UnscoredReason, check_text

# Why a query was not judged (each a 0/1 column ``rlmec_unscored_<reason>`` in extra_logs).
QUERY_REASONS = (
    "missing_label", "missing_question", "invalid_text", "text_too_long", "prompt_not_in_query",
)  # fmt: skip

LOG_NAMES = (
    "rlmec_correct",
    "rlmec_scored",
    "rlmec_cached",
    "rlmec_mean_token_reward",
    "rlmec_negative_token_fraction",
    "rlmec_edit_fraction",
    "rlmec_unscored",
    *(f"rlmec_unscored_{reason}" for reason in QUERY_REASONS),
    # The service's own reasons too (issue 44): an answer-only label leaves every wrong sample
    # unscored with rewrite_incorrect when the GRM needs a worked reference, and says so here.
    *(f"rlmec_unscored_{reason}" for reason in get_args(UnscoredReason)),
)

# Special tokens as chat templates and tokenizers spell them (<|im_end|>, <|endoftext|>, </s>,
# <pad>, <eos>, ...): a run of them ends a decoded response, it is not part of the solution.
_SPECIAL_AT_END = re.compile(r"(?:<\|[^<>|\s]{1,64}\|>|</?s>|<pad>|<eos>|<unk>)$")


@dataclass(frozen=True)
class Unjudged:
    """A query the service could not turn into a sample, and why."""

    reason: str
    message: str


def to_samples(
    request: GetRewardRequest, task: TaskType, markup: ChatMarkup | None = None
) -> list[Sample | Unjudged]:
    """One sample per query, or :class:`Unjudged` with the reason it cannot be judged. With
    ``markup`` the question is the user's message inside the chat-templated prompt (the prompt
    as it is where it does not carry that template's markup)."""
    labels: list[Label] = list(request.labels or [None] * len(request.query))
    out: list[Sample | Unjudged] = []
    for i, (query, label) in enumerate(zip(request.query, labels, strict=True)):
        prompt = request.prompts[i] if request.prompts is not None else None
        out.append(_to_sample(i, query, prompt, label, task, markup))
    return out


def _to_sample(
    i: int, query: str, prompt: str | None, label: Label, task: TaskType, markup: ChatMarkup | None
) -> Sample | Unjudged:
    reference = _label_text(label)
    if reference is None:
        return Unjudged("missing_label", f"query {i} has no label to judge against")
    for name, text in (("query", query), ("prompt", prompt or ""), ("label", reference)):
        if len(text) > MAX_TEXT_CHARS:
            size = f"{len(text)} characters, over {MAX_TEXT_CHARS}"
            return Unjudged("text_too_long", f"{name} {i}: {size}")
        try:
            check_text(text)
        except ValueError as exc:
            return Unjudged("invalid_text", f"{name} {i}: {exc}")
    question, response = query, query
    if prompt:
        start = query.find(prompt)
        if start < 0:
            return Unjudged("prompt_not_in_query", f"query {i} does not contain prompts[{i}]")
        question, response = prompt, query[start + len(prompt) :]
        if markup is not None:
            question = markup.question(prompt) or prompt
    if not question.strip():
        return Unjudged("missing_question", f"query {i} has no question text")
    return Sample(
        id=str(i),
        question=question,
        reference_solution=reference,
        reference_answer=reference,
        prediction=strip_trailing_special(response),
        task=task,
    )


def strip_trailing_special(text: str) -> str:
    """``text`` without the special tokens (and the whitespace around them) that end it. Linear
    in the text: only a short tail is matched at each step (a regex over the whole response
    backtracks quadratically on long runs of whitespace)."""
    out, removed = text, False
    while True:
        stripped = out.rstrip()
        found = _SPECIAL_AT_END.search(stripped[-80:])
        if found is None:
            return stripped if removed else out
        out, removed = stripped[: len(stripped) - len(found.group())], True


def _label_text(label: Label) -> str | None:
    """A label as reference text: numbers as written (72, 2.5), never in exponent form."""
    if isinstance(label, bool) or label is None:
        return None
    if isinstance(label, float) and label.is_integer():
        label = int(label)
    text = label.strip() if isinstance(label, str) else str(label)
    return text or None


def _summary(result: ScoredSample | Unjudged) -> dict[str, float]:
    logs = dict.fromkeys(LOG_NAMES, 0.0)
    if isinstance(result, Unjudged):
        logs["rlmec_unscored"] = 1.0
        logs[f"rlmec_unscored_{result.reason}"] = 1.0
        return logs
    logs["rlmec_correct"] = float(result.correct)
    logs["rlmec_scored"] = float(result.status == "scored")
    logs["rlmec_unscored"] = float(result.status == "unscored")
    if result.status == "unscored" and f"rlmec_unscored_{result.reason}" in logs:
        logs[f"rlmec_unscored_{result.reason}"] = 1.0
    logs["rlmec_cached"] = float(result.cached)
    if result.rewards is not None and result.rewards.values:
        values = result.rewards.values
        logs["rlmec_mean_token_reward"] = sum(values) / len(values)
        logs["rlmec_negative_token_fraction"] = sum(v < 0 for v in values) / len(values)
    if result.imitation_weights is not None and result.imitation_weights.values:
        weights = result.imitation_weights.values
        logs["rlmec_edit_fraction"] = sum(w >= 1.0 for w in weights) / len(weights)
    return logs


def to_response(results: list[ScoredSample | Unjudged]) -> GetRewardResponse:
    summaries = [_summary(r) for r in results]
    rewards = [s["rlmec_correct"] for s in summaries]
    return GetRewardResponse(
        rewards=rewards,
        scores=list(rewards),
        extra_logs={name: [s[name] for s in summaries] for name in LOG_NAMES},
    )
