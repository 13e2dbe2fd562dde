"""Producer side: pushing batches with backpressure, depth, trimming and status lookups."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis
import redis.asyncio

from rlmec.shared.queue.keys import TEAMS_KEY, StreamKeys, keys_for, new_batch_id
from rlmec.shared.queue.replies import _fields, _s
from rlmec.shared.queue.schemas import (
    BatchStatus,
    PushResult,
    QueueDepth,
    QueueFullError,
    QueueLimits,
    RolloutBatch,
)
from rlmec.shared.queue.scripts import _PUSH, _TRIM
from rlmec.shared.schemas import RewardParams, Sample


def _push_call(
    batch: RolloutBatch, keys: StreamKeys, limits: QueueLimits
) -> tuple[list[str], list[Any]]:
    sample_ids = json.dumps([s.id for s in batch.samples])
    return (
        [
            keys.rollouts, keys.status(batch.batch_id), keys.queued_samples, keys.scored_samples,
            keys.queued_bytes, keys.scored_bytes, keys.scored,
        ],
        [
            batch.batch_id, sample_ids, batch.model_dump_json(), limits.max_queued_samples,
            limits.max_scored_samples, repr(batch.created_at), limits.status_ttl_s,
            len(batch.samples), limits.max_queued_bytes, limits.max_scored_bytes,
        ],
    )  # fmt: skip


def _push_result(batch: RolloutBatch, reply: list[Any]) -> PushResult | tuple[str, int]:
    kind = _s(reply[0])
    if kind == "full":
        return _s(reply[1]), int(_s(reply[2]))
    if kind == "duplicate":
        return PushResult(
            batch_id=batch.batch_id, team=batch.team, status=_s(reply[1]),
            n_samples=int(_s(reply[2])), duplicate=True,
        )  # fmt: skip
    return PushResult(
        batch_id=batch.batch_id, team=batch.team, status="queued", n_samples=len(batch.samples)
    )


def _make_batch(
    team: str,
    samples: Sequence[Sample],
    params: RewardParams | None,
    policy_tokenizer: str | None,
    batch_id: str | None,
    policy_version: int | None = None,
) -> RolloutBatch:
    keys_for(team)  # a bad team name is a 422 before pydantic wraps it
    return RolloutBatch(
        batch_id=batch_id or new_batch_id(),
        team=team,
        samples=list(samples),
        params=params or RewardParams(),
        policy_tokenizer=policy_tokenizer,
        policy_version=policy_version,
        created_at=time.time(),
    )


def _full_error(team: str, full: tuple[str, int], limits: QueueLimits) -> QueueFullError:
    bound, length = full
    limit = {
        "rollouts": limits.max_queued_samples, "scored": limits.max_scored_samples,
        "rollouts_bytes": limits.max_queued_bytes, "scored_bytes": limits.max_scored_bytes,
    }[bound]  # fmt: skip
    return QueueFullError.for_team(team, bound, length, limit, limits.retry_after_s)


def _depth_keys(team: str) -> list[str]:
    k = keys_for(team)
    return [k.queued_samples, k.scored_samples, k.queued_bytes, k.scored_bytes]


def _depth(values: Sequence[Any]) -> QueueDepth:
    q, s, qb, sb = (int(v or 0) for v in values)
    return QueueDepth(queued_samples=q, scored_samples=s, queued_bytes=qb, scored_bytes=sb)


def _status(team: str, batch_id: str, raw: Mapping[Any, Any]) -> BatchStatus | None:
    f = _fields(raw)
    if "status" not in f:
        return None

    def num(name: str) -> float | None:
        return float(f[name]) if name in f else None

    return BatchStatus(
        batch_id=batch_id, team=team, status=f["status"],
        n_samples=int(f["n_samples"]) if "n_samples" in f else None,
        attempts=int(f.get("attempts", "0")), created_at=num("created_at"),
        updated_at=num("updated_at"), reason=f.get("reason"),
        consumed="consumed" in f,
    )  # fmt: skip


class RolloutQueue:
    """Producer side and status lookups over a sync client (SDK, benchmarks, tests)."""

    def __init__(self, client: redis.Redis, *, limits: QueueLimits | None = None) -> None:
        self.client = client
        self.limits = limits or QueueLimits()
        self._push = client.register_script(_PUSH)
        self._trim = client.register_script(_TRIM)

    def push(
        self,
        team: str,
        samples: Sequence[Sample],
        *,
        params: RewardParams | None = None,
        policy_tokenizer: str | None = None,
        batch_id: str | None = None,
        limits: QueueLimits | None = None,
        policy_version: int | None = None,
    ) -> PushResult:
        """Queue one batch. Same ``batch_id`` twice: the second push is a no-op (idempotent
        retries). Raises :class:`QueueFullError` at the team's bound (``limits`` overrides the
        queue's for this team)."""
        batch = _make_batch(team, samples, params, policy_tokenizer, batch_id, policy_version)
        limits = limits or self.limits
        result = _push_result(batch, self._push(*_push_call(batch, keys_for(team), limits)))
        if isinstance(result, tuple):
            raise _full_error(team, result, limits)
        self.client.sadd(TEAMS_KEY, team)
        return result

    def depth(self, team: str) -> QueueDepth:
        return _depth(self.client.mget(*_depth_keys(team)))

    def trim(self, team: str) -> int:
        keys = keys_for(team)
        return sum(int(self._trim(keys=[k])) for k in (keys.rollouts, keys.scored))

    def status(self, team: str, batch_id: str) -> BatchStatus | None:
        """None for a batch id this team never pushed (or whose status expired)."""
        return _status(team, batch_id, self.client.hgetall(keys_for(team).status(batch_id)))


class AsyncRolloutQueue:
    """:class:`RolloutQueue` over ``redis.asyncio`` (the reward service's ``/v1/rollouts``)."""

    def __init__(self, client: redis.asyncio.Redis, *, limits: QueueLimits | None = None) -> None:
        self.client = client
        self.limits = limits or QueueLimits()
        self._push = client.register_script(_PUSH)
        self._trim = client.register_script(_TRIM)

    async def push(
        self,
        team: str,
        samples: Sequence[Sample],
        *,
        params: RewardParams | None = None,
        policy_tokenizer: str | None = None,
        batch_id: str | None = None,
        limits: QueueLimits | None = None,
        policy_version: int | None = None,
    ) -> PushResult:
        batch = _make_batch(team, samples, params, policy_tokenizer, batch_id, policy_version)
        limits = limits or self.limits
        call = _push_call(batch, keys_for(team), limits)
        result = _push_result(batch, await self._push(*call))
        if isinstance(result, tuple):
            raise _full_error(team, result, limits)
        await self.client.sadd(TEAMS_KEY, team)
        return result

    async def depth(self, team: str) -> QueueDepth:
        return _depth(await self.client.mget(*_depth_keys(team)))

    async def trim(self, team: str) -> int:
        keys = keys_for(team)
        return sum([int(await self._trim(keys=[k])) for k in (keys.rollouts, keys.scored)])

    async def status(self, team: str, batch_id: str) -> BatchStatus | None:
        raw = await self.client.hgetall(keys_for(team).status(batch_id))
        return _status(team, batch_id, raw)
