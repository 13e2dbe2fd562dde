"""veRL custom reward function backed by the RLMEC reward service.

veRL config::

    custom_reward_function:
      path: pkg://rlmec.clients.adapters.verl  # a module name (or a file importing it)
      name: compute_score
      reward_kwargs: {score_mode: correctness}   # optional

Environment: ``RLMEC_URL`` (required, e.g. ``http://reward:8002``), ``RLMEC_API_KEY``,
``RLMEC_TIMEOUT`` (seconds, default 180), ``RLMEC_POLICY_TOKENIZER``.

veRL passes ``ground_truth`` (the reference answer) and ``extra_info``; its GSM8K/MATH
preprocessing puts the raw ``question`` (and for GSM8K the worked ``answer``) there. The
question is required: RLMEC scores a solution against its problem.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

import httpx

from rlmec.clients._base import URL_ENV
from rlmec.clients.adapters._common import check_mode, scalar, summarize, unjudged
from rlmec.clients.adapters._samples import try_build_sample
from rlmec.clients.async_ import AsyncClient
from rlmec.shared.prompts import TaskType

T = TypeVar("T")
QA_SOURCES = ("ecqa", "qasc", "openbookqa", "arc", "commonsense")


def _task_of(data_source: str, extra_info: dict[str, Any]) -> TaskType:
    task = extra_info.get("task")
    if task in ("math", "qa"):
        return task
    return "qa" if any(s in data_source.lower() for s in QA_SOURCES) else "math"


def _question(extra_info: dict[str, Any]) -> str:
    for key in ("question", "problem", "query"):
        value = extra_info.get(key)
        if isinstance(value, str) and value.strip():
            return value
    raise ValueError(
        "extra_info has no 'question' (or 'problem'/'query'); RLMEC needs the problem text: "
        "add it to extra_info in your veRL data preprocessing"
    )


async def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: str,
    extra_info: dict[str, Any] | None = None,
    *,
    score_mode: str = "correctness",
    transport: httpx.AsyncBaseTransport | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """``{"score": float, "rlmec_correct", "rlmec_scored", "rlmec_mean_token_reward",
    "rlmec_kept_fraction"}``. ``score`` follows ``score_mode`` (see
    :func:`rlmec.clients.adapters.trl.make_reward_func`); when a token-based mode has no
    value (unscored sample) the score falls back to 0/1 correctness, since veRL needs a
    number. Every key is always present (veRL gathers them into per-key lists)."""
    mode = check_mode(score_mode)
    url = os.environ.get(URL_ENV)
    if not url:
        raise ValueError(f"${URL_ENV} is not set; export {URL_ENV}=http://HOST:PORT")
    info = dict(extra_info or {})
    task = _task_of(data_source, info)
    worked = info.get("answer") if isinstance(info.get("answer"), str) else None
    sample = try_build_sample(
        question=_question(info),
        prediction=solution_str,
        reference=str(ground_truth),
        task=task,
        solution=worked if worked and worked.strip() != str(ground_truth).strip() else None,
        sample_id=str(info["index"]) if "index" in info else None,
    )
    if isinstance(sample, str):  # cannot be judged (e.g. control characters): 0, not a crash
        return {"score": 0.0, **{f"rlmec_{k}": v for k, v in unjudged().items()}}
    async with AsyncClient(
        url,
        api_key=os.environ.get("RLMEC_API_KEY") or None,
        timeout=float(os.environ.get("RLMEC_TIMEOUT", "180")),
        transport=transport,
    ) as client:
        response = await client.token_rewards(
            [sample], policy_tokenizer=os.environ.get("RLMEC_POLICY_TOKENIZER") or None
        )
    result = response.results[0]
    value = scalar(result, mode)
    summary = summarize(result)
    out: dict[str, Any] = {"score": summary["correct"] if value is None else value}
    out.update({f"rlmec_{k}": v for k, v in summary.items()})
    return out


def compute_score_sync(
    data_source: str,
    solution_str: str,
    ground_truth: str,
    extra_info: dict[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """:func:`compute_score` for veRL's legacy reward managers (``use_reward_loop=False``),
    which call the function synchronously: ``custom_reward_function.name=compute_score_sync``.
    Works also where the calling thread already runs an event loop."""
    return run_sync(compute_score(data_source, solution_str, ground_truth, extra_info, **kwargs))


def run_sync(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` to completion from synchronous code, also when this thread already runs an
    event loop (then in a helper thread: a running loop cannot be re-entered)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work).result()
