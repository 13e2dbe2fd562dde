"""The reward service, its worker and the HTTP pull path, unchanged, on a real Redis Cluster
(three primaries with a replica each): push → score (real pipeline, real GRM) → pull → ack,
then the same after the primary holding the team's slot is killed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from rlmec.loop.redis_server import LocalRedisCluster
from rlmec.services.reward.app import create_app
from rlmec.services.reward.worker import RewardWorker, WorkerConfig, pipeline_scorer
from rlmec.shared.queue import keys_for
from rlmec.shared.redis_client import connect_async
from tests.servers import serve_app
from tests.services.reward.conftest import CORRECT, WRONG, auth, reward_settings, sample

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def cluster() -> Iterator[LocalRedisCluster]:
    with LocalRedisCluster(masters=3, replicas=1) as c:
        yield c


def _push(c: httpx.Client, batch_id: str) -> None:
    body = {"samples": [sample(CORRECT, id="c"), sample(WRONG, id="w")], "batch_id": batch_id}
    resp = c.post("/v1/rollouts", headers=auth("alpha"), json=body)
    assert resp.status_code == 202, resp.text


def _scored(c: httpx.Client, batch_id: str) -> bool:
    resp = c.get(f"/v1/rollouts/{batch_id}", headers=auth("alpha"))
    return resp.status_code == 200 and resp.json()["status"] == "scored"


async def _score(settings: object, url: str, c: httpx.Client, ids: list[str]) -> None:
    """A real reward worker over the cluster until ``ids`` are scored. No team list: it finds
    the teams in the registry, and reads their streams one slot at a time."""
    client = connect_async(url, socket_connect_timeout=2.0, socket_timeout=10.0)
    stop = asyncio.Event()
    async with pipeline_scorer(settings) as scorer:  # type: ignore[arg-type]
        worker = RewardWorker(client, scorer, WorkerConfig(block_ms=100))
        task = asyncio.create_task(worker.run(stop))
        deadline = time.monotonic() + 120
        for batch_id in ids:
            while not await asyncio.to_thread(_scored, c, batch_id):
                assert time.monotonic() < deadline, f"{batch_id} was not scored in 120 s"
                await asyncio.sleep(0.1)
        stop.set()
        await task
    await client.aclose()


def _pull_ack(c: httpx.Client) -> list[str]:
    resp = c.post("/v1/scored/pull", headers=auth("alpha"), json={"max_batches": 8})
    assert resp.status_code == 200, resp.text
    got = resp.json()["deliveries"]
    ids = [d["entry_id"] for d in got]
    acked = c.post("/v1/scored/ack", headers=auth("alpha"), json={"entry_ids": ids})
    assert acked.json() == {"acked": ids, "unknown": []}
    return [d["batch"]["batch_id"] for d in got]


async def test_the_platform_on_a_cluster_through_a_failover(
    grm_url: str, cluster: LocalRedisCluster
) -> None:
    settings = reward_settings(grm_url, cluster.url)
    with serve_app(create_app(settings)) as base, httpx.Client(base_url=base, timeout=60) as c:
        assert c.get("/ready").status_code == 200
        _push(c, "one")
        await _score(settings, cluster.url, c, ["one"])
        assert _pull_ack(c) == ["one"]
        # Cached now: the same samples again are answered from the {cache} slot.
        again = c.post(
            "/v1/token-rewards", headers=auth("alpha"), json={"samples": [sample(CORRECT)]}
        )
        assert again.status_code == 200 and again.json()["results"][0]["cached"] is True

        _push(c, "two")
        primary = cluster.primary_of(keys_for("alpha").rollouts)
        assert cluster.call(primary, "WAIT", "1", "5000") == 1
        cluster.kill(primary)
        # The service's clients follow the new slot map: same process, no restart.
        await _score(settings, cluster.url, c, ["two"])
        _push(c, "three")
        await _score(settings, cluster.url, c, ["three"])
        assert _pull_ack(c) == ["two", "three"]
        status = c.get("/v1/rollouts/one", headers=auth("alpha")).json()
        assert status["consumed"] is True
