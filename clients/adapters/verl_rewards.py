"""Dense RLMEC token rewards inside veRL: two reward managers, one per veRL reward path.

- :class:`RlmecRewardManager` for the reward loop (``use_reward_loop=True``, veRL >= 0.6's
  default path): ``run_single`` per sample, coalesced into few HTTP calls, and
  ``assemble_rm_scores`` placing each sample's per-token values into ``rm_scores``::

      reward:
        reward_manager:
          source: importlib
          name: RlmecRewardManager
          module: {path: pkg://rlmec.clients.adapters.verl_rewards}  # not a file path:
          # veRL loads a file without registering its module, and a dataclass then fails

- :class:`RlmecLegacyRewardManager` for the legacy managers (``use_reward_loop=False``):
  ``__call__(data, return_dict)`` scores the whole batch in concurrent batches of 64;
  registered as ``reward_manager: rlmec`` once this module is imported (e.g. from the file
  named in ``custom_reward_function.path``).

Both return method §3.1's token rewards projected onto the policy's *own* response tokens
(method §6): the service returns them as character spans of the decoded response, and they go
onto veRL's response ids by those tokens' character offsets (exactly the service's token values
when the tokenizer reproduces the ids). A response that ends with EOS gets the EOS value there.
An unscored sample (e.g. the GRM's rewrite missed the reference) or one that cannot be judged
gets its 0/1 correctness on its last token, as veRL's own managers place a scalar.

Configuration from the environment, as :mod:`.verl`: ``RLMEC_URL``, ``RLMEC_API_KEY``,
``RLMEC_TIMEOUT``. The question comes from ``extra_info`` (``question``/``problem``/``query``).
veRL must be installed (this module imports it).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from verl import DataProto
from verl.experimental.reward_loop.reward_manager import register as register_loop
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase
from verl.workers.reward_manager import register as register_legacy
from verl.workers.reward_manager.abstract import AbstractRewardManager

from rlmec.clients.adapters._common import summarize, unjudged
from rlmec.clients.adapters._samples import score_built, try_build_sample
from rlmec.clients.adapters._tokens import token_rewards
from rlmec.clients.adapters.verl import URL_ENV, _question, _task_of, run_sync
from rlmec.clients.async_ import AsyncClient
from rlmec.shared.schemas import Sample, ScoredSample

BATCH = 64


@dataclass(frozen=True)
class Response:
    """One veRL sample: its valid response ids and what the reward needs."""

    ids: list[int]
    data_source: str
    ground_truth: Any
    extra_info: dict[str, Any]


def responses(data: DataProto) -> list[Response]:
    prompt_len = data.batch["prompts"].shape[-1]
    valid = data.batch["attention_mask"][:, prompt_len:].sum(dim=-1)
    out = []
    for i in range(len(data)):
        ids = data.batch["responses"][i][: int(valid[i])].tolist()
        nt = data.non_tensor_batch
        extra = nt["extra_info"][i] if "extra_info" in nt else {}
        out.append(Response(ids, str(nt["data_source"][i]), nt["reward_model"][i]["ground_truth"],
                            dict(extra or {})))  # fmt: skip
    return out


def dense_values(tokenizer: Any, response: Response, result: ScoredSample | None) -> list[float]:
    """One value per valid response token (:func:`._tokens.token_rewards`)."""
    return token_rewards(tokenizer, response.ids, result)


def to_sample(tokenizer: Any, response: Response) -> Sample | str:
    info = response.extra_info
    worked = info.get("answer") if isinstance(info.get("answer"), str) else None
    truth = str(response.ground_truth)
    try:
        question = _question(info)
    except ValueError as exc:
        return str(exc)
    return try_build_sample(
        question=question,
        prediction=tokenizer.decode(response.ids, skip_special_tokens=True),
        reference=truth,
        task=_task_of(response.data_source, info),
        solution=worked if worked and worked.strip() != truth.strip() else None,
    )


async def score(tokenizer: Any, batch: Sequence[Response]) -> list[ScoredSample | None]:
    """Score ``batch`` through the service (concurrent calls of :data:`BATCH`); None for a
    sample that cannot be judged."""
    built = [to_sample(tokenizer, r) for r in batch]
    if any(isinstance(b, Sample) for b in built) and not os.environ.get(URL_ENV):
        raise ValueError(f"${URL_ENV} is not set; export {URL_ENV}=http://HOST:PORT")
    return await score_built(
        built,
        lambda: AsyncClient(os.environ[URL_ENV],
                            api_key=os.environ.get("RLMEC_API_KEY") or None,
                            timeout=float(os.environ.get("RLMEC_TIMEOUT", "180"))),
        batch_size=BATCH, params=None, policy_tokenizer=None,
    )  # fmt: skip


def extra_info(result: ScoredSample | None) -> dict[str, float]:
    summary = summarize(result) if result is not None else unjudged()
    return {f"rlmec_{k}": v for k, v in summary.items()}


class _Coalescer:
    """Collects concurrent ``run_single`` calls for up to ``wait_s`` (or :data:`BATCH` of
    them) and scores them in one go: veRL's reward loop calls once per sample, all at once."""

    def __init__(self, tokenizer: Any, wait_s: float = 0.02) -> None:
        self.tokenizer = tokenizer
        self.wait_s = wait_s
        self.pending: list[tuple[Response, asyncio.Future[ScoredSample | None]]] = []
        self.flusher: asyncio.Task[None] | None = None

    async def score(self, response: Response) -> ScoredSample | None:
        future: asyncio.Future[ScoredSample | None] = asyncio.get_running_loop().create_future()
        self.pending.append((response, future))
        if len(self.pending) >= BATCH:
            await self._flush()
        elif self.flusher is None:
            self.flusher = asyncio.create_task(self._flush_later())
        return await future

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.wait_s)
        self.flusher = None
        await self._flush()

    async def _flush(self) -> None:
        batch, self.pending = self.pending, []
        if not batch:
            return
        try:
            results = await score(self.tokenizer, [r for r, _ in batch])
        except BaseException as exc:  # every waiter sees the failure (e.g. 503 after retries)
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)


