"""Reward workers (``rlmec reward worker``): score the teams' rollouts from the queue.

Each worker loop is one consumer of the ``workers`` group on every team's rollouts stream
(:class:`rlmec.shared.queue.RolloutConsumer`): it takes a batch, scores it with the reward
pipeline, and writes the scored batch + acknowledges the rollout in one atomic step. A worker
killed mid-batch leaves the entry pending; another worker claims it after ``claim_idle_ms``.
A batch that fails ``max_attempts`` times is dead-lettered with its reason. Lost connections to
Redis (a restart, a failover) are retried with backoff; results already computed are kept in
memory and written once Redis is back, so a restart costs no re-scoring.

The scorer is any ``async (RolloutBatch) -> list[ScoredSample]``: the reward pipeline by
default, ``instant`` (benchmarks) or ``module:function`` (tests inject fakes this way).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import redis.asyncio
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from rlmec.shared.errors import RetryableError
from rlmec.shared.queue import (
    WORKER_GROUP,
    RolloutBatch,
    RolloutConsumer,
    RolloutDelivery,
    check_team,
)
from rlmec.shared.redis_client import connect_async
from rlmec.shared.schemas import ScoredSample

if TYPE_CHECKING:
    from rlmec.services.reward.settings import RewardSettings

logger = logging.getLogger("rlmec.reward.worker")

Scorer = Callable[[RolloutBatch], Awaitable[list[ScoredSample]]]
T = TypeVar("T")

# Failures that say "a dependency is down", not "this batch is bad": they do not count toward
# max_attempts, so a GRM or Redis outage never dead-letters healthy batches.
TRANSIENT: tuple[type[BaseException], ...] = (
    RetryableError,
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
)
_REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


@dataclass
class WorkerConfig:
    teams: list[str] | None = None  # None: every team that ever pushed
    consumer: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    concurrency: int = 1
    group: str = WORKER_GROUP
    claim_idle_ms: int = 60_000
    max_attempts: int = 3
    block_ms: int = 1000
    batches_per_read: int = 1
    score_timeout_s: float = 900.0
    trim_every_s: float = 1.0


@dataclass
class WorkerStats:
    scored: int = 0
    skipped: int = 0  # duplicates, and batches dead-lettered before scoring
    failed: int = 0
    dead_lettered: int = 0
    reconnects: int = 0


class RewardWorker:
    """``concurrency`` independent consumer loops over one Redis connection pool."""

    def __init__(self, client: redis.asyncio.Redis, scorer: Scorer, config: WorkerConfig):
        if config.concurrency < 1:
            raise ValueError(f"concurrency ({config.concurrency}) must be at least 1")
        self.client = client
        self.scorer = scorer
        self.config = config
        self.stats = WorkerStats()

    def consumer(self, index: int) -> RolloutConsumer:
        c = self.config
        return RolloutConsumer(
            self.client, consumer=f"{c.consumer}-{index}", teams=c.teams, group=c.group,
            claim_idle_ms=c.claim_idle_ms, max_attempts=c.max_attempts,
        )  # fmt: skip

    async def run(self, stop: asyncio.Event) -> None:
        loops = [
            self._loop(self.consumer(i), stop, trims=i == 0) for i in range(self.config.concurrency)
        ]
        await asyncio.gather(*loops)

    async def _loop(self, consumer: RolloutConsumer, stop: asyncio.Event, *, trims: bool) -> None:
        backoff = 0.05
        last_trim = 0.0
        while not stop.is_set():
            try:
                deliveries = await consumer.fetch(
                    self.config.batches_per_read, self.config.block_ms
                )
                for d in deliveries:
                    await self.process(consumer, d, stop)
                if trims and time.monotonic() - last_trim > self.config.trim_every_s:
                    last_trim = time.monotonic()
                    for team in await consumer.teams():
                        await consumer.trim(team)
                backoff = 0.05
            except _REDIS_DOWN as exc:
                self.stats.reconnects += 1
                logger.warning("redis unreachable (%s); retrying in %.2f s", exc, backoff)
                consumer.forget_groups()
                await _sleep_or_stop(stop, backoff)
                backoff = min(backoff * 2, 2.0)
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                consumer.forget_groups()  # the server lost its groups (no AOF): recreate them

    async def process(
        self, consumer: RolloutConsumer, d: RolloutDelivery, stop: asyncio.Event
    ) -> None:
        attempts = await consumer.begin(d)
        if attempts is None or d.batch is None:
            self.stats.skipped += 1
            return
        try:
            async with self._heartbeat(consumer, d):
                results = await asyncio.wait_for(self.scorer(d.batch), self.config.score_timeout_s)
            if len(results) != len(d.batch.samples):
                raise ValueError(
                    f"the scorer returned {len(results)} results for {len(d.batch.samples)} samples"
                )
        except TRANSIENT as exc:
            logger.warning("batch %s: transient failure: %s", d.batch_id, exc)
            self.stats.failed += 1
            why = _reason(exc)
            await self._persist(stop, lambda: consumer.fail(d, why, attempts, transient=True))
            return
        except Exception as exc:
            logger.warning("batch %s: attempt %d failed: %s", d.batch_id, attempts, exc)
            self.stats.failed += 1
            why = _reason(exc)
            dead = await self._persist(stop, lambda: consumer.fail(d, why, attempts))
            self.stats.dead_lettered += bool(dead)
            return
        written = await self._persist(stop, lambda: consumer.complete(d, results, attempts))
        if written is None:
            self.stats.skipped += 1
        else:
            self.stats.scored += 1

    @asynccontextmanager
    async def _heartbeat(
        self, consumer: RolloutConsumer, d: RolloutDelivery
    ) -> AsyncIterator[None]:
        """Extend the claim every third of ``claim_idle_ms`` while the body scores the batch:
        a batch that takes longer than the claim window is still this worker's, never scored
        twice or dead-lettered as "worker died"."""
        period = self.config.claim_idle_ms / 3000

        async def beat() -> None:
            while True:
                await asyncio.sleep(period)
                try:
                    if not await consumer.extend(d):
                        logger.warning("batch %s: claimed by another worker", d.batch_id)
                        return
                except _REDIS_DOWN as exc:  # the next beat tries again
                    logger.warning("batch %s: heartbeat failed: %s", d.batch_id, exc)

        task = asyncio.create_task(beat())
        try:
            yield
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    async def _persist(self, stop: asyncio.Event, write: Callable[[], Awaitable[T]]) -> T | None:
        """Retry a Redis write through an outage: the scripts are idempotent (a batch already
        scored is only acknowledged), so a write that did land before the error is harmless.
        On shutdown the entry stays pending and another worker claims it."""
        backoff = 0.05
        while True:
            try:
                return await write()
            except _REDIS_DOWN as exc:
                if stop.is_set():
                    return None
                self.stats.reconnects += 1
                logger.warning("redis unreachable while writing (%s); retrying", exc)
                await _sleep_or_stop(stop, backoff)
                backoff = min(backoff * 2, 2.0)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


# --- scorers ----------------------------------------------------------------------------------


async def instant_scorer(batch: RolloutBatch) -> list[ScoredSample]:
    """Returns at once (queue benchmarks): every sample 'scored' without token values."""
    return [
        ScoredSample(
            id=s.id,
            status="scored",
            task=s.task,
            question=s.question,
            prompt=s.prompt,
            prediction=s.prediction,
            correct=False,
            predicted_answer=None,
            reference_answer=s.reference_answer,
            params=batch.params,
            behaviour_logprobs=s.behaviour_logprobs,
            metadata=s.metadata,
        )
        for s in batch.samples
    ]


@asynccontextmanager
async def pipeline_scorer(settings: RewardSettings | None = None) -> AsyncIterator[Scorer]:
    """The reward service's pipeline (GRM calls, cache, usage); settings from the env unless
    given. Imported here: the pipeline pulls in tokenizers, which the queue tests never need."""
    from rlmec.services.reward.pipeline import open_pipeline
    from rlmec.services.reward.settings import get_settings

    async with open_pipeline(settings or get_settings()) as pipeline:

        async def score(batch: RolloutBatch) -> list[ScoredSample]:
            return await pipeline.score(
                batch.samples, batch.params, policy_tokenizer=batch.policy_tokenizer,
                team=batch.team,
            )  # fmt: skip

        yield score


@asynccontextmanager
async def _plain(scorer: Scorer) -> AsyncIterator[Scorer]:
    yield scorer


def load_scorer(
    spec: str, overrides: dict[str, Any] | None = None
) -> AbstractAsyncContextManager[Scorer]:
    """``pipeline`` (default; its settings from the env plus ``overrides``), ``instant``, or
    ``module:function`` naming an async scorer."""
    if spec == "pipeline":
        if not overrides:
            return pipeline_scorer()
        from rlmec.services.reward.settings import get_settings

        return pipeline_scorer(get_settings(**overrides))
    if spec == "instant":
        return _plain(instant_scorer)
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"--scorer {spec!r} is invalid; use pipeline, instant or module:function")
    func = getattr(importlib.import_module(module), name, None)
    if func is None or not callable(func):
        raise ValueError(f"--scorer {spec!r}: {module} has no callable {name!r}")
    return _plain(func)


# --- command line -----------------------------------------------------------------------------


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", help="default: RLMEC_REWARD_REDIS_URL")
    parser.add_argument(
        "--redis-username", help="Redis ACL user (default: RLMEC_REWARD_REDIS_USERNAME)"
    )
    parser.add_argument(
        "--redis-password-file",
        help="file holding its password (default: RLMEC_REWARD_REDIS_PASSWORD_FILE)",
    )
    parser.add_argument(
        "--grm-url",
        action="append",
        default=None,
        metavar="URL",
        help="GRM service base URL, repeatable (default: RLMEC_REWARD_GRM_URLS)",
    )
    parser.add_argument(
        "--team",
        action="append",
        dest="teams",
        metavar="TEAM",
        help="score this team's rollouts (repeatable; default: every team)",
    )
    parser.add_argument("--concurrency", type=int, default=1, help="batches scored at once")
    parser.add_argument(
        "--consumer",
        help="consumer name (default: host-pid); keep it stable "
        "across restarts to resume this worker's own pending batches at once",
    )
    parser.add_argument(
        "--claim-idle-ms",
        type=int,
        default=60_000,
        help="take over batches another worker left idle this long",
    )
    parser.add_argument(
        "--max-attempts",
        type=int,
        default=3,
        help="failures before a batch goes to the dead-letter stream",
    )
    parser.add_argument("--block-ms", type=int, default=1000, help="wait for new rollouts")
    parser.add_argument("--batches-per-read", type=int, default=1,
                        help="batches one XREADGROUP takes")  # fmt: skip
    parser.add_argument(
        "--scorer",
        default="pipeline",
        help="pipeline (default), instant, or module:function (tests)",
    )


def _config(args: argparse.Namespace) -> WorkerConfig:
    for name in ("concurrency", "max_attempts", "block_ms", "batches_per_read"):
        if getattr(args, name) < 1:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} ({getattr(args, name)}) must be at least 1")
    if args.claim_idle_ms < 100:
        raise ValueError(f"--claim-idle-ms ({args.claim_idle_ms}) must be at least 100")
    teams = [check_team(t) for t in args.teams] if args.teams else None
    config = WorkerConfig(
        teams=teams, concurrency=args.concurrency, claim_idle_ms=args.claim_idle_ms,
        max_attempts=args.max_attempts, block_ms=args.block_ms,
        batches_per_read=args.batches_per_read,
    )  # fmt: skip
    if args.consumer:
        config.consumer = args.consumer
    return config


async def serve(
    redis_url: str,
    scorer_spec: str,
    config: WorkerConfig,
    overrides: dict[str, Any] | None = None,
    redis_credentials: dict[str, Any] | None = None,
) -> WorkerStats:
    """Run until SIGTERM/SIGINT; the batch in hand is finished first."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # socket_timeout must outlast XREADGROUP's BLOCK, or idle reads would look like failures.
    client = connect_async(
        redis_url, socket_connect_timeout=2.0, socket_timeout=config.block_ms / 1000 + 10,
        **(redis_credentials or {}),
    )  # fmt: skip
    try:
        async with load_scorer(scorer_spec, overrides) as scorer:
            worker = RewardWorker(client, scorer, config)
            logger.info("worker %s ready (%d loops)", config.consumer, config.concurrency)
            await worker.run(stop)
            return worker.stats
    finally:
        await client.aclose()


def run_worker_command(args: argparse.Namespace) -> int:
    # The pipeline's own connections (cache, usage) go where the flags point the worker.
    overrides: dict[str, Any] = {}
    for flag in ("redis_url", "redis_username", "redis_password_file"):
        if getattr(args, flag):
            overrides[flag] = getattr(args, flag)
    if args.grm_url:
        overrides["grm_urls"] = args.grm_url
    try:
        config = _config(args)
        redis = _redis_settings(overrides)
    except ValueError as exc:
        print(f"rlmec reward worker: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        stats = asyncio.run(
            serve(redis.redis_url, args.scorer, config, overrides, redis.redis_credentials())
        )
    except ValidationError as exc:
        print(f"rlmec reward worker: {exc}", file=sys.stderr)
        return 2
    logger.info("worker stopped: %s", stats)
    return 0


def _redis_settings(overrides: dict[str, Any]) -> RewardSettings:
    """The Redis URL and credentials: flags over RLMEC_REWARD_* variables."""
    from rlmec.services.reward.settings import get_settings

    keys = ("redis_url", "redis_username", "redis_password_file")
    return get_settings(**{k: v for k, v in overrides.items() if k in keys})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlmec.services.reward.worker")
    add_worker_arguments(parser)
    return run_worker_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
