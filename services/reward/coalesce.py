"""Concurrent small scoring requests of one team merged into one pipeline batch (issue 32).

OpenRLHF posts one sample per ``/get_reward`` request; scored one by one, each request is its
own GRM call and costs 1.58x the same samples sent in batches (BENCHMARKS.md, ``get_reward``).
Here the requests that arrive within ``window_s`` of the first, for the same team, reward
parameters, policy tokenizer and markup rule, are scored by one :meth:`RewardPipeline.score`
call (flushed early at ``max_samples``); each gets back its own slice, in order.

What stays per request:
- admission and quota: charged before a request joins (the routes' ``admit``);
- cancellation: a caller that goes away stops waiting, the batch goes on for the others; when
  every caller of a batch has gone, the batch is cancelled;
- errors: a batch-wide failure (GRM or Redis unavailable, 429) reaches every caller of that
  batch, as it would have reached each alone; per-sample outcomes stay per sample.
Teams are never merged: a batch's GRM time, usage and adapter are its team's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from rlmec.shared.schemas import RewardParams, Sample, ScoredSample

Score = Callable[..., Awaitable[list[ScoredSample]]]
_Key = tuple[str | None, str, str | None, bool]


@dataclass
class _Batch:
    key: _Key
    done: asyncio.Future[list[ScoredSample]]  # the batch's results, for every caller
    samples: list[Sample] = field(default_factory=list)
    waiters: int = 0
    task: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle | None = None


class Coalescer:
    """Merges concurrent ``score`` calls of one key; ``window_s`` 0 scores each call alone."""

    def __init__(self, score: Score, *, window_s: float = 0.005, max_samples: int = 256) -> None:
        self._score = score
        self.window_s = window_s
        self.max_samples = max_samples
        self._open: dict[_Key, _Batch] = {}

    async def score(
        self,
        samples: Sequence[Sample],
        params: RewardParams,
        *,
        team: str | None = None,
        policy_tokenizer: str | None = None,
        refuse_markup: bool = True,
    ) -> list[ScoredSample]:
        kwargs: dict[str, object] = {
            "policy_tokenizer": policy_tokenizer,
            "team": team,
            "refuse_markup": refuse_markup,
        }
        if self.window_s <= 0 or len(samples) >= self.max_samples:
            return await self._score(list(samples), params, **kwargs)
        key = (team, params.model_dump_json(), policy_tokenizer, refuse_markup)
        batch = self._join(key, params, kwargs)
        start = len(batch.samples)
        batch.samples.extend(samples)
        if len(batch.samples) >= self.max_samples:
            self._flush(batch, params, kwargs)
        batch.waiters += 1
        try:
            results = await asyncio.shield(batch.done)
        except asyncio.CancelledError:
            batch.waiters -= 1
            if batch.waiters == 0:  # nobody left to answer: stop the batch's work
                if batch.timer is not None:
                    batch.timer.cancel()
                    self._open.pop(batch.key, None)
                if batch.task is not None:
                    batch.task.cancel()
            raise
        return results[start : start + len(samples)]

    def _join(self, key: _Key, params: RewardParams, kwargs: dict[str, object]) -> _Batch:
        batch = self._open.get(key)
        if batch is None:
            loop = asyncio.get_running_loop()
            batch = _Batch(key, loop.create_future())
            batch.timer = loop.call_later(self.window_s, self._flush, batch, params, kwargs)
            self._open[key] = batch
        return batch

    def _flush(self, batch: _Batch, params: RewardParams, kwargs: dict[str, object]) -> None:
        if self._open.get(batch.key) is batch:
            del self._open[batch.key]
        if batch.timer is not None:
            batch.timer.cancel()
            batch.timer = None
        if batch.task is None:
            batch.task = asyncio.get_running_loop().create_task(self._run(batch, params, kwargs))

    async def _run(self, batch: _Batch, params: RewardParams, kwargs: dict[str, object]) -> None:
        try:
            results = await self._score(list(batch.samples), params, **kwargs)
        except BaseException as exc:
            if not batch.done.done():
                if isinstance(exc, asyncio.CancelledError):
                    batch.done.cancel()
                else:
                    batch.done.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            batch.done.set_result(results)
