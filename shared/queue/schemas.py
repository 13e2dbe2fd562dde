"""What travels through the queue (batches, statuses) and its limits. The queue-full error is
:class:`rlmec.shared.errors.QueueFullError` (re-exported here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from rlmec.shared.errors import QueueFullError as QueueFullError  # where 0.1 defined it
from rlmec.shared.queue.keys import BatchId, TeamName
from rlmec.shared.schemas import (
    MAX_BATCH,
    ResponseModel,
    RewardParams,
    Sample,
    ScoredSample,
    StrictModel,
)

BatchState = Literal["queued", "scoring", "scored", "dead_lettered"]


class RolloutBatch(StrictModel):
    """A team's batch of rollouts to score (one entry of ``rlmec:{T}:rollouts``)."""

    batch_id: BatchId = Field(description="Unique within the team; the idempotency key.")
    team: TeamName
    samples: list[Sample] = Field(min_length=1, max_length=MAX_BATCH)
    params: RewardParams = Field(default_factory=RewardParams)
    policy_tokenizer: str | None = Field(None, max_length=256)
    policy_version: int | None = Field(
        None,
        ge=0,
        description="Policy version that generated the rollouts (rlmec rollout); an "
        "online trainer skips batches more than max_policy_lag versions behind its own.",
    )
    created_at: float = Field(description="Unix time of the push.")


class ScoredBatch(ResponseModel):
    """A scored batch (one entry of ``rlmec:{T}:scored``), results in sample order."""

    batch_id: BatchId
    team: TeamName
    results: list[ScoredSample]
    policy_tokenizer: str | None = None
    policy_version: int | None = Field(None, description="Echoed from the pushed batch.")
    created_at: float = Field(description="Unix time of the push.")
    scored_at: float = Field(description="Unix time the worker finished scoring.")
    attempts: int = Field(ge=1, description="Scoring attempts this batch needed.")
    worker: str | None = Field(None, description="Consumer name of the worker that scored it.")

    @property
    def sample_ids(self) -> list[str | None]:
        return [r.id for r in self.results]


class ScoredDelivery(ResponseModel):
    """A scored batch handed to an HTTP trainer; acknowledge ``entry_id`` after the step."""

    entry_id: str = Field(description="Stream entry id: what POST /v1/scored/ack takes.")
    batch: ScoredBatch


class PullResponse(ResponseModel):
    deliveries: list[ScoredDelivery]


class AckResult(ResponseModel):
    acked: list[str] = Field(description="Entry ids acknowledged (again: acks are idempotent).")
    unknown: list[str] = Field(description="Entry ids not in your team's scored stream.")


class BatchStatus(ResponseModel):
    """What ``GET /v1/rollouts/{batch_id}`` answers."""

    batch_id: str
    team: str
    status: BatchState
    n_samples: int | None = None
    attempts: int = 0
    created_at: float | None = None
    updated_at: float | None = None
    reason: str | None = Field(None, description="Why it was dead-lettered, or the last error.")
    consumed: bool = Field(False, description="A trainer acknowledged the scored batch.")


class QueueDepth(ResponseModel):
    queued_samples: int = Field(description="Pushed, not yet scored or dead-lettered.")
    scored_samples: int = Field(description="Scored, not yet acknowledged by a trainer.")
    queued_bytes: int = Field(0, description="Bytes of the queued samples' batches.")
    scored_bytes: int = Field(0, description="Bytes of the scored, unacknowledged batches.")


class PushResult(ResponseModel):
    batch_id: str
    team: str
    status: BatchState
    n_samples: int
    duplicate: bool = Field(False, description="The batch id was already pushed; not re-queued.")


@dataclass(frozen=True)
class QueueLimits:
    """Per-team bounds (in samples and in bytes), status retention and dead-letter cap. A
    batch is refused when it would take the queued samples or bytes past the bound (unless
    nothing is queued, so one batch larger than the bound is never refused forever)."""

    max_queued_samples: int = 100_000
    max_scored_samples: int = 10_000
    # Bytes, so that a few huge samples cannot fill the Redis every team shares either.
    max_queued_bytes: int = 256 * 2**20
    max_scored_bytes: int = 256 * 2**20
    retry_after_s: float = 2.0
    status_ttl_s: int = 7 * 24 * 3600
    dead_maxlen: int = 10_000