@register_loop("rlmec")
class RlmecRewardManager(RewardManagerBase):
    """veRL reward-loop manager: dense RLMEC token rewards (see the module docstring)."""

    def __init__(self, config: Any, tokenizer: Any, compute_score: Any = None, **_: Any) -> None:
        super().__init__(config, tokenizer, compute_score)
        self._coalescer: _Coalescer | None = None

    async def run_single(self, data: DataProto) -> dict[str, Any]:
        if self._coalescer is None:
            self._coalescer = _Coalescer(self.tokenizer)
        [response] = responses(data[-1:])
        result = await self._coalescer.score(response)
        return {
            "reward_score": dense_values(self.tokenizer, response, result),
            "reward_extra_info": extra_info(result),
        }

    @classmethod
    def assemble_rm_scores(cls, data: DataProto, scores: list[Any]) -> torch.Tensor:
        """Per-token values into ``rm_scores`` (zeros past each response's valid length)."""
        rm_scores = torch.zeros_like(data.batch["responses"], dtype=torch.float32)
        for i, values in enumerate(scores):
            if values:
                rm_scores[i, : len(values)] = rm_scores.new_tensor(values)
        return rm_scores


@register_legacy("rlmec")
class RlmecLegacyRewardManager(AbstractRewardManager):
    """veRL legacy reward manager (``use_reward_loop=False``): the whole batch at once."""

    def __init__(
        self,
        tokenizer: Any,
        num_examine: int = 0,
        compute_score: Any = None,
        reward_fn_key: str = "data_source",
        **_: Any,
    ) -> None:
        self.tokenizer = tokenizer
        self.num_examine = num_examine

    def __call__(self, data: DataProto, return_dict: bool = False) -> Any:
        from_rm = self._extract_reward_from_rm_scores(data, return_dict)
        if from_rm is not None:
            return from_rm
        batch = responses(data)
        results = run_sync(score(self.tokenizer, batch))
        reward_tensor = torch.zeros_like(data.batch["responses"], dtype=torch.float32)
        infos: dict[str, list[float]] = {}
        for i, (response, result) in enumerate(zip(batch, results, strict=True)):
            values = dense_values(self.tokenizer, response, result)
            if values:
                reward_tensor[i, : len(values)] = reward_tensor.new_tensor(values)
            for key, value in extra_info(result).items():
                infos.setdefault(key, []).append(value)
        if return_dict:
            return {"reward_tensor": reward_tensor, "reward_extra_info": infos}
        return reward_tensor
