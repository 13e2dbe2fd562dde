"""Durable rollout queue on Redis Streams: teams push, reward workers score, trainers pull.

The online loop (method §1, online variant), one team ``T``::

    team ──push──▶ rlmec:{T}:rollouts ──XREADGROUP "workers"──▶ reward worker ──score──▶
         ◀─429 when full                                        │ (Lua, atomic)
    trainer ◀──XREADGROUP "trainer"── rlmec:{T}:scored ◀──XADD + XACK rollouts + status
       └── optimizer step ──▶ ScoredBatchReader.ack()  (XACK: only now is the batch done)

Guarantees:

* Nothing is lost: an entry stays in its consumer group's pending list until it is acknowledged.
  A worker that dies mid-batch leaves it pending; after ``claim_idle_ms`` another worker takes it
  over with ``XAUTOCLAIM``. Writing the scored batch, acknowledging the rollout and setting the
  status happen in one Lua script, so a crash cannot separate them.
* A batch whose scoring fails (or kills its worker) ``max_attempts`` times goes to
  ``rlmec:{T}:dead`` with its reason and payload.
* Duplicates are harmless: the status hash makes a second scoring of the same batch a no-op, and
  the trainer's reader drops batch ids its group already acknowledged.
* Backpressure: a push is refused with :class:`QueueFullError` (HTTP 429 + ``Retry-After``) when
  the team already has ``max_queued_samples`` samples waiting to be scored, or
  ``max_scored_samples`` scored samples no trainer acknowledged yet. Two counters per team, kept
  by the same Lua scripts that move the entries, measure this. Streams are trimmed only below the
  oldest entry that some consumer group has not acknowledged, so unconsumed entries are never
  dropped (a consumer group that is abandoned stops trimming: delete it with ``XGROUP DESTROY``).

Keys put the team inside a Redis Cluster hash tag (``rlmec:{T}:...``) so one team's streams and
status hashes live in one slot and the Lua scripts may touch them together.

How a trainer resumes: :class:`ScoredBatchReader` first reads its consumer's own pending entries
(id ``0``: delivered before a crash or restart, never acknowledged), then new ones (id ``>``), and
takes over entries other trainers of its group left idle for ``claim_idle_ms``. Give a restarted
trainer the same ``consumer`` name to get its own entries back at once; ``claim_idle_ms`` must
exceed the longest step, or a slow step's batches are handed to another trainer of the group.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import redis
import redis.asyncio
from pydantic import AfterValidator, Field

from rlmec.shared.errors import InvalidRequestError, PermissionDeniedError, RateLimitedError
from rlmec.shared.schemas import MAX_BATCH, RewardParams, Sample, ScoredSample, StrictModel

WORKER_GROUP = "workers"
TRAINER_GROUP = "trainer"
TEAMS_KEY = "rlmec:teams"

BatchState = Literal["queued", "scoring", "scored", "dead_lettered"]

_TEAM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_BATCH_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def check_team(team: str) -> str:
    """Team names become part of Redis keys: letters, digits, ``._-``, at most 64 chars."""
    if not _TEAM_RE.match(team):
        raise ValueError(
            f"team name {team!r} is invalid; use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return team


def check_batch_id(batch_id: str) -> str:
    if not _BATCH_ID_RE.match(batch_id):
        raise ValueError(
            f"batch_id {batch_id!r} is invalid; use 1-128 letters, digits, '.', '_', ':' or '-', "
            "starting with a letter or digit (or omit it to get a generated one)"
        )
    return batch_id


TeamName = Annotated[str, AfterValidator(check_team)]
BatchId = Annotated[str, AfterValidator(check_batch_id)]


@dataclass(frozen=True)
class StreamKeys:
    """Redis key names of one team."""

    team: str
    rollouts: str
    scored: str
    dead: str

    queued_samples: str
    scored_samples: str

    def status(self, batch_id: str) -> str:
        return f"rlmec:{{{self.team}}}:batch:{batch_id}"


def keys_for(team: str) -> StreamKeys:
    """Key names of ``team``; an invalid name is a 422 naming the value and the fix."""
    try:
        check_team(team)
    except ValueError as exc:
        raise InvalidRequestError(str(exc), param="team", code="invalid_team") from None
    tag = f"rlmec:{{{team}}}"
    return StreamKeys(
        team, f"{tag}:rollouts", f"{tag}:scored", f"{tag}:dead",
        f"{tag}:queued_samples", f"{tag}:scored_samples",
    )  # fmt: skip


class RolloutBatch(StrictModel):
    """A team's batch of rollouts to score (one entry of ``rlmec:{T}:rollouts``)."""

    batch_id: BatchId = Field(description="Unique within the team; the idempotency key.")
    team: TeamName
    samples: list[Sample] = Field(min_length=1, max_length=MAX_BATCH)
    params: RewardParams = Field(default_factory=RewardParams)
    policy_tokenizer: str | None = Field(None, max_length=256)
    created_at: float = Field(description="Unix time of the push.")


