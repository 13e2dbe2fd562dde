"""The queue, the cache and the policy record on a real Redis Cluster (valkey, three primaries
with a replica each, on loopback): teams land on different primaries, every script stays in
one slot, and a killed primary's replica takes over without losing what was replicated."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from rlmec.loop.redis_server import LocalRedisCluster
from rlmec.services.reward.cache import RewardCache
from rlmec.services.reward.worker import instant_scorer
from rlmec.shared import redis_acl
from rlmec.shared.policy_version import PolicyVersion, read_version, write_version
from rlmec.shared.queue import RolloutConsumer, RolloutQueue, ScoredBatchReader, keys_for
from rlmec.shared.redis_client import cluster_seeds, cluster_url, connect, connect_async, is_cluster
from rlmec.shared.schemas import ScoredSample
from tests.shared.test_queue import samples, score_all
from tests.shared.test_redis_acl import rlmec

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster() -> Iterator[LocalRedisCluster]:
    with LocalRedisCluster(masters=3, replicas=1) as c:
        yield c


@pytest.fixture
def teams(cluster: LocalRedisCluster) -> list[str]:
    """Three team names whose keys live on three different primaries."""
    chosen: dict[int, str] = {}
    for i in range(200):
        port = cluster.primary_of(keys_for(f"t{i}").rollouts).port
        chosen.setdefault(port, f"t{i}")
        if len(chosen) == 3:
            return list(chosen.values())
    raise AssertionError("no three teams on three primaries")


@pytest.fixture
async def clients(cluster: LocalRedisCluster) -> AsyncIterator[tuple[object, object]]:
    sync, aio = connect(cluster.url), connect_async(cluster.url)
    yield sync, aio
    sync.close()
    await aio.aclose()


def test_urls_pick_the_client() -> None:
    assert cluster_url("redis+cluster://h:7000/0") == "redis://h:7000/0"
    assert cluster_url("rediss+cluster://h:7000") == "rediss://h:7000"
    assert cluster_url("redis://h:6379/0") is None
    url = "redis+cluster://u:p@h1:7000,h2:7001,[::1]:7002/0"
    assert cluster_url(url) == "redis://u:p@h1:7000/0"
    assert cluster_seeds(url) == [("h1", 7000), ("h2", 7001), ("::1", 7002)]
    assert not is_cluster(connect("redis://127.0.0.1:1/0"))
    assert is_cluster(connect_async("redis+cluster://127.0.0.1:1"))  # lazy: no connection yet


async def test_push_score_pull_ack_across_primaries(
    teams: list[str], clients: tuple[object, object]
) -> None:
    sync, aio = clients
    queue = RolloutQueue(sync)
    for team in teams:
        assert queue.push(team, samples(team, 2), batch_id=f"{team}-1").status == "queued"
        assert queue.push(team, samples(team, 2), batch_id=f"{team}-1").duplicate
    # teams=None: the worker finds the teams in the registry and reads each stream in turn
    # (one XREADGROUP over three slots would be refused with CROSSSLOT), `count` from each.
    consumer = RolloutConsumer(aio, consumer="w-0")
    first = await consumer.fetch(count=1, block_ms=50)
    assert sorted(d.team for d in first) == sorted(teams)
    for d in first:
        attempts = await consumer.begin(d)
        assert attempts is not None and d.batch is not None
        assert await consumer.complete(d, await instant_scorer(d.batch), attempts) is not None
    assert await score_all(consumer) == 0
    for team in teams:
        reader = ScoredBatchReader(sync, team, claim_idle_ms=60_000)
        [got] = reader.pull(max_batches=5, block_ms=100)
        assert got.batch.batch_id == f"{team}-1" and got.batch.sample_ids == [
            f"{team}-0", f"{team}-1"
        ]  # fmt: skip
        reader.ack([got])
        status = queue.status(team, f"{team}-1")
        assert status is not None and status.consumed
        assert queue.depth(team).scored_samples == 0


async def test_cache_and_policy_record(teams: list[str], clients: tuple[object, object]) -> None:
    sync, aio = clients
    cache = RewardCache(aio, prefix="rlmec:reward", ttl_s=100, max_entries=2)
    result = ScoredSample(status="scored", question="q", prediction="4", correct=True,
                          predicted_answer="4", reference_answer="4")  # fmt: skip
    keys = [f"rlmec:reward:{{cache}}:{i:064x}" for i in range(3)]
    await cache.put_many([(k, result) for k in keys])  # one script, one slot, three entries
    got = await cache.get_many(keys)
    assert got[0] is None and [r.prediction for r in got[1:] if r] == ["4", "4"]
    assert await cache.size() == 2
    record = PolicyVersion(version=3, path="/p/v000003", step=12, published_at=1.0)
    write_version(sync, teams[0], record)
    assert read_version(sync, teams[0]) == record
    assert read_version(sync, teams[1]) is None


@pytest.mark.slow
async def test_a_primary_failover_loses_nothing_replicated(
    cluster: LocalRedisCluster, teams: list[str], clients: tuple[object, object]
) -> None:
    """Kill the primary of a team's slot mid-stream: its replica takes over, the same clients
    follow the new slot map, and the batches pushed and scored before stay exactly once."""
    sync, aio = clients
    team = teams[0]
    queue = RolloutQueue(sync)
    consumer = RolloutConsumer(aio, consumer="w-0", teams=[team])
    queue.push(team, samples("a", 2), batch_id="before")
    assert await score_all(consumer) == 1
    queue.push(team, samples("b", 2), batch_id="queued")
    primary = cluster.primary_of(keys_for(team).rollouts)
    # Replication is asynchronous: WAIT until the replica has every write before the crash
    # (what a deployment gets from `min-replicas-to-write` or the platform's own WAIT).
    assert cluster.call(primary, "WAIT", "1", "5000") == 1
    cluster.kill(primary)
    assert cluster.primary_of(keys_for(team).rollouts).port != primary.port

    assert await score_all(consumer) == 1  # the batch queued before the crash
    assert queue.push(team, samples("c", 2), batch_id="after").status == "queued"
    assert queue.push(team, samples("a", 2), batch_id="before").duplicate  # dedup survived
    assert await score_all(consumer) == 1
    reader = ScoredBatchReader(sync, team, claim_idle_ms=60_000)
    got = reader.pull(max_batches=10, block_ms=200)
    assert [d.batch.batch_id for d in got] == ["before", "queued", "after"]
    reader.ack(got)
    assert reader.pull(max_batches=10, block_ms=100) == []
    assert queue.depth(team).scored_samples == 0


def test_per_team_users_on_every_node(
    cluster: LocalRedisCluster, teams: list[str], tmp_path: Path
) -> None:
    """`rlmec reward redis-users --apply` on a cluster sets the users on every node (ACLs are
    per node); a trainer's cluster client then reads its own team's batches on whichever
    primary holds them, and another team's answer NOPERM."""
    alpha, beta = teams[0], teams[1]
    (tmp_path / "teams.yaml").write_text(f"teams:\n  - name: {alpha}\n  - name: {beta}\n")
    secrets = tmp_path / "secrets"
    done = rlmec(
        "reward", "redis-users", "--teams-file", str(tmp_path / "teams.yaml"),
        "--secrets-dir", str(secrets), "--apply", "--redis-url", cluster.url,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "the cluster at" in done.stdout

    def user(name: str) -> Any:
        return connect(cluster.url, username=name, password=(secrets / name).read_text().strip())

    service, trainer = user(redis_acl.SERVICE_USER), user(redis_acl.trainer_user(alpha))
    try:
        queue = RolloutQueue(service)
        for team in (alpha, beta):
            queue.push(team, samples(team, 1), batch_id=f"{team}-1")
        asyncio.run(_score_as(cluster.url, secrets))
        [got] = ScoredBatchReader(trainer, alpha).pull(max_batches=4, block_ms=200)
        assert got.batch.batch_id == f"{alpha}-1"
        with pytest.raises(redis.exceptions.NoPermissionError):
            ScoredBatchReader(trainer, beta)
        with pytest.raises(redis.exceptions.NoPermissionError):
            trainer.xrange(keys_for(beta).scored)
    finally:
        service.close()
        trainer.close()


async def _score_as(url: str, secrets: Path) -> None:
    name = redis_acl.SERVICE_USER
    client = connect_async(url, username=name, password=(secrets / name).read_text().strip())
    try:
        assert await score_all(RolloutConsumer(client, consumer="w-0")) == 2
    finally:
        await client.aclose()
