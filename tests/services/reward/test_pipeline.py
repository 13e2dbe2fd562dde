"""The reward pipeline on a fake GRM: its stages run as one structured task (issue 26, item
2), and whatever the GRM generates fails only its own sample."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from rlmec.shared.errors import RateLimitError, ServiceUnavailableError
from rlmec.shared.grm_schemas import RewriteResponse, RewriteResult
from rlmec.shared.schemas import RewardParams, Sample
from tests.services.reward.conftest import (
    CORRECT,
    WRONG,
    model_list_response,
    pipeline_on,
    sample,
)
from tests.services.reward.test_units import _score_result


async def test_a_saturated_stage_cancels_its_sibling_grm_call(redis_url: str) -> None:
    """A stage refused 429 cancels its sibling, so a request answered 429 leaves no GRM work
    behind (it used to hold a GRM slot for minutes)."""
    rewrite_started, rewrite_cancelled = asyncio.Event(), asyncio.Event()

    async def grm(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return model_list_response()
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

    async with pipeline_on(redis_url, grm) as pipeline:
        with pytest.raises(RateLimitError):
            await pipeline.score([Sample.model_validate(sample(WRONG))], RewardParams())
        # Answered 429: the sibling's GRM call must be gone by then, not minutes later.
        await asyncio.wait_for(rewrite_cancelled.wait(), timeout=0.5)


async def test_a_grm_rewrite_with_control_characters_fails_only_its_sample(redis_url: str) -> None:
    """A GRM may generate anything: a rewrite holding control characters (seen from a random
    model: U+000C) makes that sample ``unscored/grm_error``, never a 500 for the batch."""

    def grm(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return model_list_response()
        if request.url.path == "/v1/score":
            return httpx.Response(200, json={"model": "m", "results": [_score_result(WRONG)]})
        assert request.url.path == "/v1/rewrite", request.url.path
        rewritten = RewriteResult(status="rewritten", located_step=0, locate=None,
                                  rewrite="48/2 = 24\x0c\nThe answer is: 72")  # fmt: skip
        return httpx.Response(
            200, json=RewriteResponse(model="m", results=[rewritten]).model_dump()
        )

    async with pipeline_on(redis_url, grm) as pipeline:
        [result] = await pipeline.score([Sample.model_validate(sample(WRONG))], RewardParams())
    assert result.status == "unscored" and result.reason == "grm_error"
    assert result.message is not None and "U+000C" in result.message


async def test_a_team_is_bound_to_its_adapter_and_its_cache(redis_url: str) -> None:
    """Issue 28 item 3: the team's grm_adapter names the GRM model of all its calls (it can
    never pick another's), its results carry that adapter's identity, and the cache keeps
    adapters apart; an adapter the GRM does not serve is a 503 naming it."""
    import json

    seen: list[str | None] = []

    def grm(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return model_list_response("team-a")
        assert request.url.path == "/v1/score", request.url.path  # a correct sample: no rewrite
        seen.append(json.loads(request.content).get("model"))
        return httpx.Response(200, json={"model": "m", "results": [_score_result(CORRECT)]})

    async def score(pipeline: Any, team: str) -> Any:
        [result] = await pipeline.score([Sample.model_validate(sample(CORRECT))], RewardParams(),
                                        team=team)  # fmt: skip
        return result

    adapters = {"a": "team-a", "lost": "never-loaded"}
    async with pipeline_on(redis_url, grm, team_adapters=adapters) as pipeline:
        mine = await score(pipeline, "a")
        assert seen == ["team-a"] and mine.status == "scored" and not mine.cached
        assert mine.grm is not None and mine.grm.model_id == "team-a"
        base = await score(pipeline, "b")
        assert not base.cached, "a result made by team a's adapter was served to team b"
        assert seen == ["team-a", None] and base.grm.model_id == "m"
        again = await score(pipeline, "a")
        assert again.cached and again.grm.model_id == "team-a" and len(seen) == 2
        with pytest.raises(ServiceUnavailableError, match="does not serve adapter 'never-loaded'"):
            await score(pipeline, "lost")
