"""Per-team rate limit and concurrency quota in Redis (shared by every API replica).

Rate limit: a fixed window per team counting *samples*; a request that would pass the limit
is refused whole (nothing is counted) with the seconds left in the window as ``Retry-After``.
A batch bigger than the whole limit can never pass: 413, not a 429 to retry. Quota is charged
for work done: a request that fails transiently (GRM or Redis down, 5xx, client gone) gets its
samples back.
Concurrency: a sorted set of leases scored by their expiry time, each lease named
``<id>:<samples>``; a request takes a lease if the unexpired leases are fewer than
``max_concurrency`` and their samples plus its own fit ``max_samples_in_flight`` (a request
bigger than that counts as exactly that, so it runs alone), and gives it back when done.
Counting samples, not only requests, is what lets one-sample traffic (OpenRLHF) put as much
work in flight as a batching client, so that coalescing can fill GRM batches (issue 32). A
replica that dies mid-request cannot leak a slot for longer than ``lease_ttl_s``. A request
that finds no free slot waits for one in its team's queue (:class:`~.admission.SlotWaiters`, up to
``admission_wait_s``, at most ``max_waiting_requests``) before it gets a 429. Both checks are Lua
scripts, atomic on the server, and use the server clock so replicas need no synced clocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager

from prometheus_client import Histogram
from redis.asyncio import Redis

from rlmec.services.reward.admission import SlotWaiters
from rlmec.services.reward.redis_guard import redis_guard
from rlmec.services.reward.teams import Team
from rlmec.services.reward.usage import add_usage
from rlmec.shared.errors import (
    ClientDisconnectedError,
    PayloadTooLargeError,
    RateLimitError,
    RetryableError,
    RlmecError,
)

_RATE_LUA = """
local n = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used + n > limit then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < 0 then ttl = window * 1000 end
  return {0, used, ttl}
end
used = redis.call('INCRBY', KEYS[1], n)
if used == n then redis.call('PEXPIRE', KEYS[1], window * 1000) end
return {1, used, redis.call('PTTL', KEYS[1])}
"""

_LEASE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local leases = redis.call('ZRANGE', KEYS[1], 0, -1)
if #leases >= tonumber(ARGV[3]) then
  return {0, #leases}
end
local samples = 0
for _, lease in ipairs(leases) do
  -- a lease without its samples (written by an older replica) counts as one
  samples = samples + (tonumber(string.match(lease, ':(%d+)$')) or 1)
end
if samples + tonumber(ARGV[2]) > tonumber(ARGV[4]) then
  return {0, #leases}
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[5]) * 1000, ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[5]) * 1000)
return {1, #leases + 1}
"""

