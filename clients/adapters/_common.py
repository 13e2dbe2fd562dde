"""Scalars from RLMEC signals, for frameworks that take one number per completion
(docs/interop.md: "Scalar reward only"). The token rewards themselves stay available through
the SDK for trainers that take dense rewards."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, get_args

from rlmec.shared.schemas import ScoredSample

ScoreMode = Literal["correctness", "mean_token_reward", "kept_fraction"]
SCORE_MODES: tuple[str, ...] = get_args(ScoreMode)


def check_mode(mode: str) -> ScoreMode:
    if mode not in SCORE_MODES:
        raise ValueError(f"score mode {mode!r} is unknown; use one of {', '.join(SCORE_MODES)}")
    return mode  # type: ignore[return-value]


def summarize(result: ScoredSample) -> dict[str, float]:
    """Numbers worth logging for one scored sample; always the same keys (veRL and OpenRLHF
    collect them into per-key lists, so a key missing for one sample breaks the batch).

    - ``correct``: 1/0 final-answer correctness (§4).
    - ``scored``: 1 when the GRM produced token rewards, 0 for an unscored sample.
    - ``mean_token_reward``: mean §3.1 ``r_t`` over the prediction's tokens and EOS.
    - ``kept_fraction``: share of tokens with ``r_t >= 0``, i.e. tokens the GRM would keep
      (``p_t >= threshold``); 1 for a correct prediction.
    - ``unjudged``: 1 for a completion that could not even be sent (see :func:`unjudged`).
    """
    values = result.rewards.values if result.rewards is not None else []
    scored = result.status == "scored" and bool(values)
    return {
        "correct": 1.0 if result.correct else 0.0,
        "scored": 1.0 if scored else 0.0,
        "mean_token_reward": sum(values) / len(values) if scored else 0.0,
        "kept_fraction": sum(v >= 0 for v in values) / len(values) if scored else 0.0,
        "unjudged": 0.0,
    }


def unjudged() -> dict[str, float]:
    """The summary of a completion that cannot be judged (control characters, no reference):
    not correct, not scored; the same keys as :func:`summarize`."""
    return {"correct": 0.0, "scored": 0.0, "mean_token_reward": 0.0, "kept_fraction": 0.0,
            "unjudged": 1.0}  # fmt: skip


def scalar(result: ScoredSample | None, mode: ScoreMode) -> float | None:
    """The per-completion scalar (``None`` result: a completion that cannot be judged).
    ``correctness`` is defined for every sample (0 when unjudged); the token-based modes are
    ``None`` for an unscored or unjudged sample (the GRM gave no token rewards)."""
    summary = summarize(result) if result is not None else unjudged()
    if mode == "correctness":
        return summary["correct"]
    if not summary["scored"]:
        return None
    return summary[mode]


def message_text(value: Any) -> str:
    """Text of a completion or prompt: a string as is; a conversation (list of
    ``{"role", "content"}``) as its last message's content (for prompts: the last user turn;
    for completions: the assistant's reply)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(m, Mapping) for m in value):
        content = value[-1].get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):  # multimodal content parts: keep the text parts
            return "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    raise TypeError(
        f"expected a string or a list of chat messages with 'content', got {type(value).__name__}"
    )


def last_user_turn(value: Any) -> str:
    if isinstance(value, list):
        users = [m for m in value if isinstance(m, Mapping) and m.get("role") == "user"]
        if users:
            return message_text(users[-1:])
    return message_text(value)
