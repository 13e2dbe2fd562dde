"""Concurrent small requests of one team become one pipeline call; each caller gets its own
slice, its own cancellation and the batch's errors; teams are never merged (a fake pipeline:
the merging logic alone; the real service path is in test_app / test_openrlhf)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from rlmec.services.reward.coalesce import Coalescer
from rlmec.shared.errors import ServiceUnavailableError
from rlmec.shared.schemas import RewardParams, Sample, ScoredSample

PARAMS = RewardParams()


def _sample(i: int) -> Sample:
    return Sample(id=f"s{i}", question="q", reference_solution="The answer is: 1",
                  prediction=f"p{i}")  # fmt: skip


class FakePipeline:
    def __init__(self, delay: float = 0.0, fail: Exception | None = None) -> None:
        self.calls: list[tuple[list[str | None], dict[str, Any]]] = []
        self.delay, self.fail, self.cancelled = delay, fail, 0

    async def score(
        self, samples: list[Sample], params: RewardParams, **kw: Any
    ) -> list[ScoredSample]:
        self.calls.append(([s.id for s in samples], kw))
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.fail is not None:
            raise self.fail
        return [ScoredSample(id=s.id, status="scored", question=s.question, prediction=s.prediction,
                             correct=True, predicted_answer="1", reference_answer="1")
                for s in samples]  # fmt: skip


async def test_concurrent_calls_of_a_team_are_one_batch_and_each_gets_its_slice() -> None:
    fake = FakePipeline()
    coalescer = Coalescer(fake.score, window_s=0.05, max_samples=64)
    results = await asyncio.gather(
        *(coalescer.score([_sample(i)], PARAMS, team="a", refuse_markup=False) for i in range(5)),
        coalescer.score([_sample(10), _sample(11)], PARAMS, team="a", refuse_markup=False),
    )
    assert len(fake.calls) == 1 and fake.calls[0][0] == ["s0", "s1", "s2", "s3", "s4", "s10", "s11"]
    assert fake.calls[0][1] == {"policy_tokenizer": None, "team": "a", "refuse_markup": False}
    assert [[r.id for r in rs] for rs in results] == [[f"s{i}"] for i in range(5)] + [
        ["s10", "s11"]
    ]


async def test_teams_params_and_tokenizers_are_never_merged() -> None:
    fake = FakePipeline()
    coalescer = Coalescer(fake.score, window_s=0.05, max_samples=64)
    await asyncio.gather(
        coalescer.score([_sample(0)], PARAMS, team="a"),
        coalescer.score([_sample(1)], PARAMS, team="b"),
        coalescer.score([_sample(2)], RewardParams(floor=-0.2), team="a"),
        coalescer.score([_sample(3)], PARAMS, team="a", policy_tokenizer="tiny"),
    )
    assert sorted(ids for ids, _ in fake.calls) == [["s0"], ["s1"], ["s2"], ["s3"]]


async def test_a_full_batch_goes_at_once_and_a_big_request_alone() -> None:
    fake = FakePipeline()
    coalescer = Coalescer(fake.score, window_s=10.0, max_samples=3)  # the window never ends it
    calls = [coalescer.score([_sample(i)], PARAMS, team="a") for i in range(3)]
    done = await asyncio.wait_for(asyncio.gather(*calls), timeout=2)
    assert len(done) == 3 and [ids for ids, _ in fake.calls] == [["s0", "s1", "s2"]]
    await asyncio.wait_for(coalescer.score([_sample(i) for i in range(3)], PARAMS, team="a"), 2)
    assert len(fake.calls) == 2


async def test_a_caller_that_leaves_does_not_stop_the_others_and_the_last_one_does() -> None:
    fake = FakePipeline(delay=0.3)
    coalescer = Coalescer(fake.score, window_s=0.01, max_samples=64)
    leaving = asyncio.create_task(coalescer.score([_sample(0)], PARAMS, team="a"))
    staying = asyncio.create_task(coalescer.score([_sample(1)], PARAMS, team="a"))
    await asyncio.sleep(0.1)  # the batch is being scored
    leaving.cancel()
    assert [r.id for r in await staying] == ["s1"] and fake.cancelled == 0
    alone = asyncio.create_task(coalescer.score([_sample(2)], PARAMS, team="a"))
    await asyncio.sleep(0.1)
    alone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await alone
    await asyncio.sleep(0.05)
    assert fake.cancelled == 1, "nobody waits for the batch any more: its work stops"


async def test_a_batch_failure_reaches_every_caller() -> None:
    fake = FakePipeline(fail=ServiceUnavailableError("grm down"))
    coalescer = Coalescer(fake.score, window_s=0.02, max_samples=64)
    outcomes = await asyncio.gather(
        *(coalescer.score([_sample(i)], PARAMS, team="a") for i in range(3)),
        return_exceptions=True,
    )
    assert len(fake.calls) == 1
    assert all(isinstance(o, ServiceUnavailableError) for o in outcomes)


async def test_window_zero_scores_each_call_alone() -> None:
    fake = FakePipeline()
    coalescer = Coalescer(fake.score, window_s=0.0)
    await asyncio.gather(*(coalescer.score([_sample(i)], PARAMS, team="a") for i in range(3)))
    assert len(fake.calls) == 3