class ScoredBatch(StrictModel):
    """A scored batch (one entry of ``rlmec:{T}:scored``), results in sample order."""

    batch_id: BatchId
    team: TeamName
    results: list[ScoredSample]
    policy_tokenizer: str | None = None
    created_at: float = Field(description="Unix time of the push.")
    scored_at: float = Field(description="Unix time the worker finished scoring.")
    attempts: int = Field(ge=1, description="Scoring attempts this batch needed.")
    worker: str | None = Field(None, description="Consumer name of the worker that scored it.")

    @property
    def sample_ids(self) -> list[str | None]:
        return [r.id for r in self.results]


class BatchStatus(StrictModel):
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


class QueueDepth(StrictModel):
    queued_samples: int = Field(description="Pushed, not yet scored or dead-lettered.")
    scored_samples: int = Field(description="Scored, not yet acknowledged by a trainer.")


class PushResult(StrictModel):
    batch_id: str
    team: str
    status: BatchState
    n_samples: int
    duplicate: bool = Field(False, description="The batch id was already pushed; not re-queued.")


class QueueFullError(RateLimitedError):
    """The team's queue is at its bound; retry after ``retry_after`` seconds (HTTP 429)."""

    def __init__(self, team: str, stream: str, length: int, limit: int, retry_after: float):
        what = "waiting to be scored" if stream == "rollouts" else "scored and not yet trained on"
        super().__init__(
            f"team {team!r} has {length} samples {what}, its bound is {limit}; "
            f"retry after {max(1, round(retry_after))} s, or let the "
            + ("reward workers" if stream == "rollouts" else "trainer")
            + " catch up",
            retry_after=retry_after,
            code="queue_full",
        )
        self.team = team
        self.stream = stream


@dataclass(frozen=True)
class QueueLimits:
    """Per-team bounds (in samples), status retention and dead-letter cap. A batch is refused
    when it would take the queued samples past the bound (unless nothing is queued, so one
    batch larger than the bound is never refused forever)."""

    max_queued_samples: int = 100_000
    max_scored_samples: int = 100_000
    retry_after_s: float = 2.0
    status_ttl_s: int = 7 * 24 * 3600
    dead_maxlen: int = 10_000


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(raw: Mapping[Any, Any] | None) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in (raw or {}).items()}


def _stream_entries(reply: Any) -> list[tuple[str, list[tuple[Any, Any]]]]:
    """XREAD(GROUP) replies as ``[(stream, [(id, fields), ...])]`` (RESP2 list or RESP3 map)."""
    if not reply:
        return []
    items = reply.items() if isinstance(reply, dict) else reply
    out = []
    for stream, entries in items:
        # RESP3 nests each stream's entries one list deeper
        if (
            entries
            and isinstance(entries[0], list)
            and entries[0]
            and isinstance(entries[0][0], tuple)
        ):
            entries = entries[0]
        out.append((_s(stream), list(entries)))
    return out


