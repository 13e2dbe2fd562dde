"""Reward workers as real subprocesses against a real Redis: kill -9 mid-batch, a Redis
restart with AOF, poison batches and crash loops end in the dead-letter stream (issue 5)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from rlmec.loop.redis_server import LocalRedis
from rlmec.shared.queue import RolloutQueue, ScoredBatchReader, dead_letters
from rlmec.shared.schemas import Sample

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
FAKE = "tests.services.reward.test_worker_fakes:fake"


def samples(prefix: str, n: int, **meta: object) -> list[Sample]:
    return [
        Sample(
            id=f"{prefix}-{i}",
            question="What is 1 + 1?",
            reference_solution="1 + 1 = 2",
            prediction="The answer is: 2",
            metadata=dict(meta) or None,
        )
        for i in range(n)
    ]


class Workers:
    """Starts worker subprocesses and always reaps them."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, name: str, *, delay: float = 0.0, extra: tuple[str, ...] = ()
    ) -> subprocess.Popen[bytes]:
        cmd = [
            sys.executable, "-m", "rlmec.services.reward.worker", "--redis-url", self.url,
            "--scorer", FAKE, "--consumer", name, "--claim-idle-ms", "500", "--block-ms", "100",
            "--team", "alpha", *extra,
        ]  # fmt: skip
        env = {**os.environ, "RLMEC_TEST_SCORE_DELAY": str(delay)}
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def workers(redis_url: str) -> Iterator[Workers]:
    w = Workers(redis_url)
    yield w
    w.stop_all()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def push_many(queue: RolloutQueue, prefix: str, n: int, size: int) -> list[str]:
    return [
        queue.push("alpha", samples(f"{prefix}{i}", size), batch_id=f"{prefix}{i}").batch_id
        for i in range(n)
    ]


def states(queue: RolloutQueue, ids: list[str]) -> list[str]:
    return [s.status if (s := queue.status("alpha", b)) else "missing" for b in ids]


def drain(reader: ScoredBatchReader, n_batches: int, timeout: float = 30.0) -> list[str]:
    """Pull (and ack) until ``n_batches`` arrived; returns every sample id the trainer saw."""
    seen: list[str] = []
    batches = 0
    deadline = time.monotonic() + timeout
    while batches < n_batches and time.monotonic() < deadline:
        try:
            got = reader.pull(max_batches=8, block_ms=200)
        except redis.ConnectionError:
            time.sleep(0.1)
            continue
        for d in got:
            seen += [r.id or "" for r in d.batch.results]
        batches += len(got)
        reader.ack(got)
    # Anything extra (a duplicate) would arrive now.
    extra = reader.pull(max_batches=8, block_ms=300)
    seen += [r.id or "" for d in extra for r in d.batch.results]
    return seen


def test_kill_9_mid_batch_loses_nothing(redis_url: str, workers: Workers) -> None:
    client = redis.Redis.from_url(redis_url)
    queue = RolloutQueue(client)
    ids = [queue.push("alpha", samples(f"k{i}", 3), batch_id=f"k{i}").batch_id for i in range(10)]
    a = workers.start("A", delay=0.3)
    wait_for(lambda: states(queue, ids).count("scored") >= 2 and "scoring" in states(queue, ids),
             "worker A to be in the middle of a batch")  # fmt: skip
    os.kill(a.pid, signal.SIGKILL)
    a.wait(timeout=10)
    interrupted = [b for b, s in zip(ids, states(queue, ids), strict=True) if s == "scoring"]
    assert len(interrupted) == 1
    workers.start("B", delay=0.0)
    wait_for(lambda: states(queue, ids) == ["scored"] * 10, "every batch to be scored")

    seen = drain(ScoredBatchReader(client, "alpha"), n_batches=10)
    expected = sorted(f"k{i}-{j}" for i in range(10) for j in range(3))
    assert sorted(seen) == expected  # every sample, exactly once
    status = queue.status("alpha", interrupted[0])
    assert status is not None and status.attempts == 2  # scored again by B after the kill
    client.close()


def test_batches_slower_than_the_claim_window_are_scored_once(
    redis_url: str, workers: Workers
) -> None:
    # Scoring takes 4x the 500 ms claim window: without a heartbeat the other workers claimed
    # each batch, scored it again and finally dead-lettered it as "worker died".
    client = redis.Redis.from_url(redis_url)
    queue = RolloutQueue(client)
    ids = push_many(queue, "slow", n=6, size=2)
    for name in ("H1", "H2", "H3"):
        workers.start(name, delay=2.0, extra=("--max-attempts", "2"))
    wait_for(lambda: states(queue, ids) == ["scored"] * 6, "every slow batch", timeout=60)
    seen = drain(ScoredBatchReader(client, "alpha"), n_batches=6)
    assert sorted(seen) == sorted(f"slow{i}-{j}" for i in range(6) for j in range(2))
    assert all(
        s is not None and s.attempts == 1 for s in map(lambda b: queue.status("alpha", b), ids)
    )
    assert dead_letters(client, "alpha") == []
    client.close()