_REFUND_LUA = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used <= 0 then return 0 end
return redis.call('DECRBY', KEYS[1], math.min(used, tonumber(ARGV[1])))
"""


class QuotaGate:
    def __init__(
        self, redis: Redis, *, prefix: str, lease_ttl_s: int, admission_wait_s: float = 0.0,
        wait_seconds: Histogram | None = None,
    ) -> None:  # fmt: skip
        self.redis = redis
        self.wait_seconds = wait_seconds  # observed per team on every granted slot
        self.prefix = prefix
        self.lease_ttl_s = lease_ttl_s
        self.waiters = SlotWaiters(max_wait_s=admission_wait_s)
        self._rate = redis.register_script(_RATE_LUA)
        self._lease = redis.register_script(_LEASE_LUA)
        self._refund = redis.register_script(_REFUND_LUA)

    def _rate_key(self, team: Team) -> str:
        return f"{self.prefix}:rate:{team.name}"

    def _slots_key(self, team: Team) -> str:
        return f"{self.prefix}:inflight:{team.name}"

    async def charge(self, team: Team, samples: int) -> None:
        """Count ``samples`` against the team's window or raise 429."""
        if samples > team.rate_limit:
            raise PayloadTooLargeError(
                f"a batch of {samples} samples can never fit team {team.name!r}'s rate limit of "
                f"{team.rate_limit} samples per {team.rate_window_s} s; split it into batches "
                f"of at most {team.rate_limit}",
                param="samples",
                code="batch_over_rate_limit",
            )
        ok, used, ttl_ms = await self._rate(
            keys=[self._rate_key(team)], args=[samples, team.rate_limit, team.rate_window_s]
        )
        if not ok:
            raise RateLimitError(
                f"team {team.name!r} used {used} of {team.rate_limit} samples in this "
                f"{team.rate_window_s} s window; retry after the window resets",
                retry_after=max(1.0, int(ttl_ms) / 1000),
                code="rate_limit",
            )

    async def refund(self, team: Team, samples: int) -> None:
        """Give back ``samples`` charged for work that was not done (never below 0)."""
        await self._refund(keys=[self._rate_key(team)], args=[samples])

    async def try_acquire(self, team: Team, samples: int = 1) -> str | None:
        """A lease on the team's concurrency for a request of ``samples`` samples, or None
        when its requests or samples in flight are at their limits."""
        weight = max(1, min(samples, team.max_samples_in_flight))
        lease = f"{uuid.uuid4().hex}:{weight}"
        ok, _ = await self._lease(
            keys=[self._slots_key(team)],
            args=[lease, weight, team.max_concurrency, team.max_samples_in_flight,
                  self.lease_ttl_s],
        )  # fmt: skip
        return lease if ok else None

    async def acquire(self, team: Team, samples: int = 1) -> str:
        """A concurrency lease, after waiting in the team's queue if need be; else 429."""
        started = time.monotonic()
        lease = await self.waiters.acquire(
            team.name,
            lambda: self.try_acquire(team, samples),
            max_waiting=team.max_waiting_requests,
            limit=f"{team.max_concurrency} requests or {team.max_samples_in_flight} samples",
        )
        if self.wait_seconds is not None:
            self.wait_seconds.labels(team.name).observe(time.monotonic() - started)
        return lease

    async def release(self, team: Team, lease: str) -> None:
        try:
            await self.redis.zrem(self._slots_key(team), lease)
        finally:
            self.waiters.wake(team.name)


def _work_not_done(exc: BaseException) -> bool:
    """Transient failures and cancellation did no work the team should pay for; a 4xx of
    the request's own making (bad input) did."""
    if isinstance(exc, RetryableError | ClientDisconnectedError):
        return True
    if isinstance(exc, RlmecError):
        return exc.status_code >= 500
    return True


@asynccontextmanager
async def admit(gate: QuotaGate, team: Team, samples: int) -> AsyncIterator[None]:
    """A concurrency slot and ``samples`` charged to the team's window for the body; a 429
    also counts in the team's usage (``rate_limited``). Redis down is a 503. The slot is freed
    as soon as the body ends, cancelled or not; transient failures are refunded."""
    async with redis_guard(gate.redis):
        lease = await _admit(gate, team, samples)
    try:
        yield
    except BaseException as exc:
        if _work_not_done(exc):
            await _quietly(gate.refund(team, samples))
        raise
    finally:
        await _quietly(gate.release(team, lease))


async def _admit(gate: QuotaGate, team: Team, samples: int) -> str:
    lease: str | None = None
    try:
        lease = await gate.acquire(team, samples)
        await gate.charge(team, samples)
    except (RateLimitError, PayloadTooLargeError):
        if lease is not None:
            await gate.release(team, lease)
        await add_usage(gate.redis, gate.prefix, team.name, {"rate_limited": 1})
        raise
    await add_usage(gate.redis, gate.prefix, team.name, {"requests": 1})
    return lease


async def _quietly(step: Awaitable[None]) -> None:
    """Best-effort bookkeeping on the way out (shielded from a cancelled request): with Redis
    down the lease expires by itself after ``lease_ttl_s``."""
    with contextlib.suppress(Exception):
        await asyncio.shield(step)