def new_batch_id() -> str:
    return uuid.uuid4().hex


# --- Lua scripts: each one is atomic, so a crash between its steps cannot happen. -------------

_PUSH = """
local st = redis.call('HGET', KEYS[2], 'status')
if st then return {'duplicate', st, redis.call('HGET', KEYS[2], 'n_samples') or '0'} end
local n = tonumber(ARGV[8])
local q = tonumber(redis.call('GET', KEYS[3]) or '0')
if q > 0 and q + n > tonumber(ARGV[4]) then return {'full', 'rollouts', tostring(q)} end
local s = tonumber(redis.call('GET', KEYS[4]) or '0')
if s >= tonumber(ARGV[5]) then return {'full', 'scored', tostring(s)} end
local id = redis.call('XADD', KEYS[1], '*', 'batch_id', ARGV[1], 'sample_ids', ARGV[2],
                      'batch', ARGV[3])
redis.call('HSET', KEYS[2], 'status', 'queued', 'n_samples', ARGV[8], 'attempts', 0,
           'created_at', ARGV[6], 'updated_at', ARGV[6], 'rollout_entry', id)
redis.call('EXPIRE', KEYS[2], ARGV[7])
redis.call('INCRBY', KEYS[3], n)
return {'ok', id}
"""

# A batch already scored or dead-lettered (a duplicate delivery) is only acknowledged.
_BEGIN = """
local st = redis.call('HGET', KEYS[2], 'status')
if st == 'scored' or st == 'dead_lettered' then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  return -1
end
local n = redis.call('HINCRBY', KEYS[2], 'attempts', 1)
redis.call('HSET', KEYS[2], 'status', 'scoring', 'updated_at', ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return n
"""

_COMPLETE = """
local st = redis.call('HGET', KEYS[3], 'status')
if st == 'scored' or st == 'dead_lettered' then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  return false
end
local id = redis.call('XADD', KEYS[2], '*', 'batch_id', ARGV[3], 'sample_ids', ARGV[4],
                      'batch', ARGV[5])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], 'status', 'scored', 'updated_at', ARGV[6], 'scored_entry', id)
redis.call('EXPIRE', KEYS[3], ARGV[7])
local n = tonumber(redis.call('HGET', KEYS[3], 'n_samples') or '0')
if redis.call('DECRBY', KEYS[4], n) < 0 then redis.call('SET', KEYS[4], 0) end
redis.call('INCRBY', KEYS[5], n)
return id
"""

_DEAD = """
local st = redis.call('HGET', KEYS[3], 'status')
if st == 'scored' or st == 'dead_lettered' then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  return false
end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[10], '*', 'batch_id', ARGV[3],
                      'sample_ids', ARGV[4], 'reason', ARGV[6], 'attempts', ARGV[7],
                      'batch', ARGV[5])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], 'status', 'dead_lettered', 'reason', ARGV[6], 'updated_at', ARGV[8])
redis.call('EXPIRE', KEYS[3], ARGV[9])
local n = tonumber(redis.call('HGET', KEYS[3], 'n_samples') or '0')
if redis.call('DECRBY', KEYS[4], n) < 0 then redis.call('SET', KEYS[4], 0) end
return id
"""

# A failed attempt that will be retried: back to 'queued' with the error; a transient failure
# (dependency down) gives its attempt back so an outage does not dead-letter healthy batches.
_RETRY = """
local st = redis.call('HGET', KEYS[1], 'status')
if st ~= 'scoring' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'queued', 'reason', ARGV[1], 'updated_at', ARGV[2])
if ARGV[3] == '1' then redis.call('HINCRBY', KEYS[1], 'attempts', -1) end
return 1
"""

