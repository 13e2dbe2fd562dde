"""``/v1/rollouts``: push rollouts into the team's durable queue, and ask how a batch is doing.

The router is thin; the queue logic lives in :mod:`rlmec.shared.queue` (reward workers score
what is pushed here, the trainer pulls the results). A push is admitted against the team's
sample rate like a direct scoring call, then bounded by the team's queue limits: past them it is
a 429 with ``Retry-After`` and nothing is queued. A batch of another team is a 404, exactly as
an unknown batch id, so batch ids leak nothing across teams.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import Field
from redis.asyncio import Redis

from rlmec.services.common import ERROR_RESPONSES
from rlmec.services.reward.deps import (
    PullRedisDep,
    QuotaDep,
    RedisDep,
    SettingsDep,
    TeamDep,
    WaitingPullsDep,
)
from rlmec.services.reward.quotas import admit
from rlmec.services.reward.redis_guard import redis_guard
from rlmec.services.reward.teams import Team
from rlmec.shared.errors import InvalidRequestError, NotFoundError
from rlmec.shared.queue import (
    AckResult,
    AsyncRolloutQueue,
    AsyncScoredPuller,
    BatchId,
    BatchStatus,
    PullResponse,
    PushResult,
    QueueLimits,
    ScoredBatch,
    check_batch_id,
)
from rlmec.shared.schemas import MAX_BATCH, RequestModel, RewardParams, Sample

router = APIRouter(tags=["rollouts"])
ConsumerName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
_RESPONSES = {**ERROR_RESPONSES, 404: {"description": "No such batch for this team."}}


class RolloutsRequest(RequestModel):
    samples: list[Sample] = Field(
        min_length=1, max_length=MAX_BATCH, description="The rollouts to score, in order."
    )
    params: RewardParams = Field(default_factory=RewardParams, description="§3.1 reward shaping.")
    policy_tokenizer: str | None = Field(
        None, max_length=256, description="Registered policy tokenizer to project onto."
    )
    policy_version: int | None = Field(
        None,
        ge=0,
        description="Policy version that generated the rollouts (rlmec rollout); an "
        "online trainer skips batches more than max_policy_lag versions behind its own.",
    )
    batch_id: BatchId | None = Field(
        None,
        description="Your id for the batch (idempotency: pushing it again queues nothing); "
        "generated when absent.",
    )


def team_limits(team: Team) -> QueueLimits:
    """The team's bounds: ``max_queued_samples`` samples (``max_queued_bytes`` bytes) waiting
    to be scored, and ``max_scored_samples`` (``max_scored_bytes``) scored, not acknowledged."""
    return QueueLimits(
        max_queued_samples=team.max_queued_samples, max_scored_samples=team.max_scored_samples,
        max_queued_bytes=team.max_queued_bytes, max_scored_bytes=team.max_scored_bytes,
    )  # fmt: skip


@router.post("/v1/rollouts", status_code=202, response_model=PushResult, responses=_RESPONSES)
async def push_rollouts(
    body: RolloutsRequest,
    team: TeamDep,
    redis: RedisDep,
    quotas: QuotaDep,
    settings: SettingsDep,
) -> PushResult:
    """Queue a batch for the reward workers; 202 with its ``batch_id``. 429 + ``Retry-After``
    when the team's queue is full (nothing is queued then: push again later)."""
    name = body.policy_tokenizer
    if name is not None and name not in settings.policy_tokenizers:
        known = sorted(settings.policy_tokenizers) or "none"
        raise InvalidRequestError(
            f"policy_tokenizer {name!r} is not registered (registered: {known}); ask the "
            "operator to add it to RLMEC_REWARD_POLICY_TOKENIZERS or leave it out",
            param="policy_tokenizer",
        )
    async with admit(quotas, team, len(body.samples)), redis_guard(redis):
        return await AsyncRolloutQueue(redis).push(
            team.name, body.samples, params=body.params, policy_tokenizer=name,
            batch_id=body.batch_id, limits=team_limits(team), policy_version=body.policy_version,
        )  # fmt: skip


