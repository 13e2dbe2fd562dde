"""FastAPI dependencies: the caller's team (Bearer key), and the resources the lifespan put
on ``app.state``. Routes declare them with the ``*Dep`` aliases. They are ``async def`` though
they never await: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop per
dependency per request (9% of the service's CPU under one-sample traffic, py-spy)."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from rlmec.services.reward.coalesce import Coalescer
from rlmec.services.reward.metrics import RewardMetrics
from rlmec.services.reward.pipeline import RewardPipeline
from rlmec.services.reward.pulls import WaitingPulls
from rlmec.services.reward.quotas import QuotaGate
from rlmec.services.reward.settings import RewardSettings
from rlmec.services.reward.teams import Team, TeamDirectory
from rlmec.shared.errors import AuthenticationError, ServiceUnavailableError

__all__ = [
    "CoalescerDep",
    "MetricsDep",
    "PipelineDep",
    "PullRedisDep",
    "QuotaDep",
    "RedisDep",
    "SettingsDep",
    "Team",
    "TeamDep",
    "WaitingPullsDep",
    "current_team",
]

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def _state(request: Request, name: str) -> object:
    value = getattr(request.app.state, name, None)
    if value is None:
        raise ServiceUnavailableError(f"the reward service is starting ({name} not open yet)")
    return value


async def get_settings_dep(request: Request) -> RewardSettings:
    settings = _state(request, "settings")
    assert isinstance(settings, RewardSettings)
    return settings


async def get_redis(request: Request) -> Redis:
    redis = _state(request, "redis")
    assert isinstance(redis, Redis | RedisCluster)
    # A cluster client answers the same commands (every key of one call in one slot).
    return cast(Redis, redis)


async def get_pull_redis(request: Request) -> Redis:
    """The client of the long polls' own connection pool (:mod:`.pulls`)."""
    redis = _state(request, "pull_redis")
    assert isinstance(redis, Redis | RedisCluster)
    return cast(Redis, redis)


async def get_waiting_pulls(request: Request) -> WaitingPulls:
    pulls = _state(request, "waiting_pulls")
    assert isinstance(pulls, WaitingPulls)
    return pulls


async def get_pipeline(request: Request) -> RewardPipeline:
    pipeline = _state(request, "pipeline")
    assert isinstance(pipeline, RewardPipeline)
    return pipeline


async def get_coalescer(request: Request) -> Coalescer:
    coalescer = _state(request, "coalescer")
    assert isinstance(coalescer, Coalescer)
    return coalescer


async def get_quotas(request: Request) -> QuotaGate:
    quotas = _state(request, "quotas")
    assert isinstance(quotas, QuotaGate)
    return quotas


async def get_metrics(request: Request) -> RewardMetrics:
    metrics = request.app.state.metrics
    assert isinstance(metrics, RewardMetrics)
    return metrics


# Request-state key under which the app's body guard leaves the team it authenticated.
CALLER = "caller"


async def current_team(request: Request) -> Team:
    """The team owning the Bearer key; 401 without a valid one (unless the operator allowed
    key-less access, and then only when no key is sent: a wrong key is always 401)."""
    team = getattr(request.state, CALLER, None)
    if not isinstance(team, Team):  # no body guard in front (checked there otherwise)
        directory = request.app.state.teams
        assert isinstance(directory, TeamDirectory)
        team = team_for(directory, request.headers.get("authorization"))
    request.state.team = team.name
    return team


def team_for(directory: TeamDirectory, header: str | None) -> Team:
    """The team an ``Authorization`` header names, or :class:`AuthenticationError`."""
    if header is None:
        if directory.anonymous is not None:
            return directory.anonymous
        raise AuthenticationError(
            "missing API key; send 'Authorization: Bearer <key>' (ask the operator for a key)",
            code="missing_api_key",
            headers=_CHALLENGE,
        )
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise AuthenticationError(
            "malformed Authorization header; use 'Authorization: Bearer <key>'",
            code="malformed_authorization",
            headers=_CHALLENGE,
        )
    team = directory.by_key(key.strip())
    if team is None:
        raise AuthenticationError(
            "invalid API key; check the key or ask the operator for a new one",
            code="invalid_api_key",
            headers=_CHALLENGE,
        )
    return team


TeamDep = Annotated[Team, Depends(current_team)]
SettingsDep = Annotated[RewardSettings, Depends(get_settings_dep)]
RedisDep = Annotated[Redis, Depends(get_redis)]
PullRedisDep = Annotated[Redis, Depends(get_pull_redis)]
WaitingPullsDep = Annotated[WaitingPulls, Depends(get_waiting_pulls)]
PipelineDep = Annotated[RewardPipeline, Depends(get_pipeline)]
CoalescerDep = Annotated[Coalescer, Depends(get_coalescer)]
QuotaDep = Annotated[QuotaGate, Depends(get_quotas)]
MetricsDep = Annotated[RewardMetrics, Depends(get_metrics)]
