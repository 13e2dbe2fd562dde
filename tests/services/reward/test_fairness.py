"""One team's burst does not starve another, in the live service: the GRM calls in flight are
handed out round-robin over the teams (real GRM service, real Redis, real HTTP)."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI

from rlmec.loop.redis_server import LocalRedis
from rlmec.services.reward.app import create_app
from rlmec.services.reward.grm_backend import GrmBackend
from tests.servers import serve_app
from tests.services.reward.conftest import WRONG, auth, reward_settings, sample

pytestmark = pytest.mark.integration

BURST = 16


@pytest.fixture
def one_grm_slot(
    grm_url: str, redis_server: LocalRedis, redis_url: str
) -> Iterator[tuple[FastAPI, str]]:
    """A reward service with one GRM call in flight at a time, one sample per call, no cache:
    every wrong sample costs its own GRM call, and calls queue for the single slot."""
    settings = reward_settings(
        grm_url, redis_url, grm_max_concurrency=1, grm_batch_size=1, cache_enabled=False
    )
    app = create_app(settings)
    with serve_app(app) as url:
        yield app, url


def test_a_quiet_team_is_served_during_another_teams_burst(
    one_grm_slot: tuple[FastAPI, str],
) -> None:
    app, url = one_grm_slot
    burst = [sample(f"{WRONG} ({i})") for i in range(BURST)]
    with (
        httpx.Client(base_url=url, timeout=300) as client,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        alpha = pool.submit(
            client.post, "/v1/token-rewards", headers=auth("alpha"), json={"samples": burst}
        )
        grm: GrmBackend = app.state.pipeline.grm
        deadline = time.monotonic() + 60
        while grm.slots.queued() < BURST // 2:  # alpha's backlog is waiting for the slot
            assert time.monotonic() < deadline and not alpha.done(), "alpha never queued"
            time.sleep(0.005)
        beta = client.post(
            "/v1/token-rewards", headers=auth("beta"), json={"samples": [sample(f"{WRONG} (b)")]}
        )
        backlog_left = grm.slots.queued()
        assert beta.status_code == 200, beta.text
        assert alpha.result().status_code == 200
    # Round-robin: beta's calls went ahead of alpha's backlog, so most of it was still waiting
    # when beta's answer came back (FIFO would have served the whole backlog first).
    assert backlog_left >= BURST // 4, backlog_left
