"""The fault matrix of the reward service against the real GRM (tiny model), real Redis and
real HTTP: a slow answer check stalls nobody, a busy or failing GRM stays transient (429/503
with Retry-After, never per-sample errors, quota refunded), a 413 sample is not amplified, a
client that disconnects frees its slot at once, and a worker retries transient failures."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi import FastAPI, Request, Response

from rlmec.loop.redis_server import LocalRedis
from rlmec.services.reward.app import create_app
from rlmec.services.reward.worker import RewardWorker, WorkerConfig, pipeline_scorer
from rlmec.shared.queue import RolloutQueue, ScoredBatch, keys_for
from rlmec.shared.schemas import Sample
from tests.servers import serve_app
from tests.services.reward.conftest import CORRECT, WRONG, auth, reward_settings, sample

pytestmark = pytest.mark.integration

# sympy needs seconds to parse this binomial; no pre-screen catches it.
SLOW = "So the total is huge.\nThe answer is: $\\binom{10000000}{5000000}$"


def slow(i: int) -> str:
    """The i-th of many different slow answers (identical samples are checked once)."""
    return SLOW.replace("10000000", str(10_000_000 + i))


@dataclass
class Faults:
    """What the GRM proxy does to the next calls: answer ``status`` instead of forwarding,
    or wait ``delay`` seconds first. ``calls`` counts requests per path."""

    status: int | None = None
    delay: float = 0.0
    calls: dict[str, int] = field(default_factory=dict)


def faulty_proxy(upstream: str, faults: Faults) -> FastAPI:
    app = FastAPI()
    client = httpx.AsyncClient(base_url=upstream, timeout=60)

    @app.api_route("/{path:path}", methods=["GET", "POST"])
    async def forward(path: str, request: Request) -> Response:
        faults.calls[path] = faults.calls.get(path, 0) + 1
        content = await request.body()
        if faults.delay:
            await asyncio.sleep(faults.delay)
        if faults.status is not None and path != "v1/models":
            body = b'{"error": {"type": "rate_limited", "message": "injected fault"}}'
            headers = {"Retry-After": "2", "content-type": "application/json"}
            return Response(body, status_code=faults.status, headers=headers)
        upstream_response = await client.request(
            request.method, "/" + path, content=content,
            headers={"content-type": "application/json"},
        )  # fmt: skip
        return Response(upstream_response.content, upstream_response.status_code,
                        media_type="application/json")  # fmt: skip

    return app


@pytest.fixture(scope="module")
def faults() -> Faults:
    return Faults()


@pytest.fixture(scope="module")
def proxy_url(grm_url: str, faults: Faults) -> Iterator[str]:
    with serve_app(faulty_proxy(grm_url, faults)) as url:
        yield url


@pytest.fixture
def service(
    proxy_url: str, faults: Faults, redis_server: LocalRedis, redis_url: str
) -> Iterator[str]:
    """The reward service behind the fault proxy, with a 2 s answer-check budget."""
    faults.status, faults.delay = None, 0.0
    faults.calls.clear()
    settings = reward_settings(proxy_url, redis_server.url, answer_check_timeout_s=2.0)
    with serve_app(create_app(settings)) as url:
        yield url


def post(url: str, team: str, samples: list[dict[str, Any]], timeout: float = 60) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/token-rewards", json={"samples": samples}, headers=auth(team), timeout=timeout
    )


def test_a_slow_answer_check_stalls_no_other_team(service: str) -> None:
    # Before: sympy ran in a thread holding the GIL; /health stopped for minutes.
    outcome: dict[str, httpx.Response] = {}
    slow = threading.Thread(
        target=lambda: outcome.update(r=post(service, "alpha", [sample(SLOW), sample(CORRECT)]))
    )
    slow.start()
    time.sleep(0.5)  # the slow check is running now
    for probe in range(3):
        assert httpx.get(f"{service}/health", timeout=30).status_code == 200
        other = post(service, "beta", [sample(CORRECT)], timeout=30)
        assert other.status_code == 200 and other.json()["results"][0]["status"] == "scored"
        if probe == 0:
            # An order, not a duration: another team was answered while the slow check still
            # ran (it ends at its 2 s budget); the unbounded check blocked it for minutes.
            assert slow.is_alive() and "r" not in outcome
    slow.join(timeout=60)
    results = outcome["r"].json()["results"]
    assert results[0]["status"] == "unscored"
    assert results[0]["reason"] == "answer_check_over_budget"
    assert "longer than 2 s" in results[0]["message"]
    assert results[1]["status"] == "scored" and results[1]["correct"]


@pytest.mark.parametrize(("status", "code"), [(429, "grm_saturated"), (503, "grm_unavailable")])
def test_a_busy_grm_is_transient_and_refunds_the_quota(
    service: str, faults: Faults, status: int, code: str
) -> None:
    faults.status = status
    # Team beta may score 3 samples a minute: a transient failure must not spend them.
    resp = post(service, "beta", [sample(WRONG), sample(CORRECT), sample(WRONG)])
    assert resp.status_code == status, resp.text
    assert resp.headers["Retry-After"] == "2"
    assert resp.json()["error"]["code"] == code
    # One rewrite call and one score call, never one call per sample.
    assert faults.calls.get("v1/score", 0) + faults.calls.get("v1/rewrite", 0) <= 2
    faults.status = None
    again = post(service, "beta", [sample(WRONG), sample(CORRECT), sample(WRONG)])
    assert again.status_code == 200, again.text
    assert not any(r["cached"] for r in again.json()["results"])  # nothing cached in the 503


def test_a_batch_that_can_never_fit_the_rate_limit_is_413(service: str) -> None:
    resp = post(service, "beta", [sample(CORRECT)] * 4)
    assert resp.status_code == 413
    error = resp.json()["error"]
    assert error["code"] == "batch_over_rate_limit" and "at most 3" in error["message"]


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity", "0.5"])
def test_non_finite_or_positive_behaviour_logprobs_are_422(service: str, bad: str) -> None:
    body = (
        '{"samples": [{"question": "q", "reference_solution": "#### 1", "prediction": "1", '
        f'"behaviour_logprobs": [-0.5, {bad}]}}]}}'
    )
    resp = httpx.post(f"{service}/v1/token-rewards", content=body, headers={
        **auth("alpha"), "content-type": "application/json"})  # fmt: skip
    assert resp.status_code == 422
    assert resp.json()["error"]["param"] == "samples.0.behaviour_logprobs.1"


def test_a_client_that_disconnects_frees_its_slot_at_once(
    service: str, faults: Faults, redis_url: str
) -> None:
    # Team gamma has one concurrency slot; the abandoned request held it for ~13 s before.
    faults.delay = 5.0
    with pytest.raises(httpx.ReadTimeout):
        post(service, "gamma", [sample(WRONG)], timeout=0.5)
    faults.delay = 0.0
    slots = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 2.0
    while slots.zcard("rlmec:reward:inflight:gamma") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert slots.zcard("rlmec:reward:inflight:gamma") == 0
    assert post(service, "gamma", [sample(CORRECT)]).status_code == 200


def test_a_worker_retries_a_busy_grm_instead_of_losing_samples(
    proxy_url: str, faults: Faults, redis_server: LocalRedis, redis_url: str, tmp_path: Path
) -> None:
    # Before: the GRM's 429 became grm_error inside a "scored" batch (63 of 64 samples lost).
    faults.status, faults.delay = 429, 0.0
    client = redis.Redis.from_url(redis_url)
    queue = RolloutQueue(client)
    batch = [Sample(id=f"s{i}", **sample(WRONG if i % 2 else CORRECT)) for i in range(4)]
    queue.push("alpha", batch, batch_id="busy")
    settings = reward_settings(proxy_url, redis_server.url)
    config = WorkerConfig(teams=["alpha"], claim_idle_ms=300, block_ms=100, max_attempts=1)

    async def run() -> None:
        stop = asyncio.Event()
        async with pipeline_scorer(settings) as scorer:
            worker = RewardWorker(redis.asyncio.Redis.from_url(redis_url), scorer, config)
            task = asyncio.create_task(worker.run(stop))
            for _ in range(100):  # the batch fails transiently, again and again
                await asyncio.sleep(0.05)
                if worker.stats.failed >= 2:
                    break
            status = queue.status("alpha", "busy")
            assert status is not None and status.status in ("queued", "scoring")
            faults.status = None  # the GRM has capacity again
            for _ in range(200):
                await asyncio.sleep(0.05)
                if worker.stats.scored:
                    break
            stop.set()
            await task
            assert worker.stats.dead_lettered == 0 and worker.stats.scored == 1

    asyncio.run(run())
    status = queue.status("alpha", "busy")
    assert status is not None and status.status == "scored"
    entries = client.xrange(keys_for("alpha").scored)
    assert len(entries) == 1
    scored = ScoredBatch.model_validate_json(entries[0][1][b"batch"])
    # The tiny random GRM cannot rewrite: wrong samples end rewrite_incorrect/out_of_range,
    # but none is a GRM error and every correct one is scored.
    assert len(scored.results) == 4 and not any(r.reason == "grm_error" for r in scored.results)
    assert [r.status for r in scored.results[::2]] == ["scored", "scored"]
    client.close()


# --- two-team floods (issue 26): the noisy team is throttled, the quiet one keeps working ----


async def _quiet_team_works(
    url: str, during: Any, *, within_s: float, team: str = "alpha"
) -> list[int | str]:
    """While ``during`` (a noisy team's flood) runs, ``team``'s usage and scoring calls:
    their status codes, or the error of a call not answered within ``within_s``."""
    codes: list[int | str] = []

    async def call(method: str, path: str, **kwargs: Any) -> int | str:
        try:
            return (await quiet.request(method, path, **kwargs)).status_code
        except httpx.HTTPError as exc:
            return repr(exc)

    # A connection per call: under the flood, reusing a kept-alive connection sometimes met a
    # server-side close (ReadError) that has nothing to do with the bounds tested here.
    fresh = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, headers=auth(team), timeout=within_s,
                                 limits=fresh) as quiet:  # fmt: skip
        flood = asyncio.create_task(during)
        await asyncio.sleep(1.0)  # the flood is in place
        for _ in range(5):
            codes.append(await call("GET", "/v1/usage"))
            codes.append(
                await call("POST", "/v1/token-rewards", json={"samples": [sample(CORRECT)]})
            )
        flood.cancel()
        await asyncio.gather(flood, return_exceptions=True)
    return codes


def test_one_teams_long_polls_leave_another_team_working(service: str) -> None:
    """Item 1: 300 concurrent long polls from one team used to take every connection of the
    service's Redis pool: the other team got 503 on 5/5 /v1/usage and /v1/token-rewards."""
    noisy: list[int] = []

    async def flood() -> None:
        limits = httpx.Limits(max_connections=400)
        async with httpx.AsyncClient(base_url=service, headers=auth("gamma"), timeout=60,
                                     limits=limits) as client:  # fmt: skip

            async def pull(i: int) -> None:
                body = {"wait_ms": 10_000, "consumer": f"c{i}"}
                noisy.append((await client.post("/v1/scored/pull", json=body)).status_code)

            await asyncio.gather(*(pull(i) for i in range(300)))

    codes = asyncio.run(_quiet_team_works(service, flood(), within_s=20))
    assert codes == [200] * 10
    assert noisy.count(429) >= 250  # past its cap of waiting pulls, refused at once
    assert set(noisy) <= {429}  # the ones let in were still waiting when the flood ended


def test_one_teams_slow_answers_do_not_queue_another_teams_checks(service: str) -> None:
    """Item 3: the answer-check pool was one FIFO for every team. Team A's 30 checks that each
    run to the 2 s budget held 2 workers for ~30 s, and team B's one sample waited behind all
    of them. With a lane per team, B waits for at most one check (a worker to free)."""

    async def main() -> tuple[float, str]:
        async with httpx.AsyncClient(base_url=service, timeout=120) as client:
            noisy = asyncio.create_task(client.post(
                "/v1/token-rewards", headers=auth("alpha"),
                json={"samples": [sample(slow(i)) for i in range(30)]},
            ))  # fmt: skip
            await asyncio.sleep(1.5)  # A's checks fill the pool
            started = time.monotonic()
            quiet = await client.post(
                "/v1/token-rewards", headers=auth("gamma"), json={"samples": [sample(CORRECT)]}
            )
            waited = time.monotonic() - started
            noisy.cancel()  # A disconnects: its queued checks are dropped (no 30 s teardown)
            await asyncio.gather(noisy, return_exceptions=True)
            return waited, quiet.json()["results"][0]["status"] if quiet.is_success else quiet.text

    waited, quiet = asyncio.run(main())
    assert quiet == "scored"
    assert waited < 10, f"team B waited {waited:.1f} s behind team A's checks"


def test_one_teams_over_long_samples_leave_another_team_working(service: str) -> None:
    """Item 4: over-long samples (each within the schema's bounds, all over the GRM context)
    from one team; another team's calls are answered meanwhile."""
    long = "Let me think. " + "1 + 1 = 2. " * 9_000  # ~99k characters

    async def flood() -> None:
        async with httpx.AsyncClient(base_url=service, headers=auth("gamma"), timeout=120) as c:
            samples = [sample(f"{long} Attempt {i}.\nThe answer is: 71") for i in range(40)]
            await c.post("/v1/token-rewards", json={"samples": samples})

    codes = asyncio.run(_quiet_team_works(service, flood(), within_s=20))
    assert codes == [200] * 10


def test_one_team_saturating_the_grm_leaves_another_team_working(service: str) -> None:
    """GRM saturation: one team keeps 24 requests of 8 samples in flight; another team's calls
    still get a GRM call within the bound (fair GRM slots), never a 429 or 503."""

    async def flood() -> None:
        async with httpx.AsyncClient(base_url=service, headers=auth("alpha"), timeout=120) as c:

            async def burst(i: int) -> None:
                samples = [sample(f"{WRONG} {i}-{j}") for j in range(8)]
                await c.post("/v1/token-rewards", json={"samples": samples})

            while True:
                await asyncio.gather(*(burst(i) for i in range(24)), return_exceptions=True)

    codes = asyncio.run(_quiet_team_works(service, flood(), within_s=30, team="gamma"))
    assert codes == [200] * 10
