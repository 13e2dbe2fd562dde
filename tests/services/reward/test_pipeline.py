"""The pipeline's stages run as one structured task (issue 26, item 2): a stage that fails
cancels its siblings and their GRM calls, so a request answered 429 leaves no work behind."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from redis.asyncio import Redis

from rlmec.services.reward.cache import RewardCache
from rlmec.services.reward.grm_backend import GrmBackend
from rlmec.services.reward.pipeline import RewardPipeline
from rlmec.services.reward.policy_tokenizers import TokenizerRegistry
from rlmec.shared.checking import AnswerChecker
from rlmec.shared.errors import RateLimitError
from rlmec.shared.grm_schemas import ModelCard, ModelList
from rlmec.shared.schemas import RewardParams, Sample
from tests.services.reward.conftest import WRONG, sample


async def test_a_saturated_stage_cancels_its_sibling_grm_call(redis_url: str) -> None:
    rewrite_started, rewrite_cancelled = asyncio.Event(), asyncio.Event()

    async def grm(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            card = ModelCard(id="m", revision="r", tokenizer="t", max_model_len=2048,
                             engine="hf", eos_token="</s>", eos_token_id=2)  # fmt: skip
            return httpx.Response(200, json=ModelList(data=[card]).model_dump())
        if request.url.path == "/v1/score":
            await rewrite_started.wait()  # the rewrite holds a GRM slot when scoring is refused
            return httpx.Response(429, headers={"retry-after": "1"}, json={})
        try:
            rewrite_started.set()
            await asyncio.sleep(60)  # a long generation
        except asyncio.CancelledError:
            rewrite_cancelled.set()
            raise
        raise AssertionError("the rewrite was never cancelled")

    redis = Redis.from_url(redis_url)
    checker = AnswerChecker(workers=1, timeout_s=5.0, memory_mib=1024)
    pipeline = RewardPipeline(
        GrmBackend(["http://grm"], transport=httpx.MockTransport(grm)),
        RewardCache(redis, prefix="t", ttl_s=60, max_entries=100),
        TokenizerRegistry({}), checker, redis=redis, prefix="t", max_new_tokens=16,
    )  # fmt: skip
    try:
        with pytest.raises(RateLimitError):
            await pipeline.score([Sample.model_validate(sample(WRONG))], RewardParams())
        # Answered 429: the sibling's GRM call must be gone by then, not minutes later.
        await asyncio.wait_for(rewrite_cancelled.wait(), timeout=0.5)
    finally:
        checker.close()
        await redis.aclose()
