"""The concurrency leases on a real Redis: requests and their samples in flight, per team."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from rlmec.services.reward.quotas import QuotaGate
from rlmec.services.reward.settings import TeamConfig
from rlmec.services.reward.teams import Team


def team(name: str, **quota: int) -> Team:
    return Team.from_config(TeamConfig(name=name, **quota))


@pytest.fixture
async def gate(redis_url: str) -> AsyncIterator[QuotaGate]:
    client = Redis.from_url(redis_url)
    await client.flushdb()
    yield QuotaGate(client, prefix="t", lease_ttl_s=60, admission_wait_s=2.0)
    await client.aclose()


async def test_a_lease_counts_its_samples(gate: QuotaGate) -> None:
    small = team("small", max_concurrency=100, max_samples_in_flight=4)
    three = await gate.try_acquire(small, 3)
    assert three is not None
    assert await gate.try_acquire(small, 2) is None  # 3 + 2 > 4
    one = await gate.try_acquire(small, 1)
    assert one is not None
    assert await gate.try_acquire(small, 1) is None  # full
    await gate.release(small, three)
    assert await gate.try_acquire(small, 3) is not None  # room again


async def test_a_request_bigger_than_the_bound_runs_alone(gate: QuotaGate) -> None:
    small = team("small", max_concurrency=100, max_samples_in_flight=4)
    big = await gate.try_acquire(small, 1000)
    assert big is not None  # never starved: it counts as the whole bound
    assert await gate.try_acquire(small, 1) is None
    await gate.release(small, big)
    assert await gate.try_acquire(small, 1) is not None


async def test_the_requests_bound_holds_whatever_the_samples(gate: QuotaGate) -> None:
    few = team("few", max_concurrency=2, max_samples_in_flight=1000)
    assert await gate.try_acquire(few, 1) is not None
    assert await gate.try_acquire(few, 1) is not None
    assert await gate.try_acquire(few, 1) is None


async def test_teams_have_their_own_bounds(gate: QuotaGate) -> None:
    full = team("full", max_samples_in_flight=4)
    assert await gate.try_acquire(full, 4) is not None
    assert await gate.try_acquire(full, 1) is None
    assert await gate.try_acquire(team("other", max_samples_in_flight=4), 4) is not None


async def test_a_lease_without_its_samples_counts_as_one(gate: QuotaGate) -> None:
    """Leases written by a replica of an older version (one per request) still count."""
    small = team("small", max_samples_in_flight=4)
    await gate.redis.zadd("t:inflight:small", {"old-replica": (time.time() + 600) * 1000})
    assert await gate.try_acquire(small, 3) is not None
    assert await gate.try_acquire(small, 1) is None


async def test_one_sample_requests_run_together_up_to_the_samples_bound(gate: QuotaGate) -> None:
    """OpenRLHF's traffic: 64 one-sample requests at once all hold a lease together (what lets
    the coalescer fill a GRM batch); the 65th waits for the first release."""
    burst = team("burst", max_samples_in_flight=64)
    leases = await asyncio.gather(*(gate.acquire(burst, 1) for _ in range(64)))
    assert len(set(leases)) == 64
    late = asyncio.create_task(gate.acquire(burst, 1))
    await asyncio.sleep(0.3)
    assert not late.done()
    await gate.release(burst, leases[0])
    assert await asyncio.wait_for(late, 5)
