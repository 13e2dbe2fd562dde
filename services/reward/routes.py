"""HTTP routes of the reward service: thin, the work is in the pipeline."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from rlmec.services.common import ERROR_RESPONSES, error_response, run_until_disconnect
from rlmec.services.reward import openrlhf
from rlmec.services.reward.deps import (
    CoalescerDep,
    MetricsDep,
    PipelineDep,
    QuotaDep,
    RedisDep,
    SettingsDep,
    TeamDep,
)
from rlmec.services.reward.quotas import admit
from rlmec.services.reward.redis_guard import redis_guard
from rlmec.services.reward.schemas import (
    GetRewardRequest,
    GetRewardResponse,
    ReadyResponse,
    UsageResponse,
)
from rlmec.services.reward.usage import read_usage
from rlmec.shared.errors import PermissionDeniedError
from rlmec.shared.schemas import (
    MAX_BATCH,
    Sample,
    ScoredSample,
    TokenRewardsRequest,
    TokenRewardsResponse,
)

logger = logging.getLogger("rlmec.reward")

router = APIRouter()
_RESPONSES = {**ERROR_RESPONSES, 403: {"description": "Another team's resource."}}
READY_TIMEOUT_S = 5.0


@router.post("/v1/token-rewards", response_model=TokenRewardsResponse, responses=_RESPONSES)
async def token_rewards(
    body: TokenRewardsRequest,
    request: Request,
    team: TeamDep,
    pipeline: PipelineDep,
    coalescer: CoalescerDep,
    quotas: QuotaDep,
    metrics: MetricsDep,
) -> TokenRewardsResponse:
    """Score a batch: token rewards (§3.1), imitation weights (§3.3), spans and, with
    ``policy_tokenizer``, the projection onto the policy's tokens (§6)."""
    async with admit(quotas, team, len(body.samples)):
        work = coalescer.score(
            body.samples, body.params, policy_tokenizer=body.policy_tokenizer, team=team.name
        )
        results = await run_until_disconnect(request, work)
    metrics.record_results(team.name, results)
    grm = await pipeline.grm_info(pipeline.team_adapters.get(team.name))
    return TokenRewardsResponse(results=results, grm=grm)


@router.post("/get_reward", response_model=GetRewardResponse, responses=_RESPONSES)
async def get_reward(
    body: GetRewardRequest,
    request: Request,
    team: TeamDep,
    pipeline: PipelineDep,
    coalescer: CoalescerDep,
    quotas: QuotaDep,
    metrics: MetricsDep,
    settings: SettingsDep,
    task: Literal["math", "qa"] | None = Query(
        None, description="Answer checking; default RLMEC_REWARD_OPENRLHF_TASK."
    ),
    chat_template: str | None = Query(
        None,
        max_length=256,
        description="A registered policy tokenizer whose chat template the prompts use: the "
        "GRM gets the user's question without the markup (default: the team's setting).",
    ),
) -> GetRewardResponse:
    """OpenRLHF remote reward model: scalar rewards/scores in [0, 1] plus RLMEC summaries. A
    query that cannot be judged scores 0 with its reason in ``extra_logs``; the rest are
    scored (batches above 1024 queries too, in chunks)."""
    if not body.query:
        return GetRewardResponse(rewards=[], scores=[], extra_logs={})
    template = chat_template or team.chat_template
    markup = pipeline.tokenizers.get(template).chat_markup() if template else None
    samples = openrlhf.to_samples(body, task or settings.openrlhf_task, markup)
    todo = [s for s in samples if isinstance(s, Sample)]
    scored: list[ScoredSample] = []
    async with admit(quotas, team, len(body.query)):
        for start in range(0, len(todo), MAX_BATCH):
            work = coalescer.score(
                todo[start : start + MAX_BATCH],
                settings.reward_params,
                team=team.name,
                refuse_markup=False,
            )
            scored += await run_until_disconnect(request, work)
    metrics.record_results(team.name, scored)
    results = iter(scored)
    return openrlhf.to_response([next(results) if isinstance(s, Sample) else s for s in samples])


@router.get("/v1/usage", response_model=UsageResponse, responses=_RESPONSES)
async def my_usage(team: TeamDep, redis: RedisDep, settings: SettingsDep) -> UsageResponse:
    """The calling team's usage counters."""
    async with redis_guard(redis):
        usage = await read_usage(redis, settings.redis_prefix, team.name)
    return UsageResponse(team=team.name, grm_adapter=team.grm_adapter, usage=usage)


@router.get("/v1/teams/{name}/usage", response_model=UsageResponse, responses=_RESPONSES)
async def team_usage(
    name: str, team: TeamDep, redis: RedisDep, settings: SettingsDep
) -> UsageResponse:
    """A team's usage counters; only that team may read them (403 otherwise)."""
    if name != team.name:
        raise PermissionDeniedError(
            f"team {team.name!r} may not read team {name!r}'s usage; use your own team name",
            code="other_team",
        )
    return await my_usage(team, redis, settings)


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/ready", response_model=ReadyResponse, responses=ERROR_RESPONSES)
async def ready(redis: RedisDep, pipeline: PipelineDep) -> ReadyResponse | JSONResponse:
    """Readiness: Redis answers PING and the GRM answers ``/v1/models``; 503 otherwise."""
    checks: dict[str, str] = {}

    async def check(name: str, probe: Awaitable[object]) -> None:
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                await probe
            checks[name] = "ok"
        except Exception as exc:  # any failure of a dependency means "not ready"
            # The reason goes to the log: it can hold internal addresses (or credentials in a
            # URL), and /ready answers anyone.
            logger.warning("not ready: %s: %s: %s", name, type(exc).__name__, exc)
            checks[name] = "unavailable"

    await asyncio.gather(check("redis", redis.ping()), check("grm", pipeline.grm.ready()))
    failed = {k: v for k, v in checks.items() if v != "ok"}
    if failed:
        detail = "; ".join(f"{k}: {v}" for k, v in failed.items())
        return error_response(503, "service_unavailable", f"not ready: {detail}")
    return ReadyResponse(status="ready", checks=checks)
