"""Prometheus metrics of one app instance (own registry, so apps in one process never clash).
Labelled by team: samples scored, cache hits, latency, errors, admission waits, and the team's
streams (queued, scored-but-unacknowledged, dead-lettered), read from Redis at each scrape.
``deploy/monitoring`` charts and alerts on them."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from redis.asyncio import Redis
from redis.exceptions import RedisError

from rlmec.shared.queue import AsyncRolloutQueue, keys_for
from rlmec.shared.schemas import ScoredSample

logger = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class RewardMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.samples = Counter(
            "rlmec_reward_samples",
            "Samples answered, by team and status (scored/unscored).",
            ["team", "status"],
            registry=self.registry,
        )
        self.unscored = Counter(
            "rlmec_reward_unscored",
            "Unscored samples by team and reason.",
            ["team", "reason"],
            registry=self.registry,
        )
        self.cache_hits = Counter(
            "rlmec_reward_cache_hits", "Samples answered from the cache.", ["team"],
            registry=self.registry,
        )  # fmt: skip
        self.requests = Counter(
            "rlmec_reward_requests", "Requests by team, route and HTTP status.",
            ["team", "route", "status"], registry=self.registry,
        )  # fmt: skip
        self.errors = Counter(
            "rlmec_reward_errors", "Failed requests by team, route and error type.",
            ["team", "route", "type"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "rlmec_reward_request_seconds", "Request latency by team and route.",
            ["team", "route"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.admission_wait = Histogram(
            "rlmec_reward_admission_wait_seconds",
            "Time a request waited for one of its team's concurrency slots.",
            ["team"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.queue_samples = Gauge(
            "rlmec_reward_queue_samples",
            "Samples in a team's streams: queued (pushed, not yet scored), scored (not yet "
            "acknowledged by the team's trainer: its lag), dead (dead-lettered entries).",
            ["team", "stream"], registry=self.registry,
        )  # fmt: skip

    def record_results(self, team: str, results: Sequence[ScoredSample]) -> None:
        for status in ("scored", "unscored"):
            n = sum(r.status == status for r in results)
            if n:
                self.samples.labels(team, status).inc(n)
        for r in results:
            if r.reason:
                self.unscored.labels(team, r.reason).inc()
        hits = sum(r.cached for r in results)
        if hits:
            self.cache_hits.labels(team).inc(hits)

    async def read_streams(self, redis: Redis | None, teams: Sequence[str]) -> None:
        """Each team's queued, scored-unacknowledged and dead-lettered samples, read at scrape
        time (two small reads per team, one key slot each: Redis Cluster too). With Redis down
        the last values stay: a scrape never fails on it (``/ready`` says Redis is down)."""
        if redis is None:
            return
        queue = AsyncRolloutQueue(redis)
        try:
            for team in teams:
                depth = await queue.depth(team)
                dead = await redis.xlen(keys_for(team).dead)
                self.queue_samples.labels(team, "queued").set(depth.queued_samples)
                self.queue_samples.labels(team, "scored").set(depth.scored_samples)
                self.queue_samples.labels(team, "dead").set(int(dead))
        except (RedisError, OSError) as exc:
            logger.warning("metrics: the team streams could not be read: %s", exc)
