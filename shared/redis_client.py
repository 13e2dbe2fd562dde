"""One way to open a Redis connection from a URL, a single server or a Redis Cluster.

``redis://`` and ``rediss://`` (and ``unix://``) open one server, as redis-py always did.
``redis+cluster://host:port[,host:port...]`` (or ``rediss+cluster://``) opens a Redis Cluster
from its seed nodes: redis-py's ``RedisCluster`` learns the slot map from the first that
answers, follows ``MOVED``/``ASK`` and re-learns the map after a failover. List several seeds:
a client started while its only seed is down cannot find the cluster. Every key the platform
writes carries the team in a hash tag (``rlmec:{team}:...``; the reward cache: ``{cache}``),
and every Lua script declares its keys, all in one slot, so the same code runs on both.

A pooled connection that broke while it sat idle (Redis restarted, a failover, an idle
timeout) is found broken only when used. Both clients therefore retry a command whose
connection failed, on a fresh connection, a few times with a short jittered backoff, instead
of returning a 503 for every stale connection in the pool. A timeout is not retried: the
command may have run, and XADD or INCRBY must not run twice.
"""

from __future__ import annotations

from typing import Any

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
RETRIES = 3
# Seconds; the backoff is jittered and capped, so a restart costs a request well under 1 s.
RETRY_BASE_S, RETRY_CAP_S = 0.02, 0.5


def _retrying(kwargs: dict[str, Any], retry_class: Any) -> dict[str, Any]:
    """``kwargs`` with the retry policy as defaults (a caller's own settings win)."""
    from redis.backoff import ExponentialWithJitterBackoff
    from redis.exceptions import ConnectionError

    backoff = ExponentialWithJitterBackoff(base=RETRY_BASE_S, cap=RETRY_CAP_S)
    defaults = {"retry": retry_class(backoff, RETRIES),
                "retry_on_error": [ConnectionError]}  # fmt: skip
    return {**defaults, **kwargs}


def cluster_url(url: str) -> str | None:
    """The plain ``redis://`` URL (first seed only) of a ``redis+cluster://`` one, None for a
    single server."""
    scheme, sep, rest = url.partition("://")
    plain = CLUSTER_SCHEMES.get(scheme.lower())
    if not plain or not sep:
        return None
    netloc, slash, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    return f"{plain}://{userinfo}{at}{hosts.split(',')[0]}{slash}{path}"


def cluster_seeds(url: str) -> list[tuple[str, int]]:
    """``(host, port)`` of every seed node of a ``redis+cluster://`` URL."""
    hosts = url.partition("://")[2].partition("/")[0].rpartition("@")[2]
    seeds = []
    for item in hosts.split(","):
        host, _, port = item.rpartition(":")
        seeds.append((host.strip("[]"), int(port or 6379)))
    return seeds


def is_cluster(client: Any) -> bool:
    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
    from redis.cluster import RedisCluster

    return isinstance(client, RedisCluster | AsyncRedisCluster)


def connect(url: str, **kwargs: Any) -> Any:
    """A synchronous client (``redis.Redis`` or ``redis.cluster.RedisCluster``)."""
    import redis
    from redis.cluster import ClusterNode, RedisCluster
    from redis.retry import Retry

    plain = cluster_url(url)
    if plain is None:
        return redis.Redis.from_url(url, **_retrying(kwargs, Retry))
    seeds = [ClusterNode(host, port) for host, port in cluster_seeds(url)[1:]]
    return RedisCluster.from_url(plain, startup_nodes=seeds, **kwargs)


def connect_async(
    url: str, *, max_connections: int | None = None, pool_timeout_s: float = 5.0, **kwargs: Any
) -> Any:
    """An asyncio client (``redis.asyncio.Redis`` or ``redis.asyncio.cluster.RedisCluster``).

    ``max_connections`` bounds a single server's pool, and a command waits up to
    ``pool_timeout_s`` for a free connection instead of failing at once ("Too many
    connections" under a burst was a 503 for every team).
    """
    import redis.asyncio
    from redis.asyncio.cluster import ClusterNode, RedisCluster
    from redis.asyncio.retry import Retry

    plain = cluster_url(url)
    if plain is None and max_connections is not None:
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=pool_timeout_s,
            **_retrying(kwargs, Retry),
        )  # fmt: skip
        return redis.asyncio.Redis.from_pool(pool)
    if plain is None:
        return redis.asyncio.Redis.from_url(url, **_retrying(kwargs, Retry))
    if max_connections is not None:
        kwargs["max_connections"] = max_connections
    seeds = [ClusterNode(host, port) for host, port in cluster_seeds(url)[1:]]
    return RedisCluster.from_url(plain, startup_nodes=seeds, **kwargs)