@router.get("/v1/rollouts/{batch_id}", response_model=BatchStatus, responses=_RESPONSES)
async def rollout_status(
    batch_id: Annotated[str, Path(max_length=128, description="The id the push returned.")],
    team: TeamDep,
    redis: RedisDep,
) -> BatchStatus:
    """``queued`` / ``scoring`` / ``scored`` / ``dead_lettered`` (with the reason), and whether
    a trainer consumed it. 404 for an unknown batch or another team's."""
    try:
        check_batch_id(batch_id)
    except ValueError as exc:
        raise InvalidRequestError(str(exc), param="batch_id") from None
    async with redis_guard(redis):
        status = await AsyncRolloutQueue(redis).status(team.name, batch_id)
    if status is None:
        raise NotFoundError(
            f"batch {batch_id!r} is unknown to team {team.name!r} (never pushed by this team, "
            "or its status expired); use the batch_id the push returned",
            param="batch_id",
        )
    return status


@router.get("/v1/rollouts/{batch_id}/result", response_model=ScoredBatch, responses=_RESPONSES)
async def rollout_result(
    batch_id: Annotated[str, Path(max_length=128, description="The id the push returned.")],
    team: TeamDep,
    redis: RedisDep,
) -> ScoredBatch:
    """The scored batch: every sample's result, in push order. 404 for an unknown batch or
    another team's, and while it is not scored yet (the message gives its status)."""
    status = await rollout_status(batch_id, team, redis)
    async with redis_guard(redis):
        batch = await AsyncScoredPuller(redis, team.name).result(batch_id)
    if batch is None:
        why = (
            "its results were consumed by your trainer and trimmed"
            if status.status == "scored"
            else f"it is {status.status}" + (f" ({status.reason})" if status.reason else "")
        )
        raise NotFoundError(
            f"batch {batch_id!r} has no result to read: {why}; poll GET /v1/rollouts/{batch_id}",
            param="batch_id",
            code="no_result",
        )
    return batch


class PullRequest(RequestModel):
    max_batches: int = Field(1, ge=1, le=64, description="At most this many scored batches.")
    wait_ms: int = Field(
        0, ge=0, le=30_000, description="Wait this long for a batch when none is ready."
    )
    consumer: ConsumerName = Field(
        "http-0",
        description="Your trainer's name in the team's consumer group; a restarted trainer "
        "that keeps it gets its unacknowledged batches back after redeliver_after_s.",
    )
    redeliver_after_s: int = Field(
        300,
        ge=1,
        le=86_400,
        description="Batches pulled this long ago and never acknowledged are handed out again "
        "(longer than your slowest optimizer step).",
    )


class AckRequest(RequestModel):
    entry_ids: list[Annotated[str, Field(max_length=64)]] = Field(
        min_length=1, max_length=1024, description="entry_id of each delivery trained on."
    )


@router.post("/v1/scored/pull", response_model=PullResponse, responses=_RESPONSES)
async def pull_scored(
    body: PullRequest, team: TeamDep, redis: RedisDep, pull_redis: PullRedisDep,
    waiting: WaitingPullsDep,
) -> PullResponse:  # fmt: skip
    """Scored batches of your team for a trainer outside the cluster (no Redis access needed).
    Acknowledge each with ``POST /v1/scored/ack`` after the optimizer step that used it;
    unacknowledged ones come back after ``redeliver_after_s``. A team may have
    ``max_waiting_pulls`` pulls with ``wait_ms`` waiting at once; more are a 429."""
    if body.wait_ms == 0:
        return await _pull(redis, team, body)
    with waiting.slot(team):
        return await _pull(pull_redis, team, body)


async def _pull(redis: Redis, team: Team, body: PullRequest) -> PullResponse:
    puller = AsyncScoredPuller(
        redis, team.name, consumer=body.consumer, redeliver_after_ms=body.redeliver_after_s * 1000
    )
    async with redis_guard(redis):
        return PullResponse(deliveries=await puller.pull(body.max_batches, body.wait_ms))


@router.post("/v1/scored/ack", response_model=AckResult, responses=_RESPONSES)
async def ack_scored(body: AckRequest, team: TeamDep, redis: RedisDep) -> AckResult:
    """Acknowledge scored batches (by ``entry_id``): they are done and leave your team's
    scored bound. Ids that are not your team's come back as ``unknown``."""
    async with redis_guard(redis):
        return await AsyncScoredPuller(redis, team.name).ack(body.entry_ids)
