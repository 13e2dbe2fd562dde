"""TRL ``GRPOTrainer`` reward function backed by the RLMEC reward service.

>>> from rlmec.clients.adapters.trl import make_reward_func
>>> reward = make_reward_func("http://reward:8002", api_key="team-key")  # doctest: +SKIP
>>> GRPOTrainer(model=..., reward_funcs=[reward], train_dataset=ds)     # doctest: +SKIP

TRL calls ``reward_func(prompts, completions, completion_ids, **columns)`` (async functions
are awaited concurrently) and takes one ``float`` per completion, ``None`` meaning "not
applicable". The dataset must have a reference-answer column (``answer_key``); a
``question`` column is used when present, otherwise the last user turn of the prompt.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx

from rlmec.clients._base import DEFAULT_MAX_RETRIES, DEFAULT_MAX_RETRY_WAIT
from rlmec.clients.adapters._common import (
    ScoreMode,
    check_mode,
    last_user_turn,
    message_text,
    scalar,
    summarize,
    unjudged,
)
from rlmec.clients.adapters._samples import column, score_built, try_build_sample
from rlmec.clients.async_ import AsyncClient
from rlmec.shared.prompts import TaskType
from rlmec.shared.schemas import MAX_BATCH, RewardParams, Sample, ScoredSample

RewardFunc = Callable[..., Awaitable[list[float | None]]]


def make_reward_func(
    base_url: str,
    *,
    api_key: str | None = None,
    answer_key: str = "answer",
    question_key: str = "question",
    solution_key: str | None = "solution",
    task: TaskType = "math",
    score: ScoreMode = "correctness",
    params: RewardParams | Mapping[str, float] | None = None,
    policy_tokenizer: str | None = None,
    batch_size: int = 64,
    timeout: float = 180.0,
    max_retries: int = DEFAULT_MAX_RETRIES,
    max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT,
    transport: httpx.AsyncBaseTransport | None = None,
) -> RewardFunc:
    """Build an ``async def reward_func(prompts, completions, completion_ids, **kwargs)``.

    ``score`` picks the scalar per completion:

    - ``"correctness"`` (default): 1.0 when the final answer matches the reference, else 0.0;
      defined for every completion.
    - ``"mean_token_reward"``: mean of the §3.1 token rewards (in [-0.1, 0] when wrong,
      [0, 0.5] when correct, with the paper's parameters); ``None`` when the GRM could not
      score the completion (e.g. its rewrite missed the reference).
    - ``"kept_fraction"``: share of tokens the GRM would keep (reward >= 0); ``None`` likewise.

    Plain-string prompts are sent as the exact policy prompt; conversational prompts (lists of
    messages) give their last user turn as the question and completions their reply text.
    """
    mode = check_mode(score)
    if not 1 <= batch_size <= MAX_BATCH:
        raise ValueError(f"batch_size {batch_size} is out of range; use 1..{MAX_BATCH}")
    reward_params = (
        params if isinstance(params, RewardParams) or params is None
        else RewardParams.model_validate(params)
    )  # fmt: skip

    async def reward_func(
        prompts: list[Any],
        completions: list[Any],
        completion_ids: list[list[int]] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        n = len(completions)
        answers = column(kwargs, answer_key, n)
        if answers is None:
            raise ValueError(
                f"the dataset has no {answer_key!r} column; pass answer_key= naming the column "
                "that holds the reference answer or solution"
            )
        questions = column(kwargs, question_key, n)
        solutions = column(kwargs, solution_key, n)
        tasks = column(kwargs, "task", n)
        built = [
            try_build_sample(
                question=str(questions[i]) if questions else last_user_turn(prompts[i]),
                prediction=message_text(completions[i]),
                reference=str(answers[i]),
                task=tasks[i] if tasks else task,
                solution=str(solutions[i]) if solutions and solutions[i] else None,
                prompt=prompts[i] if isinstance(prompts[i], str) else None,
            )
            for i in range(n)
        ]
        results = await score_built(
            built,
            lambda: AsyncClient(base_url, api_key=api_key, timeout=timeout,
                                max_retries=max_retries, max_retry_wait=max_retry_wait,
                                transport=transport),
            batch_size=batch_size, params=reward_params, policy_tokenizer=policy_tokenizer,
        )  # fmt: skip
        reward_func.last_results = results  # type: ignore[attr-defined]  # RlmecGRPOTrainer's
        _log(kwargs, results, built)
        return [scalar(r, mode) for r in results]

    # The last call's results, in the order of its completions: RlmecGRPOTrainer
    # (:mod:`.trl_trainer`) takes the token rewards and the rewrites from them.
    reward_func.last_results = []  # type: ignore[attr-defined]
    # TRL logs each reward function under its __name__.
    reward_func.__name__ = f"rlmec_{mode}"
    reward_func.__qualname__ = reward_func.__name__
    return reward_func


def _log(
    kwargs: dict[str, Any], results: list[ScoredSample | None], built: list[Sample | str]
) -> None:
    """RLMEC figures through TRL's hooks (``GRPOTrainer`` passes ``log_metric(name, value)``,
    averaged per logging step, and ``log_extra(column, values)`` for its completions table);
    older TRL versions pass neither and nothing is logged."""
    summaries = [summarize(r) if r is not None else unjudged() for r in results]
    log_metric, log_extra = kwargs.get("log_metric"), kwargs.get("log_extra")
    if callable(log_metric) and summaries:
        for key in ("correct", "scored", "mean_token_reward", "kept_fraction", "unjudged"):
            log_metric(f"rlmec/{key}", sum(s[key] for s in summaries) / len(summaries))
    if callable(log_extra):
        status = [
            (r.status if r.reason is None else f"unscored: {r.reason}")
            if r is not None else f"unjudged: {b}"
            for r, b in zip(results, built, strict=True)
        ]  # fmt: skip
        log_extra("rlmec_status", status)