# The trainer's acknowledgement: the first group to acknowledge a batch frees its samples from
# the team's scored bound (HSETNX makes a repeated ack free nothing twice).
_ACK = """
for i = 3, #KEYS do
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
  redis.call('HSET', KEYS[i], 'acked_by:' .. ARGV[1], ARGV[2])
  if redis.call('HSETNX', KEYS[i], 'consumed', ARGV[2]) == 1 then
    local n = tonumber(redis.call('HGET', KEYS[i], 'n_samples') or '0')
    if redis.call('DECRBY', KEYS[2], n) < 0 then redis.call('SET', KEYS[2], 0) end
  end
end
return #KEYS - 2
"""

# Trim below the oldest entry some group still needs: per group, its oldest pending entry, or
# the successor of its last-delivered id when nothing is pending. No group: nothing consumed.
_TRIM = """
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
if not ok or #groups == 0 then return 0 end
local best_ms, best_seq = nil, nil
for _, g in ipairs(groups) do
  local name, last
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] end
    if g[i] == 'last-delivered-id' then last = g[i + 1] end
  end
  local p = redis.call('XPENDING', KEYS[1], name)
  local ms, seq
  if tonumber(p[1]) > 0 then
    ms, seq = string.match(p[2], '(%d+)-(%d+)')
    ms, seq = tonumber(ms), tonumber(seq)
  else
    ms, seq = string.match(last, '(%d+)-(%d+)')
    ms, seq = tonumber(ms), tonumber(seq) + 1
  end
  if best_ms == nil or ms < best_ms or (ms == best_ms and seq < best_seq) then
    best_ms, best_seq = ms, seq
  end
end
return redis.call('XTRIM', KEYS[1], 'MINID', string.format('%.0f-%.0f', best_ms, best_seq))
"""


def _push_call(
    batch: RolloutBatch, keys: StreamKeys, limits: QueueLimits
) -> tuple[list[str], list[Any]]:
    sample_ids = json.dumps([s.id for s in batch.samples])
    return (
        [keys.rollouts, keys.status(batch.batch_id), keys.queued_samples, keys.scored_samples],
        [
            batch.batch_id, sample_ids, batch.model_dump_json(), limits.max_queued_samples,
            limits.max_scored_samples, repr(batch.created_at), limits.status_ttl_s,
            len(batch.samples),
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
) -> RolloutBatch:
    keys_for(team)  # a bad team name is a 422 before pydantic wraps it
    return RolloutBatch(
        batch_id=batch_id or new_batch_id(),
        team=team,
        samples=list(samples),
        params=params or RewardParams(),
        policy_tokenizer=policy_tokenizer,
        created_at=time.time(),
    )


def _full_error(team: str, full: tuple[str, int], limits: QueueLimits) -> QueueFullError:
    stream, length = full
    limit = limits.max_queued_samples if stream == "rollouts" else limits.max_scored_samples
    return QueueFullError(team, stream, length, limit, limits.retry_after_s)


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
    ) -> PushResult:
        """Queue one batch. Same ``batch_id`` twice: the second push is a no-op (idempotent
        retries). Raises :class:`QueueFullError` at the team's bound (``limits`` overrides the
        queue's for this team)."""
        batch = _make_batch(team, samples, params, policy_tokenizer, batch_id)
        limits = limits or self.limits
        result = _push_result(batch, self._push(*_push_call(batch, keys_for(team), limits)))
        if isinstance(result, tuple):
            raise _full_error(team, result, limits)
        self.client.sadd(TEAMS_KEY, team)
        return result

    def depth(self, team: str) -> QueueDepth:
        keys = keys_for(team)
        queued, scored = self.client.mget(keys.queued_samples, keys.scored_samples)
        return QueueDepth(queued_samples=int(queued or 0), scored_samples=int(scored or 0))

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
    ) -> PushResult:
        batch = _make_batch(team, samples, params, policy_tokenizer, batch_id)
        limits = limits or self.limits
        call = _push_call(batch, keys_for(team), limits)
        result = _push_result(batch, await self._push(*call))
        if isinstance(result, tuple):
            raise _full_error(team, result, limits)
        await self.client.sadd(TEAMS_KEY, team)
        return result

    async def depth(self, team: str) -> QueueDepth:
        keys = keys_for(team)
        queued, scored = await self.client.mget(keys.queued_samples, keys.scored_samples)
        return QueueDepth(queued_samples=int(queued or 0), scored_samples=int(scored or 0))

    async def trim(self, team: str) -> int:
        keys = keys_for(team)
        return sum([int(await self._trim(keys=[k])) for k in (keys.rollouts, keys.scored)])

    async def status(self, team: str, batch_id: str) -> BatchStatus | None:
        raw = await self.client.hgetall(keys_for(team).status(batch_id))
        return _status(team, batch_id, raw)


