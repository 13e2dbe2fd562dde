"""Worker side (async: the reward worker runs on asyncio), and reading the dead letters."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio

from rlmec.shared.queue.keys import _TEAM_RE, TEAMS_KEY, WORKER_GROUP, keys_for
from rlmec.shared.queue.replies import _fields, _s, _stream_entries
from rlmec.shared.queue.schemas import QueueLimits, RolloutBatch, ScoredBatch
from rlmec.shared.queue.scripts import _BEGIN, _COMPLETE, _DEAD, _EXTEND, _RETRY, _TRIM
from rlmec.shared.redis_client import is_cluster
from rlmec.shared.schemas import ScoredSample

# How often a worker on a Redis Cluster looks at its streams while it would otherwise block.
_CLUSTER_POLL_S = 0.05


@dataclass(frozen=True)
class RolloutDelivery:
    """One rollouts entry handed to a worker. ``batch`` is None when the payload does not parse
    (then ``error`` says why and the entry goes straight to the dead-letter stream)."""

    entry_id: str
    team: str
    batch_id: str
    sample_ids: str
    payload: str
    batch: RolloutBatch | None
    error: str | None = None


def _rollout_delivery(team: str, entry_id: Any, raw: Mapping[Any, Any] | None) -> RolloutDelivery:
    f = _fields(raw)
    payload = f.get("batch", "")
    batch: RolloutBatch | None = None
    error: str | None = None
    try:
        batch = RolloutBatch.model_validate_json(payload)
        if batch.team != team:
            error = f"entry names team {batch.team!r} but sits in {team!r}'s stream"
            batch = None
    except ValueError as exc:
        error = f"unreadable rollout batch: {str(exc)[:500]}"
    batch_id = f.get("batch_id") or (batch.batch_id if batch else _s(entry_id))
    return RolloutDelivery(
        _s(entry_id), team, batch_id, f.get("sample_ids", "[]"), payload, batch, error
    )


class RolloutConsumer:
    """A reward worker's view of the rollouts streams (one consumer name of group ``workers``).

    ``fetch`` hands out, in order: this consumer's own pending entries (a restart under the same
    name), entries other consumers left idle for ``claim_idle_ms`` (XAUTOCLAIM: a crashed or
    stuck worker), then new entries. ``begin``/``complete``/``fail`` move the status along.
    """

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        consumer: str,
        teams: Sequence[str] | None = None,
        group: str = WORKER_GROUP,
        claim_idle_ms: int = 60_000,
        max_attempts: int = 3,
        limits: QueueLimits | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts ({max_attempts}) must be at least 1")
        self.client = client
        self.consumer = consumer
        self.group = group
        self.claim_idle_ms = claim_idle_ms
        self.max_attempts = max_attempts
        self.limits = limits or QueueLimits()
        self._teams = [keys_for(t).team for t in teams] if teams else None
        self._cluster = is_cluster(client)
        self._groups: set[str] = set()
        self._pending_cursor: dict[str, str] = {}
        self._claim_cursor: dict[str, str] = {}
        self._begin = client.register_script(_BEGIN)
        self._complete = client.register_script(_COMPLETE)
        self._dead = client.register_script(_DEAD)
        self._extend = client.register_script(_EXTEND)
        self._retry = client.register_script(_RETRY)
        self._trim = client.register_script(_TRIM)

    async def teams(self) -> list[str]:
        """The configured teams, or every team that ever pushed."""
        if self._teams is not None:
            return self._teams
        members = await self.client.smembers(TEAMS_KEY)
        return sorted(t for t in map(_s, members) if _TEAM_RE.match(t))

    def forget_groups(self) -> None:
        """After a reconnect the server may have lost groups (no AOF): recreate them lazily."""
        self._groups.clear()

    async def _ensure_group(self, stream: str) -> None:
        if stream in self._groups:
            return
        try:
            await self.client.xgroup_create(stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups.add(stream)

    async def fetch(self, count: int = 1, block_ms: int = 1000) -> list[RolloutDelivery]:
        teams = await self.teams()
        if not teams:
            await _async_sleep(block_ms / 1000)
            return []
        streams = {keys_for(t).rollouts: t for t in teams}
        for stream in streams:
            await self._ensure_group(stream)
        out: list[RolloutDelivery] = []
        for stream, team in streams.items():
            if len(out) < count and self._pending_cursor.get(stream) != "done":
                out += await self._own_pending(stream, team, count - len(out))
        for stream, team in streams.items():
            if len(out) < count:
                out += await self._claim(stream, team, count - len(out))
        if out:
            return out
        if self._cluster:
            return await self._read_each(streams, count, block_ms)
        reply = await self.client.xreadgroup(
            self.group, self.consumer, dict.fromkeys(streams, ">"), count=count, block=block_ms
        )
        for stream, entries in _stream_entries(reply):
            out += [_rollout_delivery(streams[stream], i, f) for i, f in entries]
        return out

    async def _read_each(
        self, streams: dict[str, str], count: int, block_ms: int
    ) -> list[RolloutDelivery]:
        """A Redis Cluster refuses one XREADGROUP over keys in different slots (the teams):
        read each stream without blocking, up to ``count`` each as one XREADGROUP over them
        all would, and poll until ``block_ms`` has passed."""
        deadline = time.monotonic() + block_ms / 1000
        while True:
            out: list[RolloutDelivery] = []
            for stream, team in streams.items():
                reply = await self.client.xreadgroup(
                    self.group, self.consumer, {stream: ">"}, count=count
                )
                out += [_rollout_delivery(team, i, f) for _, e in _stream_entries(reply)
                        for i, f in e]  # fmt: skip
            left = deadline - time.monotonic()
            if out or left <= 0:
                return out
            await _async_sleep(min(left, _CLUSTER_POLL_S))

    async def _own_pending(self, stream: str, team: str, count: int) -> list[RolloutDelivery]:
        # Reading from an id returns this consumer's pending entries after it; a cursor (not
        # "0" every time) keeps a failed entry from being retried before its idle timeout.
        cursor = self._pending_cursor.get(stream, "0")
        reply = await self.client.xreadgroup(
            self.group, self.consumer, {stream: cursor}, count=count
        )
        found = _stream_entries(reply)
        entries = found[0][1] if found else []
        if not entries:
            self._pending_cursor[stream] = "done"
            return []
        self._pending_cursor[stream] = _s(entries[-1][0])
        return [_rollout_delivery(team, i, f) for i, f in entries if f is not None]

    async def _claim(self, stream: str, team: str, count: int) -> list[RolloutDelivery]:
        reply = await self.client.xautoclaim(
            stream, self.group, self.consumer, self.claim_idle_ms,
            self._claim_cursor.get(stream, "0-0"), count=count,
        )  # fmt: skip
        self._claim_cursor[stream] = _s(reply[0])
        out = []
        for entry_id, f in reply[1]:
            if f is None:  # Redis 6.2: deleted while pending; nothing left to score
                await self.client.xack(stream, self.group, entry_id)
                continue
            out.append(_rollout_delivery(team, entry_id, f))
        return out

    async def begin(self, d: RolloutDelivery) -> int | None:
        """Mark the batch as being scored and return the attempt number; None when there is
        nothing to score: a duplicate (already scored), an unreadable entry or a batch that
        already used up ``max_attempts`` (both dead-lettered here)."""
        keys = keys_for(d.team)
        if d.batch is None:
            await self.dead_letter(d, d.error or "unreadable entry", attempts=1)
            return None
        now = repr(time.time())
        attempts = int(
            await self._begin(
                keys=[keys.rollouts, keys.status(d.batch_id)],
                args=[self.group, d.entry_id, now, self.limits.status_ttl_s],
            )
        )
        if attempts < 0:
            return None
        if attempts > self.max_attempts:
            last = await self.client.hget(keys.status(d.batch_id), "reason")
            why = _s(last) if last else "the worker died or stalled while scoring it"
            await self.dead_letter(d, f"gave up after {attempts - 1} attempts: {why}", attempts - 1)
            return None
        return attempts

    async def extend(self, d: RolloutDelivery) -> bool:
        """Keep the batch claimed while it is being scored (call well within
        ``claim_idle_ms``); False when another consumer has taken it over."""
        stream = keys_for(d.team).rollouts
        return bool(await self._extend(keys=[stream], args=[self.group, d.entry_id, self.consumer]))

    async def complete(
        self, d: RolloutDelivery, results: Sequence[ScoredSample], attempts: int
    ) -> str | None:
        """Write the scored batch, acknowledge the rollout and set the status, atomically.
        Returns the scored entry id, or None when another worker had already scored it."""
        assert d.batch is not None
        if len(results) != len(d.batch.samples):
            raise ValueError(
                f"the scorer returned {len(results)} results for {len(d.batch.samples)} samples"
            )
        scored = ScoredBatch(
            batch_id=d.batch_id, team=d.team, results=list(results),
            policy_tokenizer=d.batch.policy_tokenizer, policy_version=d.batch.policy_version,
            created_at=d.batch.created_at,
            scored_at=time.time(), attempts=attempts, worker=self.consumer,
        )  # fmt: skip
        keys = keys_for(d.team)
        entry = await self._complete(
            keys=[
                keys.rollouts, keys.scored, keys.status(d.batch_id), keys.queued_samples,
                keys.scored_samples, keys.queued_bytes, keys.scored_bytes,
            ],
            args=[
                self.group, d.entry_id, d.batch_id, d.sample_ids, scored.model_dump_json(),
                repr(scored.scored_at), self.limits.status_ttl_s,
            ],
        )  # fmt: skip
        return _s(entry) if entry is not None else None

    async def fail(
        self, d: RolloutDelivery, reason: str, attempts: int, *, transient: bool = False
    ) -> bool:
        """Record a failed attempt. Dead-letters (and returns True) at ``max_attempts``;
        otherwise the entry stays pending and is retried after ``claim_idle_ms``. Transient
        failures (a dependency down) do not count toward the limit."""
        if not transient and attempts >= self.max_attempts:
            await self.dead_letter(d, f"failed {attempts} times; last error: {reason}", attempts)
            return True
        keys = keys_for(d.team)
        await self._retry(
            keys=[keys.status(d.batch_id)],
            args=[reason[:2000], repr(time.time()), "1" if transient else "0"],
        )
        return False

    async def dead_letter(self, d: RolloutDelivery, reason: str, attempts: int) -> None:
        keys = keys_for(d.team)
        await self._dead(
            keys=[
                keys.rollouts, keys.dead, keys.status(d.batch_id), keys.queued_samples,
                keys.queued_bytes,
            ],
            args=[
                self.group, d.entry_id, d.batch_id, d.sample_ids, d.payload, reason[:2000],
                attempts, repr(time.time()), self.limits.status_ttl_s, self.limits.dead_maxlen,
            ],
        )  # fmt: skip

    async def trim(self, team: str) -> int:
        """Drop rollouts every group acknowledged (memory), never unconsumed ones."""
        return int(await self._trim(keys=[keys_for(team).rollouts]))


async def _async_sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


@dataclass(frozen=True)
class DeadLetter:
    entry_id: str
    batch_id: str
    reason: str
    attempts: int
    payload: str


def dead_letters(client: redis.Redis, team: str, count: int = 100) -> list[DeadLetter]:
    """The newest dead-lettered batches of ``team`` (operators, tests)."""
    out = []
    for entry_id, raw in client.xrevrange(keys_for(team).dead, count=count):  # type: ignore[union-attr]
        f = _fields(raw)
        out.append(
            DeadLetter(
                _s(entry_id), f.get("batch_id", ""), f.get("reason", ""),
                int(f.get("attempts", "0")), f.get("batch", ""),
            )
        )  # fmt: skip
    return out
