"""Building :class:`~rlmec.shared.schemas.Sample` rows from what RL frameworks hand a reward
function (prompt, completion, reference columns), and scoring them in concurrent batches."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError

from rlmec.clients.async_ import AsyncClient
from rlmec.clients.errors import RlmecClientError
from rlmec.shared.prompts import TaskType
from rlmec.shared.schemas import RewardParams, Sample, ScoredSample


def reference_fields(reference: str, task: TaskType) -> dict[str, str | None]:
    """A dataset's reference column may hold a worked solution (GSM8K's ``answer`` column:
    steps then ``#### 72``) or just the final answer (``72``). A solution is sent as the
    reference solution and the service extracts its answer (§4); a bare answer becomes both
    the answer and a one-line reference solution in the §2.3 format."""
    reference = reference.strip()
    if not reference:
        raise ValueError("the reference answer is empty; every row needs a reference answer")
    if "\n" in reference or "####" in reference or "The answer is" in reference:
        return {"reference_solution": reference, "reference_answer": None}
    line = f"The answer is: {reference}" if task == "math" else f"The answer is {reference}"
    return {"reference_solution": line, "reference_answer": reference}


def build_sample(
    *,
    question: str,
    prediction: str,
    reference: str,
    task: TaskType,
    solution: str | None = None,
    prompt: str | None = None,
    sample_id: str | None = None,
) -> Sample:
    fields = reference_fields(reference, task)
    if solution and solution.strip():
        fields = {"reference_solution": solution, "reference_answer": fields["reference_answer"]}
    return Sample(
        id=sample_id,
        question=question,
        prediction=prediction,
        task=task,
        prompt=prompt,
        reference_solution=fields["reference_solution"] or "",
        reference_answer=fields.get("reference_answer"),
    )


def try_build_sample(**fields: Any) -> Sample | str:
    """:func:`build_sample`, or why the sample cannot be judged (a control character in the
    completion, an empty reference, ...): one bad completion fails alone, never the batch."""
    try:
        return build_sample(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return f"{where}: {first['msg']}"
    except ValueError as exc:
        return str(exc)


async def score_samples(
    client: AsyncClient,
    samples: Sequence[Sample],
    *,
    batch_size: int,
    params: RewardParams | None,
    policy_tokenizer: str | None,
) -> list[ScoredSample]:
    """Score in batches of ``batch_size``, concurrently, keeping the input order."""
    batches = [samples[i : i + batch_size] for i in range(0, len(samples), batch_size)]
    responses = await asyncio.gather(
        *(
            client.token_rewards(b, params=params, policy_tokenizer=policy_tokenizer)
            for b in batches
        )
    )
    results = [r for response in responses for r in response.results]
    if len(results) != len(samples):
        raise RlmecClientError(
            f"the reward service returned {len(results)} results for {len(samples)} samples"
        )
    return results


async def score_built(
    built: Sequence[Sample | str],
    open_client: Callable[[], AsyncClient],
    *,
    batch_size: int,
    params: RewardParams | None,
    policy_tokenizer: str | None,
) -> list[ScoredSample | None]:
    """Score the entries of ``built`` that are samples (a client is opened only when there
    are some); None in the place of each one that could not be built (why is in ``built``)."""
    samples = [b for b in built if isinstance(b, Sample)]
    scored: list[ScoredSample] = []
    if samples:
        async with open_client() as client:
            scored = await score_samples(client, samples, batch_size=batch_size, params=params,
                                         policy_tokenizer=policy_tokenizer)  # fmt: skip
    by_sample = iter(scored)
    return [next(by_sample) if isinstance(b, Sample) else None for b in built]


def column(kwargs: dict[str, Any], key: str | None, n: int) -> list[Any] | None:
    """A dataset column from the framework's kwargs, checked to have one value per completion."""
    if key is None or key not in kwargs or kwargs[key] is None:
        return None
    values = list(kwargs[key])
    if len(values) != n:
        raise ValueError(f"column {key!r} has {len(values)} values for {n} completions")
    return values