def test_workers_reconnect_after_redis_restart(workers: Workers) -> None:
    with LocalRedis(appendonly=True) as server:
        workers.url = server.url
        client = redis.Redis.from_url(server.url)
        queue = RolloutQueue(client)
        proc = workers.start("R", delay=0.05)
        ids = [
            queue.push("alpha", samples(f"r{i}", 2), batch_id=f"r{i}").batch_id for i in range(8)
        ]
        wait_for(lambda: states(queue, ids).count("scored") >= 2, "the first batches")
        # AOF on: the streams, groups and pending lists survive. Down longer than the
        # client's own retries (under 1 s), so the worker's reconnect loop is what recovers.
        server.stop()
        time.sleep(2.0)
        server.start()
        ids += [
            queue.push("alpha", samples(f"s{i}", 2), batch_id=f"s{i}").batch_id for i in range(8)
        ]
        wait_for(lambda: states(queue, ids) == ["scored"] * 16, "every batch after the restart")
        assert proc.poll() is None  # the worker survived the outage
        seen = drain(ScoredBatchReader(client, "alpha"), n_batches=16)
        expected = [f"{p}{i}-{j}" for p in "rs" for i in range(8) for j in range(2)]
        assert sorted(seen) == sorted(expected)
        client.close()
        workers.stop_all()
        assert b"redis unreachable" in (proc.stderr.read() if proc.stderr else b"")


def test_poison_batch_is_dead_lettered(redis_url: str, workers: Workers) -> None:
    client = redis.Redis.from_url(redis_url)
    queue = RolloutQueue(client)
    good = [queue.push("alpha", samples(f"g{i}", 2), batch_id=f"g{i}").batch_id for i in range(3)]
    queue.push("alpha", samples("bad", 2, poison=True), batch_id="bad")
    workers.start("P", extra=("--max-attempts", "2", "--claim-idle-ms", "200"))
    wait_for(lambda: states(queue, [*good, "bad"]) == ["scored"] * 3 + ["dead_lettered"],
             "the good batches scored and the poison one dead-lettered")  # fmt: skip
    [dead] = dead_letters(client, "alpha")
    assert dead.batch_id == "bad" and dead.attempts == 2 and "poison sample bad-0" in dead.reason
    status = queue.status("alpha", "bad")
    assert status is not None and status.reason == dead.reason
    client.close()


def test_batch_that_kills_workers_ends_in_dead_letter(redis_url: str, workers: Workers) -> None:
    client = redis.Redis.from_url(redis_url)
    queue = RolloutQueue(client)
    queue.push("alpha", samples("boom", 1, crash=True), batch_id="boom")
    extra = ("--max-attempts", "2", "--claim-idle-ms", "100")
    for name in ("C1", "C2"):
        proc = workers.start(name, extra=extra)
        assert proc.wait(timeout=30) == 17  # the batch killed this worker
        time.sleep(0.15)  # past the idle timeout, so the next worker claims it
    workers.start("C3", extra=extra)
    wait_for(lambda: states(queue, ["boom"]) == ["dead_lettered"], "the crash-loop batch")
    [dead] = dead_letters(client, "alpha")
    assert dead.batch_id == "boom" and "gave up after 2 attempts" in dead.reason
    client.close()


def test_worker_flags_point_the_real_pipeline_at_the_grm(
    redis_url: str, grm_url: str, workers: Workers
) -> None:
    """``--grm-url`` and ``--redis-url`` alone are enough (no RLMEC_REWARD_* in the env): the
    worker scores with the real pipeline against the real GRM service."""
    assert "RLMEC_REWARD_GRM_URLS" not in os.environ
    client = redis.Redis.from_url(redis_url)
    queue = RolloutQueue(client)
    [batch_id] = push_many(queue, "g", 1, 2)
    workers.start("w-grm", extra=("--scorer", "pipeline", "--grm-url", grm_url))
    wait_for(lambda: states(queue, [batch_id]) == ["scored"], "the batch to be scored", 120)
    [delivery] = ScoredBatchReader(client, "alpha").pull(max_batches=1, block_ms=500)
    assert [r.id for r in delivery.batch.results] == ["g0-0", "g0-1"]
    assert all(r.correct for r in delivery.batch.results)  # "2" matches "1 + 1 = 2"
    client.close()
