"""The rollout queue against a real Redis server: push, score, pull, backpressure, duplicates,
dead letters and team isolation (issue 5)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio

from rlmec.services.reward.worker import instant_scorer
from rlmec.shared.errors import InvalidRequestError, PermissionDeniedError
from rlmec.shared.queue import (
    AsyncRolloutQueue,
    QueueFullError,
    QueueLimits,
    RolloutConsumer,
    RolloutQueue,
    ScoredBatchReader,
    dead_letters,
    keys_for,
)
from rlmec.shared.schemas import Sample

pytestmark = pytest.mark.integration


def samples(prefix: str, n: int, **meta: object) -> list[Sample]:
    return [
        Sample(
            id=f"{prefix}-{i}",
            question=f"What is {i} + 1?",
            reference_solution=f"{i} + 1",
            reference_answer=str(i + 1),
            prediction=f"The answer is: {i + 1}",
            metadata=dict(meta) or None,
        )
        for i in range(n)
    ]


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.fixture
async def aclient(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    c = redis.asyncio.Redis.from_url(redis_url)
    yield c
    await c.aclose()


async def score_all(consumer: RolloutConsumer, *, block_ms: int = 50) -> int:
    """Score every available batch with the instant scorer; returns how many were written."""
    written = 0
    while deliveries := await consumer.fetch(count=10, block_ms=block_ms):
        for d in deliveries:
            attempts = await consumer.begin(d)
            if attempts is not None and d.batch is not None:
                written += (
                    await consumer.complete(d, await instant_scorer(d.batch), attempts) is not None
                )
    return written


async def test_push_score_pull_ack(client: redis.Redis, aclient: redis.asyncio.Redis) -> None:
    queue = RolloutQueue(client)
    pushed = queue.push("alpha", samples("a", 3), batch_id="b-1")
    assert (pushed.status, pushed.n_samples, pushed.duplicate) == ("queued", 3, False)
    assert queue.depth("alpha").queued_samples == 3

    consumer = RolloutConsumer(aclient, consumer="w-0", teams=["alpha"])
    assert await score_all(consumer) == 1
    status = queue.status("alpha", "b-1")
    assert status is not None and (status.status, status.attempts) == ("scored", 1)
    depth = queue.depth("alpha")
    assert (depth.queued_samples, depth.scored_samples, depth.queued_bytes) == (0, 3, 0)
    assert depth.scored_bytes == len(client.xrange(keys_for("alpha").scored)[0][1][b"batch"])

    reader = ScoredBatchReader(client, "alpha", claim_idle_ms=60_000)
    got = reader.pull(max_batches=5, block_ms=100)
    assert [d.batch.batch_id for d in got] == ["b-1"]
    assert got[0].batch.sample_ids == ["a-0", "a-1", "a-2"]
    assert reader.outstanding == 1
    reader.ack(got)
    status = queue.status("alpha", "b-1")
    assert status is not None and status.consumed
    assert queue.depth("alpha").scored_samples == 0 and queue.depth("alpha").scored_bytes == 0
    assert reader.pull(max_batches=5, block_ms=50) == []


async def test_async_push_and_status(aclient: redis.asyncio.Redis) -> None:
    queue = AsyncRolloutQueue(aclient)
    pushed = await queue.push("alpha", samples("a", 2))
    assert len(pushed.batch_id) == 32  # generated
    status = await queue.status("alpha", pushed.batch_id)
    assert status is not None and status.status == "queued" and status.n_samples == 2
    assert await queue.status("alpha", "never-pushed") is None


def test_same_batch_id_is_queued_once(client: redis.Redis) -> None:
    queue = RolloutQueue(client)
    queue.push("alpha", samples("a", 2), batch_id="retry-me")
    again = queue.push("alpha", samples("a", 2), batch_id="retry-me")
    assert again.duplicate and again.status == "queued"
    assert client.xlen(keys_for("alpha").rollouts) == 1
    assert queue.depth("alpha").queued_samples == 2


def test_invalid_names_are_422(client: redis.Redis) -> None:
    queue = RolloutQueue(client)
    with pytest.raises(InvalidRequestError, match="team name 'a:b'"):
        queue.push("a:b", samples("a", 1))
    with pytest.raises(ValueError, match="batch_id"):
        queue.push("alpha", samples("a", 1), batch_id="has space")


async def test_backpressure_on_queued_then_scored(
    client: redis.Redis, aclient: redis.asyncio.Redis
) -> None:
    limits = QueueLimits(max_queued_samples=4, max_scored_samples=4, retry_after_s=3)
    queue = RolloutQueue(client, limits=limits)
    queue.push("alpha", samples("a", 2), batch_id="b1")
    queue.push("alpha", samples("b", 2), batch_id="b2")
    with pytest.raises(QueueFullError) as full:
        queue.push("alpha", samples("c", 1), batch_id="b3")
    assert full.value.retry_after == 3 and full.value.headers["Retry-After"] == "3"
    assert full.value.stream == "rollouts" and "bound is 4" in full.value.message
    assert queue.status("alpha", "b3") is None  # refused pushes leave nothing behind

    await score_all(RolloutConsumer(aclient, consumer="w", teams=["alpha"]))
    # Scoring freed the rollouts bound, but nobody trained on the 4 scored samples yet.
    with pytest.raises(QueueFullError) as full:
        queue.push("alpha", samples("c", 1), batch_id="b3")
    assert full.value.stream == "scored"
    reader = ScoredBatchReader(client, "alpha")
    reader.ack(reader.pull(max_batches=10, block_ms=50))
    assert queue.push("alpha", samples("c", 1), batch_id="b3").status == "queued"
    # Another team has its own bound.
    assert queue.push("beta", samples("x", 4)).status == "queued"


async def test_byte_bounds_on_queued_then_scored(
    client: redis.Redis, aclient: redis.asyncio.Redis
) -> None:
    """Few samples, many bytes (20 KB of metadata each): the byte bounds refuse what the
    sample bounds would let through, with 429 semantics, and free up as work is done."""
    limits = QueueLimits(max_queued_bytes=50_000, max_scored_bytes=40_000, retry_after_s=3)
    queue = RolloutQueue(client, limits=limits)
    big = "x" * 20_000
    queue.push("alpha", samples("a", 1, blob=big), batch_id="b1")
    queue.push("alpha", samples("b", 1, blob=big), batch_id="b2")
    queued = queue.depth("alpha").queued_bytes
    assert 40_000 < queued < 50_000
    with pytest.raises(QueueFullError) as full:
        queue.push("alpha", samples("c", 1, blob=big), batch_id="b3")
    assert full.value.stream == "rollouts_bytes" and full.value.headers["Retry-After"] == "3"
    assert f"has {queued} bytes of samples waiting" in full.value.message
    assert queue.status("alpha", "b3") is None
    assert queue.push("beta", samples("x", 1, blob=big)).status == "queued"  # its own bound

    await score_all(RolloutConsumer(aclient, consumer="w", teams=["alpha"]))
    assert queue.depth("alpha").queued_bytes == 0
    assert queue.depth("alpha").scored_bytes > 40_000
    with pytest.raises(QueueFullError) as full:
        queue.push("alpha", samples("c", 1, blob=big), batch_id="b3")
    assert full.value.stream == "scored_bytes"
    reader = ScoredBatchReader(client, "alpha")
    reader.ack(reader.pull(max_batches=10, block_ms=50))
    assert queue.depth("alpha").scored_bytes == 0
    assert queue.push("alpha", samples("c", 1, blob=big), batch_id="b3").status == "queued"


def test_trim_never_drops_unconsumed_entries(client: redis.Redis) -> None:
    queue = RolloutQueue(client)
    for i in range(5):
        queue.push("alpha", samples(f"s{i}", 1))
    keys = keys_for("alpha")
    assert queue.trim("alpha") == 0  # no consumer group yet: nothing was consumed
    client.xgroup_create(keys.rollouts, "workers", id="0")
    client.xreadgroup("workers", "w", {keys.rollouts: ">"}, count=2)  # delivered, not acked
    assert queue.trim("alpha") == 0
    first = client.xrange(keys.rollouts)[0][0]
    client.xack(keys.rollouts, "workers", first)
    assert queue.trim("alpha") == 1  # only the acknowledged oldest entry goes
    assert client.xlen(keys.rollouts) == 4


async def test_stalled_worker_and_claimer_write_one_scored_entry(
    client: redis.Redis, aclient: redis.asyncio.Redis
) -> None:
    """Worker A stalls past the idle timeout, B claims and scores; A finishes late: the
    scored stream still holds the batch once."""
    RolloutQueue(client).push("alpha", samples("a", 2), batch_id="slow")
    a = RolloutConsumer(aclient, consumer="A", teams=["alpha"], claim_idle_ms=100)
    b = RolloutConsumer(aclient, consumer="B", teams=["alpha"], claim_idle_ms=100)
    [da] = await a.fetch(count=1, block_ms=50)
    attempts_a = await a.begin(da)
    assert attempts_a == 1 and da.batch is not None
    await _wait_idle(0.2)
    [db] = await b.fetch(count=1, block_ms=50)
    assert db.entry_id == da.entry_id  # claimed via XAUTOCLAIM
    attempts_b = await b.begin(db)
    assert attempts_b == 2 and db.batch is not None
    assert await b.complete(db, await instant_scorer(db.batch), attempts_b) is not None
    assert await a.complete(da, await instant_scorer(da.batch), attempts_a) is None
    assert client.xlen(keys_for("alpha").scored) == 1
    assert client.xpending(keys_for("alpha").rollouts, "workers")["pending"] == 0


async def _wait_idle(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


async def test_failing_batch_goes_to_dead_letter(
    client: redis.Redis, aclient: redis.asyncio.Redis
) -> None:
    queue = RolloutQueue(client)
    queue.push("alpha", samples("p", 1), batch_id="poison")
    c = RolloutConsumer(aclient, consumer="w", teams=["alpha"], claim_idle_ms=100, max_attempts=2)
    [d] = await c.fetch(count=1, block_ms=50)
    attempts = await c.begin(d)
    assert attempts == 1
    assert await c.fail(d, "ValueError: bad sample", attempts) is False
    status = queue.status("alpha", "poison")
    assert status is not None and status.status == "queued" and status.reason
    assert await c.fetch(count=1, block_ms=50) == []  # retried only after the idle timeout
    await _wait_idle(0.2)
    [d] = await c.fetch(count=1, block_ms=50)
    attempts = await c.begin(d)
    assert attempts == 2
    assert await c.fail(d, "ValueError: bad sample", attempts) is True
    status = queue.status("alpha", "poison")
    assert status is not None and status.status == "dead_lettered"
    [dead] = dead_letters(client, "alpha")
    assert dead.batch_id == "poison" and "bad sample" in dead.reason and dead.attempts == 2
    assert '"id":"p-0"' in dead.payload  # the batch itself is kept for a replay
    assert queue.depth("alpha").queued_samples == 0
    assert client.xpending(keys_for("alpha").rollouts, "workers")["pending"] == 0


async def test_transient_failures_do_not_count(
    client: redis.Redis, aclient: redis.asyncio.Redis
) -> None:
    RolloutQueue(client).push("alpha", samples("t", 1), batch_id="t")
    c = RolloutConsumer(aclient, consumer="w", teams=["alpha"], claim_idle_ms=100, max_attempts=1)
    [d] = await c.fetch(count=1, block_ms=50)
    assert await c.begin(d) == 1
    assert await c.fail(d, "GRM down", 1, transient=True) is False
    await _wait_idle(0.2)
    [d] = await c.fetch(count=1, block_ms=50)
    assert await c.begin(d) == 1  # the transient failure gave its attempt back
    status = RolloutQueue(client).status("alpha", "t")
    assert status is not None and status.reason and "GRM down" in status.reason
    assert d.batch is not None
    assert await c.complete(d, await instant_scorer(d.batch), 1) is not None
    status = RolloutQueue(client).status("alpha", "t")
    assert status is not None and status.status == "scored"
    assert status.reason is None  # the earlier attempt's error is not shown on a scored batch


async def test_unreadable_entry_is_dead_lettered(
    client: redis.Redis, aclient: redis.asyncio.Redis
) -> None:
    keys = keys_for("alpha")
    client.sadd("rlmec:teams", "alpha")
    client.xadd(keys.rollouts, {"batch_id": "junk", "batch": "{not json"})
    c = RolloutConsumer(aclient, consumer="w")
    [d] = await c.fetch(count=1, block_ms=50)
    assert d.batch is None and d.error
    assert await c.begin(d) is None
    [dead] = dead_letters(client, "alpha")
    assert dead.batch_id == "junk" and "unreadable" in dead.reason


async def test_reader_resumes_and_drops_duplicates(
    client: redis.Redis, aclient: redis.asyncio.Redis
) -> None:
    queue = RolloutQueue(client)
    for i in range(3):
        queue.push("alpha", samples(f"r{i}", 1), batch_id=f"r{i}")
    await score_all(RolloutConsumer(aclient, consumer="w", teams=["alpha"]))

    first = ScoredBatchReader(client, "alpha", consumer="t0")
    got = first.pull(max_batches=2, block_ms=50)
    assert [d.batch.batch_id for d in got] == ["r0", "r1"]
    # The trainer "crashes" before acking; restarted under the same name it gets them back.
    again = ScoredBatchReader(client, "alpha", consumer="t0")
    got = again.pull(max_batches=5, block_ms=50)
    assert [d.batch.batch_id for d in got] == ["r0", "r1"]
    got += again.pull(max_batches=5, block_ms=50)
    assert [d.batch.batch_id for d in got] == ["r0", "r1", "r2"]
    keys = keys_for("alpha")
    raw = client.xrange(keys.scored)[0][1]
    again.ack(got)
    assert client.xlen(keys.scored) == 0  # acknowledged by every group: trimmed
    # A duplicate scored entry of an acknowledged batch is dropped (and acknowledged).
    client.xadd(keys.scored, raw)
    assert again.pull(max_batches=5, block_ms=50) == []
    assert client.xpending(keys.scored, "trainer")["pending"] == 0


async def test_reader_claims_from_a_dead_trainer(
    client: redis.Redis, aclient: redis.asyncio.Redis
) -> None:
    RolloutQueue(client).push("alpha", samples("c", 1), batch_id="c")
    await score_all(RolloutConsumer(aclient, consumer="w", teams=["alpha"]))
    assert len(ScoredBatchReader(client, "alpha", consumer="t0").pull(1, 50)) == 1
    other = ScoredBatchReader(client, "alpha", consumer="t1", claim_idle_ms=100)
    assert other.pull(1, 50) == []
    await _wait_idle(0.2)
    [d] = other.pull(1, 50)
    assert d.batch.batch_id == "c"


async def test_team_isolation(client: redis.Redis, aclient: redis.asyncio.Redis) -> None:
    queue = RolloutQueue(client)
    queue.push("alpha", samples("a", 1), batch_id="shared-name")
    queue.push("beta", samples("b", 1), batch_id="only-beta")
    await score_all(RolloutConsumer(aclient, consumer="w"))  # every team

    assert queue.status("alpha", "only-beta") is None  # alpha cannot see beta's batch
    alpha = ScoredBatchReader(client, "alpha")
    beta = ScoredBatchReader(client, "beta")
    got_a = alpha.pull(5, 50)
    assert [d.batch.team for d in got_a] == ["alpha"]
    got_b = beta.pull(5, 50)
    assert [d.batch.sample_ids for d in got_b] == [["b-0"]]
    with pytest.raises(PermissionDeniedError, match="belongs to team 'beta'"):
        alpha.ack(got_b)
    assert client.xpending(keys_for("beta").scored, "trainer")["pending"] == 1
    # Acking beta's entry id through alpha's stream cannot touch beta's stream either.
    client.xack(keys_for("alpha").scored, "trainer", got_b[0].entry_id)
    assert client.xpending(keys_for("beta").scored, "trainer")["pending"] == 1
    beta.ack(got_b)
    assert client.xpending(keys_for("beta").scored, "trainer")["pending"] == 0