# --- Worker side (async: the reward worker runs on asyncio) -----------------------------------


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
        self._groups: set[str] = set()
        self._pending_cursor: dict[str, str] = {}
        self._claim_cursor: dict[str, str] = {}
        self._begin = client.register_script(_BEGIN)
        self._complete = client.register_script(_COMPLETE)
        self._dead = client.register_script(_DEAD)
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
        reply = await self.client.xreadgroup(
            self.group, self.consumer, dict.fromkeys(streams, ">"), count=count, block=block_ms
        )
        for stream, entries in _stream_entries(reply):
            out += [_rollout_delivery(streams[stream], i, f) for i, f in entries]
        return out

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
            policy_tokenizer=d.batch.policy_tokenizer, created_at=d.batch.created_at,
            scored_at=time.time(), attempts=attempts, worker=self.consumer,
        )  # fmt: skip
        keys = keys_for(d.team)
        entry = await self._complete(
            keys=[
                keys.rollouts, keys.scored, keys.status(d.batch_id), keys.queued_samples,
                keys.scored_samples,
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
            keys=[keys.rollouts, keys.dead, keys.status(d.batch_id), keys.queued_samples],
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


# --- Trainer side (sync: the training loop is synchronous) ------------------------------------


@dataclass(frozen=True)
class Delivery:
    """A scored batch handed to the trainer; ``ack`` it after the step that used it."""

    entry_id: str
    batch: ScoredBatch


@dataclass(frozen=True)
class DeadLetter:
    entry_id: str
    batch_id: str
    reason: str
    attempts: int
    payload: str


class ScoredBatchReader:
    """Pulls a team's scored batches with a consumer group; see the module docstring for how a
    trainer resumes. Not thread-safe: one reader per training process."""

    _RECENT = 100_000  # batch ids remembered as acknowledged, beyond the status hashes

    def __init__(
        self,
        client: redis.Redis,
        team: str,
        *,
        group: str = TRAINER_GROUP,
        consumer: str = "trainer-0",
        claim_idle_ms: int = 60_000,
    ) -> None:
        self.client = client
        self.keys = keys_for(team)
        self.team = self.keys.team
        self.group = group
        self.consumer = consumer
        self.claim_idle_ms = claim_idle_ms
        self._pending_cursor: str | None = "0"
        self._claim_cursor = "0-0"
        self._outstanding: dict[str, str] = {}  # entry id -> batch id, handed out, not acked
        self._acked: OrderedDict[str, None] = OrderedDict()
        self._trim = client.register_script(_TRIM)
        self._ack = client.register_script(_ACK)
        self._ensure_group()

    def _ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.keys.scored, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def pull(self, max_batches: int = 1, block_ms: int = 1000) -> list[Delivery]:
        """Up to ``max_batches`` scored batches: own pending first (resume), then entries idle
        in other consumers, then new ones (blocking up to ``block_ms``). Batch ids this group
        already acknowledged, or that are handed out under another entry, are dropped."""
        if max_batches < 1:
            raise ValueError(f"max_batches ({max_batches}) must be at least 1")
        entries: list[tuple[Any, Any]] = []
        if self._pending_cursor is not None:
            entries += self._read(self._pending_cursor, max_batches, None)
            self._pending_cursor = _s(entries[-1][0]) if entries else None
        if len(entries) < max_batches:
            reply = self.client.xautoclaim(
                self.keys.scored, self.group, self.consumer, self.claim_idle_ms,
                self._claim_cursor, count=max_batches - len(entries),
            )  # fmt: skip
            self._claim_cursor = _s(reply[0])
            entries += [(i, f) for i, f in reply[1] if _s(i) not in self._outstanding]
        if not entries:
            entries = self._read(">", max_batches, block_ms)
        return self._dedupe(entries)

    def _read(self, cursor: str, count: int, block_ms: int | None) -> list[tuple[Any, Any]]:
        try:
            reply = self.client.xreadgroup(
                self.group, self.consumer, {self.keys.scored: cursor}, count=count, block=block_ms
            )
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._ensure_group()  # the server lost the group (restart without AOF)
            return []
        found = _stream_entries(reply)
        return found[0][1] if found else []

    def _dedupe(self, entries: list[tuple[Any, Any]]) -> list[Delivery]:
        parsed: list[tuple[str, ScoredBatch | None]] = []
        for entry_id, raw in entries:
            f = _fields(raw)
            try:
                parsed.append((_s(entry_id), ScoredBatch.model_validate_json(f["batch"])))
            except (KeyError, ValueError) as exc:
                self._set_aside(_s(entry_id), f, f"unreadable scored entry: {str(exc)[:500]}")
                parsed.append((_s(entry_id), None))
        pipe = self.client.pipeline(transaction=False)
        for _, batch in parsed:
            if batch is not None:
                pipe.hexists(self.keys.status(batch.batch_id), f"acked_by:{self.group}")
            else:
                pipe.echo("")
        already = pipe.execute()
        out: list[Delivery] = []
        drop: list[str] = []
        for (entry_id, batch), acked in zip(parsed, already, strict=True):
            if batch is None:
                continue
            held = set(self._outstanding.values())
            if acked or batch.batch_id in self._acked or batch.batch_id in held:
                drop.append(entry_id)  # a duplicate: the first copy is (being) trained on
                continue
            self._outstanding[entry_id] = batch.batch_id
            out.append(Delivery(entry_id, batch))
        if drop:
            self.client.xack(self.keys.scored, self.group, *drop)
        return out

    def _set_aside(self, entry_id: str, fields: dict[str, str], reason: str) -> None:
        pipe = self.client.pipeline(transaction=True)
        entry: dict[Any, Any] = {**fields, "reason": reason, "attempts": "0"}
        pipe.xadd(self.keys.dead, entry)
        pipe.xack(self.keys.scored, self.group, entry_id)
        pipe.execute()

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Acknowledge batches once the optimizer step that used them is done. Only this
        reader's team: a delivery of another team is refused, never acknowledged."""
        if not deliveries:
            return
        for d in deliveries:
            if d.batch.team != self.team:
                raise PermissionDeniedError(
                    f"delivery {d.entry_id} belongs to team {d.batch.team!r}, not {self.team!r}; "
                    "acknowledge it with that team's reader"
                )
        self._ack(
            keys=[
                self.keys.scored, self.keys.scored_samples,
                *[self.keys.status(d.batch.batch_id) for d in deliveries],
            ],
            args=[self.group, repr(time.time()), *[d.entry_id for d in deliveries]],
        )  # fmt: skip
        for d in deliveries:
            self._outstanding.pop(d.entry_id, None)
            self._acked[d.batch.batch_id] = None
        while len(self._acked) > self._RECENT:
            self._acked.popitem(last=False)
        self._trim(keys=[self.keys.scored])

    @property
    def outstanding(self) -> int:
        """Batches handed out and not yet acknowledged."""
        return len(self._outstanding)


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
