"""Per-token RLMEC rewards for SkyRL (issue 29, item 4).

SkyRL's ``GeneratorOutput["rewards"]`` takes one list of floats per response, one value per
response token, and its preprocessing (``convert_prompts_responses_to_batch_tensors``)
right-aligns them onto the response ids. :func:`add_token_rewards` fills that list from the
service for a batch a SkyRL generator made: call it at the end of your generator's
``generate`` (or in a wrapper around SkyRL's own generator)::

    output = await inner.generate(input_batch)
    return await add_token_rewards(input_batch, output, tokenizer, url=URL, api_key=KEY)

The question is the last user turn of each prompt, the reference is SkyRL's
``env_extras[i]["reward_spec"]["ground_truth"]`` (its datasets' convention). Each response's
values are §3.1's token rewards on its own ids (EOS value on a final EOS); an unscored sample
gets its 0/1 correctness on its last token, and one that cannot be judged 0 there, as
SkyRL's scalar rewards sit. SkyRL itself need not be importable here (its generator module
needs Python 3.12): the batch is read as the plain dicts SkyRL passes.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from rlmec.clients.adapters._common import last_user_turn
from rlmec.clients.adapters._samples import score_built, try_build_sample
from rlmec.clients.adapters._tokens import token_rewards
from rlmec.clients.async_ import AsyncClient
from rlmec.shared.prompts import TaskType
from rlmec.shared.schemas import RewardParams, Sample


def reference_of(extras: Mapping[str, Any] | None) -> str:
    """The ground truth SkyRL's datasets keep in ``reward_spec``."""
    spec = (extras or {}).get("reward_spec") or {}
    truth = spec.get("ground_truth") if isinstance(spec, Mapping) else None
    if truth is None:
        raise ValueError(
            "env_extras has no reward_spec.ground_truth; put the reference answer there, as "
            "SkyRL's dataset examples do"
        )
    return str(truth)


async def add_token_rewards(
    input_batch: Mapping[str, Any],
    output: MutableMapping[str, Any],
    tokenizer: Any,
    *,
    url: str,
    api_key: str | None = None,
    task: TaskType = "math",
    params: RewardParams | Mapping[str, float] | None = None,
    batch_size: int = 64,
    timeout: float = 180.0,
) -> MutableMapping[str, Any]:
    """Set ``output["rewards"]`` to per-token RLMEC rewards (one list per response, as long as
    its ``response_ids``) and ``output["rlmec_results"]`` to the service's results (None for a
    response that cannot be judged); returns ``output``."""
    prompts, responses = input_batch["prompts"], output["response_ids"]
    extras = input_batch.get("env_extras") or [None] * len(prompts)
    built: list[Sample | str] = []
    for prompt, ids, extra in zip(prompts, responses, extras, strict=True):
        try:
            reference = reference_of(extra)
        except ValueError as exc:
            built.append(str(exc))
            continue
        built.append(try_build_sample(
            question=last_user_turn(prompt), reference=reference, task=task,
            prediction=tokenizer.decode(ids, skip_special_tokens=True),
        ))  # fmt: skip
    reward_params = params if isinstance(params, RewardParams) or params is None else (
        RewardParams.model_validate(params))  # fmt: skip
    results = await score_built(
        built, lambda: AsyncClient(url, api_key=api_key, timeout=timeout),
        batch_size=batch_size, params=reward_params, policy_tokenizer=None,
    )  # fmt: skip
    pairs = zip(responses, results, strict=True)
    output["rewards"] = [token_rewards(tokenizer, ids, r) for ids, r in pairs]
    output["rlmec_results"] = results
    return output
