"""Per-team usage counters in Redis (one hash per team), shared by the API and the workers so
the numbers add up across processes. Fields: requests, samples, scored, unscored, cache_hits,
grm_errors, rate_limited."""

from __future__ import annotations

from collections.abc import Mapping

from redis.asyncio import Redis

FIELDS = ("requests", "samples", "scored", "unscored", "cache_hits", "grm_errors", "rate_limited")


def usage_key(prefix: str, team: str) -> str:
    return f"{prefix}:usage:{team}"


async def add_usage(redis: Redis, prefix: str, team: str, counts: Mapping[str, int]) -> None:
    nonzero = {k: v for k, v in counts.items() if v}
    if not nonzero:
        return
    pipe = redis.pipeline(transaction=False)
    for name, value in nonzero.items():
        pipe.hincrby(usage_key(prefix, team), name, value)
    await pipe.execute()


async def read_usage(redis: Redis, prefix: str, team: str) -> dict[str, int]:
    raw = await redis.hgetall(usage_key(prefix, team))
    stored = {_text(k): int(v) for k, v in raw.items()}
    return {name: stored.get(name, 0) for name in FIELDS}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
