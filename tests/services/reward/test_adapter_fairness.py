"""Fair share across adapters (issue 28, item 3): two teams bound to different LoRA adapters
of one real GRM server (hf engine, tiny model), real reward service, Redis and HTTP. One team
floods on its adapter; the other's calls on its own adapter are still answered within the
bound, every result names the adapter of the team that asked, and the team's usage names
its adapter."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rlmec.loop.redis_server import LocalRedis
from rlmec.services.grm.app import create_app as create_grm_app
from rlmec.services.grm.settings import GrmSettings
from rlmec.services.reward.app import create_app
from tests.inference.test_adapters import make_adapter
from tests.servers import serve_app
from tests.services.reward.conftest import WRONG, auth, reward_settings, sample, teams

pytestmark = pytest.mark.integration

BOUND_S = 30.0


@pytest.fixture(scope="module")
def adapter_grm(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("team-adapters")
    adapters = {name: str(make_adapter(tiny_model_dir, root / name, seed))
                for name, seed in (("grm-alpha", 1), ("grm-gamma", 2))}  # fmt: skip
    settings = GrmSettings(model=str(tiny_model_dir), engine="hf", adapters=adapters)
    with serve_app(create_grm_app(settings)) as url:
        yield url


def test_one_team_flooding_its_adapter_leaves_another_teams_adapter_working(
    adapter_grm: str, redis_server: LocalRedis
) -> None:
    bound = {"alpha": "grm-alpha", "gamma": "grm-gamma"}
    configs = [t.model_copy(update={"grm_adapter": bound.get(t.name)}) for t in teams()]
    settings = reward_settings(adapter_grm, redis_server.url, teams=configs,
                               cache_enabled=False)  # fmt: skip

    done, scored = [0], [0]  # the flood's requests answered so far, and scored (200)

    async def flood(url: str) -> None:
        async with httpx.AsyncClient(base_url=url, headers=auth("alpha"), timeout=120) as c:

            async def burst(i: int) -> None:
                samples = [sample(f"{WRONG} flood {i}-{j}") for j in range(8)]
                resp = await c.post("/v1/token-rewards", json={"samples": samples})
                done[0] += 1
                scored[0] += resp.status_code == 200

            k = 0
            while True:
                await asyncio.gather(*(burst(k + i) for i in range(24)), return_exceptions=True)
                k += 24

    async def main(url: str) -> tuple[list[float], list[str], str, int]:
        waits, models, ahead = [], [], -1
        async with httpx.AsyncClient(base_url=url, headers=auth("gamma"), timeout=BOUND_S) as c:
            task = asyncio.create_task(flood(url))
            await asyncio.sleep(2.0)  # the flood is in place
            for i in range(5):
                t0 = asyncio.get_running_loop().time()
                resp = await c.post("/v1/token-rewards",
                                    json={"samples": [sample(f"{WRONG} quiet {i}")]})  # fmt: skip
                waits.append(asyncio.get_running_loop().time() - t0)
                assert resp.status_code == 200, resp.text
                if i == 0:
                    ahead = done[0]
                models.append(resp.json()["grm"]["model_id"])
            # The flood's requests are coalesced into batches of 64: let one finish, so its
            # usage is counted, before stopping it.
            deadline = asyncio.get_running_loop().time() + 120
            while not scored[0] and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.2)
            task.cancel()
        async with httpx.AsyncClient(base_url=url, headers=auth("alpha"), timeout=BOUND_S) as c:
            resp = await c.post("/v1/token-rewards", json={"samples": [sample(f"{WRONG} a")]})
            usage = (await c.get("/v1/usage")).json()
        assert usage["grm_adapter"] == "grm-alpha" and usage["usage"]["samples"] > 1
        return waits, models, resp.json()["grm"]["model_id"], ahead

    with serve_app(create_app(settings)) as url:
        waits, models, flooder, ahead = asyncio.run(main(url))
    # Served in turn, not behind the backlog: the flood's first 24 requests, all queued before
    # the quiet team's first, were not all answered before it (first come, first served, they
    # would have been).
    assert ahead < 24, f"{ahead} flood requests answered first; waits {waits}"
    assert max(waits) < BOUND_S
    assert models == ["grm-gamma"] * 5
    assert flooder == "grm-alpha"
