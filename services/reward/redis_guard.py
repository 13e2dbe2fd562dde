"""Redis failures become 503s naming the server, never 500s."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from rlmec.shared.errors import ServiceUnavailableError


def redis_address(redis: Redis) -> str:
    kwargs = redis.connection_pool.connection_kwargs
    return f"redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"


@asynccontextmanager
async def redis_guard(redis: Redis) -> AsyncIterator[None]:
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError) as exc:
        raise ServiceUnavailableError(
            f"Redis at {redis_address(redis)} is unreachable ({type(exc).__name__}); start it "
            "or fix RLMEC_REWARD_REDIS_URL",
            code="redis_unreachable",
        ) from exc
