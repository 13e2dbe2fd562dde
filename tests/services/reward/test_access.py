"""Auth (401/403), quotas (429 + Retry-After), GRM down (503), bad input (422)."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from rlmec.loop.redis_server import LocalRedis, free_port
from rlmec.services.grm.app import create_app as create_grm_app
from rlmec.services.grm.settings import GrmSettings
from rlmec.services.reward.app import create_app
from tests.servers import serve_app
from tests.services.reward.conftest import (
    CORRECT,
    KEYS,
    REWRITE,
    WRONG,
    auth,
    reward_settings,
    sample,
)

pytestmark = pytest.mark.integration


def post(client: httpx.Client, team: str | None, *samples: dict[str, object]) -> httpx.Response:
    headers = auth(team) if team else {}
    return client.post("/v1/token-rewards", headers=headers, json={"samples": list(samples)})


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_api_key"),
        ({"Authorization": "Bearer not-a-key"}, "invalid_api_key"),
        ({"Authorization": f"Basic {KEYS['alpha']}"}, "malformed_authorization"),
    ],
)
def test_401_without_a_valid_key(client: httpx.Client, headers: dict[str, str], code: str) -> None:
    resp = client.post("/v1/token-rewards", headers=headers, json={"samples": [sample(CORRECT)]})
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"] == "Bearer"
    assert resp.json()["error"]["type"] == "authentication_error"
    assert resp.json()["error"]["code"] == code
    assert KEYS["alpha"] not in resp.text


def test_403_for_another_teams_usage(client: httpx.Client) -> None:
    resp = client.get("/v1/teams/beta/usage", headers=auth("alpha"))
    assert resp.status_code == 403
    assert resp.json()["error"]["type"] == "permission_denied"
    assert "'alpha'" in resp.json()["error"]["message"]


def test_429_when_rate_limit_is_spent(client: httpx.Client) -> None:
    """beta may score 3 samples a minute; the refused request is not counted."""
    assert post(client, "beta", sample(CORRECT), sample(CORRECT)).status_code == 200
    refused = post(client, "beta", sample(CORRECT), sample(CORRECT))
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.json()["error"]["code"] == "rate_limit"
    assert post(client, "beta", sample(CORRECT)).status_code == 200
    too_big = post(client, "beta", *[sample(CORRECT)] * 4)
    # A batch that can never fit is 413 (not a 429 a client would retry forever).
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "batch_over_rate_limit"
    assert post(client, "alpha", sample(CORRECT)).status_code == 200  # other teams unaffected
    usage = client.get("/v1/usage", headers=auth("beta")).json()["usage"]
    assert usage["rate_limited"] == 2 and usage["samples"] == 3


def test_over_concurrency_a_request_waits_for_a_slot(client: httpx.Client, redis_url: str) -> None:
    """gamma may run one request at a time. A lease held by another replica makes gamma's
    request wait (not 429) until it is released; one never released is a 429 after
    ``admission_wait_s`` (2 s here); an expired lease (a crashed replica) blocks nothing."""
    r = redis.Redis.from_url(redis_url)
    key = "rlmec:reward:inflight:gamma"
    r.zadd(key, {"other-replica": (time.time() + 600) * 1000})
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(post, client, "gamma", sample(CORRECT))
        time.sleep(0.5)
        assert not waiting.done()  # queued for the slot, not refused
        r.zrem(key, "other-replica")  # the other replica finishes
        assert waiting.result(timeout=60).status_code == 200
    r.zadd(key, {"other-replica": (time.time() + 600) * 1000})
    refused = post(client, "gamma", sample(CORRECT))
    assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 5
    assert refused.json()["error"]["code"] == "concurrency_limit"
    r.zadd(key, {"other-replica": (time.time() - 1) * 1000})
    assert post(client, "gamma", sample(CORRECT)).status_code == 200
    assert r.zcard(key) == 0  # our own lease was given back
    r.close()


def test_concurrent_requests_over_the_quota_all_succeed(grm_url: str, redis_url: str) -> None:
    """Eight requests at once against gamma's single slot, with the default admission wait
    (120 s): they queue and all are scored."""
    settings = reward_settings(grm_url, redis_url, admission_wait_s=120.0)
    predictions = [f"Step {i}.\n{CORRECT}" for i in range(8)]
    with serve_app(create_app(settings)) as url, httpx.Client(base_url=url, timeout=300) as client:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda p: post(client, "gamma", sample(p)), predictions))
        assert [a.status_code for a in answers] == [200] * 8
        usage = client.get("/v1/usage", headers=auth("gamma")).json()["usage"]
    assert usage["requests"] == 8 and usage.get("rate_limited", 0) == 0


def test_no_waiting_room_is_an_immediate_429(client: httpx.Client, redis_url: str) -> None:
    """delta has ``max_waiting_requests=0``: over its quota it is refused at once."""
    r = redis.Redis.from_url(redis_url)
    r.zadd("rlmec:reward:inflight:delta", {"other-replica": (time.time() + 600) * 1000})
    refused = post(client, "delta", sample(CORRECT))
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "admission_queue_full"
    r.close()


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"samples": []}, "samples"),
        ({"samples": [sample(CORRECT)], "temperature": 1}, "temperature"),
        ({"samples": [{**sample(CORRECT), "predicton": "x"}]}, "samples.0.predicton"),
        ({"samples": [sample("bad \x00 text")]}, "samples.0.prediction"),
        ({"samples": [{**sample(CORRECT), "question": ""}]}, "samples.0.question"),
        ({"samples": [sample(CORRECT)], "params": {"threshold": 2}}, "params.threshold"),
        ({"samples": [sample(CORRECT, task="chess")]}, "samples.0.task"),
    ],
)
def test_bad_input_is_422_naming_the_field(
    client: httpx.Client, body: dict[str, object], param: str
) -> None:
    resp = client.post("/v1/token-rewards", headers=auth("alpha"), json=body)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["param"] == param


def test_invalid_json_is_422(client: httpx.Client) -> None:
    resp = client.post(
        "/v1/token-rewards", headers={**auth("alpha"), "content-type": "application/json"},
        content=b"{not json",
    )  # fmt: skip
    assert resp.status_code == 422
    assert "not valid JSON" in resp.json()["error"]["message"]


@pytest.fixture
def down_url(redis_url: str) -> Iterator[str]:
    """A reward service whose GRM URL has nothing listening."""
    dead = f"http://127.0.0.1:{free_port()}"
    with serve_app(create_app(reward_settings(dead, redis_url))) as url:
        yield url


def test_grm_down_is_503_and_nothing_is_cached(down_url: str, redis_url: str) -> None:
    with httpx.Client(base_url=down_url, timeout=30) as c:
        resp = post(c, "alpha", sample(CORRECT))
        assert resp.status_code == 503
        error = resp.json()["error"]
        assert error["type"] == "service_unavailable" and "unreachable" in error["message"]
        assert "http://127.0.0.1:" in error["message"]
        ready = c.get("/ready")
        assert ready.status_code == 503 and "grm" in ready.json()["error"]["message"]
    r = redis.Redis.from_url(redis_url)
    assert r.keys("rlmec:reward:cache*") == []
    r.close()


def test_grm_stopped_after_start(tiny_model_dir: Path, redis_url: str) -> None:
    """The GRM served one request, then stopped: cached samples are still answered, new
    ones get 503, and nothing new is cached."""
    grm_server = serve_app(create_grm_app(GrmSettings(model=str(tiny_model_dir), engine="hf")))
    grm = grm_server.__enter__()
    try:
        app = create_app(reward_settings(grm, redis_url))
        with serve_app(app) as url, httpx.Client(base_url=url, timeout=30) as c:
            assert post(c, "alpha", sample(CORRECT)).status_code == 200
            grm_server.__exit__(None, None, None)
            assert c.get("/ready").status_code == 503
            hit = post(c, "alpha", sample(CORRECT))
            assert hit.status_code == 200 and hit.json()["results"][0]["cached"] is True
            miss = post(c, "alpha", sample(WRONG, rewrite=REWRITE))
            assert miss.status_code == 503
            assert miss.json()["error"]["code"] == "grm_unreachable"
            assert grm in miss.json()["error"]["message"]
    finally:
        grm_server.__exit__(None, None, None)
    r = redis.Redis.from_url(redis_url)
    assert len(r.keys("rlmec:reward:{cache}:[0-9a-f]*")) == 1
    r.close()


def test_redis_down_is_503(grm_url: str) -> None:
    with LocalRedis() as server:
        app = create_app(reward_settings(grm_url, server.url))
        with serve_app(app) as url, httpx.Client(base_url=url, timeout=30) as c:
            server.stop()
            resp = post(c, "alpha", sample(CORRECT))
            assert resp.status_code == 503
            assert "Redis at redis://127.0.0.1" in resp.json()["error"]["message"]
            assert c.get("/ready").status_code == 503


def test_anonymous_only_when_allowed(grm_url: str, redis_url: str) -> None:
    app = create_app(reward_settings(grm_url, redis_url, allow_anonymous=True))
    with serve_app(app) as url, httpx.Client(base_url=url, timeout=60) as c:
        ok = post(c, None, sample(CORRECT))
        assert ok.status_code == 200 and ok.json()["results"][0]["status"] == "scored"
        assert c.get("/v1/usage").json()["team"] == "anonymous"
        assert c.post(
            "/v1/token-rewards", headers={"Authorization": "Bearer wrong"},
            json={"samples": [sample(CORRECT)]},
        ).status_code == 401  # fmt: skip
