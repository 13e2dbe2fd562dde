"""``/v1/rollouts`` on a real reward service (uvicorn on loopback, real Redis): push, status,
team isolation, backpressure as 429 + Retry-After; and the whole online loop once with the real
pipeline and the real GRM service (tiny model): push -> worker -> trainer reader."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest
import redis
import redis.asyncio

from rlmec.loop.redis_server import free_port
from rlmec.services.reward.app import create_app
from rlmec.services.reward.settings import TeamConfig
from rlmec.services.reward.teams import hash_key
from rlmec.services.reward.worker import RewardWorker, WorkerConfig, pipeline_scorer
from rlmec.shared.queue import ScoredBatchReader
from tests.servers import serve_app
from tests.services.reward.conftest import (
    CORRECT,
    WRONG,
    auth,
    reward_settings,
    sample,
    teams,
)

pytestmark = pytest.mark.integration

SMALL = "key-small-0123456789"
BYTES = "key-bytes-0123456789"


@pytest.fixture(scope="module")
def service(redis_server: object) -> Iterator[str]:
    """The reward service with a GRM URL where nothing listens: pushes never call the GRM.
    Team 'small' may queue 4 samples and keep 4 scored ones unconsumed; team 'bytes' may queue
    100 KB."""
    small = TeamConfig(
        name="small", key_sha256=[hash_key(SMALL)], max_queued_samples=4, max_scored_samples=4
    )
    big = TeamConfig(name="bytes", key_sha256=[hash_key(BYTES)], max_queued_bytes=100_000)
    url = redis_server.url
    settings = reward_settings(f"http://127.0.0.1:{free_port()}", url, teams=[*teams(), small, big])
    with serve_app(create_app(settings)) as base:
        yield base


@pytest.fixture
def client(service: str, redis_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service, timeout=30) as c:
        yield c


def push(
    client: httpx.Client, headers: dict[str, str], n: int = 1, **extra: object
) -> httpx.Response:
    body = {"samples": [sample(CORRECT, id=f"s{i}") for i in range(n)], **extra}
    return client.post("/v1/rollouts", headers=headers, json=body)


def test_push_then_status(client: httpx.Client) -> None:
    resp = push(client, auth("alpha"), 2, batch_id="run1-step7")
    assert resp.status_code == 202
    assert resp.json() == {
        "batch_id": "run1-step7", "team": "alpha", "status": "queued", "n_samples": 2,
        "duplicate": False,
    }  # fmt: skip
    status = client.get("/v1/rollouts/run1-step7", headers=auth("alpha")).json()
    assert status["status"] == "queued" and status["n_samples"] == 2 and not status["consumed"]
    again = push(client, auth("alpha"), 2, batch_id="run1-step7")
    assert again.status_code == 202 and again.json()["duplicate"] is True


def test_generated_batch_id(client: httpx.Client) -> None:
    batch_id = push(client, auth("alpha")).json()["batch_id"]
    assert client.get(f"/v1/rollouts/{batch_id}", headers=auth("alpha")).status_code == 200


def test_other_teams_batch_is_404(client: httpx.Client) -> None:
    assert push(client, auth("alpha"), batch_id="mine").status_code == 202
    resp = client.get("/v1/rollouts/mine", headers=auth("beta"))
    assert resp.status_code == 404
    error = resp.json()["error"]
    assert error["type"] == "not_found" and "unknown to team 'beta'" in error["message"]
    assert client.get("/v1/rollouts/never", headers=auth("alpha")).status_code == 404


def test_bad_requests(client: httpx.Client) -> None:
    assert client.get("/v1/rollouts/x", headers={}).status_code == 401
    assert push(client, {}).status_code == 401
    resp = client.get("/v1/rollouts/bad%20id", headers=auth("alpha"))
    assert resp.status_code == 422 and resp.json()["error"]["param"] == "batch_id"
    resp = push(client, auth("alpha"), batch_id="white space")
    assert resp.status_code == 422 and "batch_id" in resp.json()["error"]["param"]
    resp = push(client, auth("alpha"), policy_tokenizer="nope")
    assert resp.status_code == 422 and "not registered" in resp.json()["error"]["message"]
    resp = client.post("/v1/rollouts", headers=auth("alpha"), json={"samples": []})
    assert resp.status_code == 422
    resp = push(client, auth("alpha"), surprise=1)
    assert resp.status_code == 422 and resp.json()["error"]["param"] == "surprise"


def test_full_queue_is_429_with_retry_after(client: httpx.Client, redis_url: str) -> None:
    small = {"Authorization": f"Bearer {SMALL}"}
    assert push(client, small, 3).status_code == 202
    resp = push(client, small, 2, batch_id="too-much")
    assert resp.status_code == 429
    assert int(resp.headers["Retry-After"]) >= 1
    error = resp.json()["error"]
    assert error["code"] == "queue_full" and "bound is 4" in error["message"]
    assert client.get("/v1/rollouts/too-much", headers=small).status_code == 404  # not queued
    assert push(client, small, 1).status_code == 202  # 3 + 1 fits the bound
    assert push(client, auth("alpha"), 2).status_code == 202  # other teams are unaffected


def test_a_team_past_its_byte_bound_gets_429(client: httpx.Client) -> None:
    """Two samples with 40 KB of metadata each fit; a third does not, though 3 samples are far
    below the sample bound: the bytes are what would fill the shared Redis."""
    headers = {"Authorization": f"Bearer {BYTES}"}
    blob = {"blob": "x" * 40_000}
    for i in range(2):
        body = {"samples": [sample(CORRECT, id=f"s{i}", metadata=blob)]}
        assert client.post("/v1/rollouts", headers=headers, json=body).status_code == 202
    body = {"samples": [sample(CORRECT, id="s2", metadata=blob)], "batch_id": "over"}
    resp = client.post("/v1/rollouts", headers=headers, json=body)
    assert resp.status_code == 429 and int(resp.headers["Retry-After"]) >= 1
    error = resp.json()["error"]
    assert error["code"] == "queue_full" and "bytes of samples" in error["message"]
    assert client.get("/v1/rollouts/over", headers=headers).status_code == 404
    assert push(client, auth("alpha"), 2).status_code == 202  # other teams are unaffected


async def test_online_loop_with_real_pipeline(grm_url: str, redis_url: str) -> None:
    """push (HTTP) -> reward worker (real pipeline, real GRM) -> trainer reader -> ack."""
    settings = reward_settings(grm_url, redis_url)
    with serve_app(create_app(settings)) as base, httpx.Client(base_url=base, timeout=60) as c:
        body = {"samples": [sample(CORRECT, id="c"), sample(WRONG, id="w")], "batch_id": "e2e"}
        assert c.post("/v1/rollouts", headers=auth("alpha"), json=body).status_code == 202
        client = redis.asyncio.Redis.from_url(redis_url)
        stop = asyncio.Event()
        async with pipeline_scorer(settings) as scorer:
            worker = RewardWorker(client, scorer, WorkerConfig(teams=["alpha"], block_ms=100))
            task = asyncio.create_task(worker.run(stop))
            deadline = time.monotonic() + 120
            while (await asyncio.to_thread(_status, c)) != "scored":
                assert time.monotonic() < deadline, "the batch was not scored in 120 s"
                await asyncio.sleep(0.1)
            stop.set()
            await task
        await client.aclose()
    assert worker.stats.scored == 1
    sync = redis.Redis.from_url(redis_url)
    reader = ScoredBatchReader(sync, "alpha")
    [delivery] = reader.pull(max_batches=4, block_ms=500)
    results = {r.id: r for r in delivery.batch.results}
    assert results["c"].correct and results["c"].status == "scored"
    assert results["c"].rewards is not None and len(results["c"].rewards.values) > 1
    assert results["w"].correct is False  # scored or unscored (tiny random GRM), never lost
    reader.ack([delivery])
    assert reader.pull(max_batches=4, block_ms=100) == []
    sync.close()


def _status(c: httpx.Client, batch_id: str = "e2e") -> str:
    return str(c.get(f"/v1/rollouts/{batch_id}", headers=auth("alpha")).json().get("status"))


async def _score_all(settings: object, redis_url: str, c: httpx.Client, ids: list[str]) -> None:
    """Run a real reward worker until the batches ``ids`` of alpha are scored."""
    client = redis.asyncio.Redis.from_url(redis_url)
    stop = asyncio.Event()
    async with pipeline_scorer(settings) as scorer:  # type: ignore[arg-type]
        worker = RewardWorker(client, scorer, WorkerConfig(teams=["alpha"], block_ms=100))
        task = asyncio.create_task(worker.run(stop))
        deadline = time.monotonic() + 120
        for batch_id in ids:
            while (await asyncio.to_thread(_status, c, batch_id)) != "scored":
                assert time.monotonic() < deadline, f"{batch_id} was not scored in 120 s"
                await asyncio.sleep(0.1)
        stop.set()
        await task
    await client.aclose()


async def test_scored_batches_over_http(grm_url: str, redis_url: str) -> None:
    """A trainer outside the cluster: result by batch id, pull, ack, redelivery of what it
    never acknowledged; another team can neither read, pull nor acknowledge them."""
    settings = reward_settings(grm_url, redis_url)
    with serve_app(create_app(settings)) as base, httpx.Client(base_url=base, timeout=60) as c:
        for batch_id in ("h1", "h2"):
            body = {"samples": [sample(CORRECT, id="c"), sample(WRONG, id="w")],
                    "batch_id": batch_id}  # fmt: skip
            assert c.post("/v1/rollouts", headers=auth("alpha"), json=body).status_code == 202
        pending = c.get("/v1/rollouts/h1/result", headers=auth("alpha"))
        assert pending.status_code == 404 and "it is queued" in pending.json()["error"]["message"]
        await _score_all(settings, redis_url, c, ["h1", "h2"])

        result = c.get("/v1/rollouts/h1/result", headers=auth("alpha"))
        assert result.status_code == 200
        assert [r["id"] for r in result.json()["results"]] == ["c", "w"]
        assert c.get("/v1/rollouts/h1/result", headers=auth("beta")).status_code == 404

        def pull(team: str, **body: object) -> list[dict[str, object]]:
            resp = c.post("/v1/scored/pull", headers=auth(team), json=body)
            assert resp.status_code == 200, resp.text
            return list(resp.json()["deliveries"])

        assert pull("beta", max_batches=8) == []  # beta's stream is empty
        got = pull("alpha", max_batches=1, consumer="t0")
        assert [d["batch"]["batch_id"] for d in got] == ["h1"]
        h1 = str(got[0]["entry_id"])
        stolen = c.post("/v1/scored/ack", headers=auth("beta"), json={"entry_ids": [h1]})
        assert stolen.json() == {"acked": [], "unknown": [h1]}
        # Not acknowledged: handed out again once idle longer than redeliver_after_s.
        time.sleep(1.1)
        again = pull("alpha", max_batches=8, consumer="t1", redeliver_after_s=1)
        assert sorted(d["batch"]["batch_id"] for d in again) == ["h1", "h2"]
        ids = [str(d["entry_id"]) for d in again]
        acked = c.post("/v1/scored/ack", headers=auth("alpha"), json={"entry_ids": [*ids, "1-1"]})
        assert acked.json() == {"acked": ids, "unknown": ["1-1"]}
        assert pull("alpha", max_batches=8, redeliver_after_s=1) == []
        status = c.get("/v1/rollouts/h1", headers=auth("alpha")).json()
        assert status["consumed"] is True and status["reason"] is None
        # A long poll outlasting the Redis client's 5 s socket timeout is an empty answer, not
        # a 503 (found by the fuzzer).
        assert pull("alpha", wait_ms=5500) == []
        bad = c.post("/v1/scored/pull", headers=auth("alpha"), json={"max_batches": 0})
        assert bad.status_code == 422 and bad.json()["error"]["param"] == "max_batches"
