"""The rollout actor against the real reward service (uvicorn on loopback, real Redis) and a
real engine on the tiny model: versions and behaviour log-probs in the queued batches, a weight
refresh picked up mid-run, and a restart that neither loses nor repeats a batch."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

from rlmec.shared.schemas import RewardParams
from tests.servers import serve_app

TEAM, KEY = "team-r", "rollout-key"
pytestmark = pytest.mark.integration


@contextmanager
def reward_service(redis_url: str) -> Iterator[str]:
    """The reward service with one team; pushes need no GRM (workers would)."""
    from rlmec.services.reward.app import create_app
    from rlmec.services.reward.settings import RewardSettings, TeamConfig
    from rlmec.services.reward.teams import hash_key

    settings = RewardSettings(
        grm_urls=["http://127.0.0.1:9"], redis_url=redis_url,
        teams=[TeamConfig(name=TEAM, key_sha256=[hash_key(KEY)])],
    )  # fmt: skip
    with serve_app(create_app(settings)) as url:
        yield url


def perturbed_copy(model_dir: Path, out: Path, seed: int) -> Path:
    """The tiny model with seeded noise on every weight: another policy version."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    return out


def teacher_forced(model_dir: Path, prompt: str, prediction: str) -> list[float]:
    """Log-probs of the prediction's tokens then EOS, recomputed with transformers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlmec.shared.tokenization import encode_output

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prompt_ids = tok(prompt)["input_ids"]
    out = encode_output(tok, prediction).token_ids
    ids = torch.tensor([prompt_ids + out])
    with torch.no_grad():
        logits = model(ids).logits.float()
    lp = torch.log_softmax(logits[0, len(prompt_ids) - 1 : -1], dim=-1)
    return lp.gather(-1, torch.tensor(out)[:, None])[:, 0].tolist()


def queued_batches(redis_url: str) -> list[Any]:
    import redis

    from rlmec.shared.queue import RolloutBatch, keys_for

    client = redis.Redis.from_url(redis_url)
    entries = client.xrange(keys_for(TEAM).rollouts)
    return [RolloutBatch.model_validate_json(fields[b"batch"]) for _, fields in entries]


def make_actor(engine: Any, client: Any, workdir: Path, redis_url: str, **cfg: Any) -> Any:
    import redis

    from rlmec.data.tasks import load_task
    from rlmec.rollout.actor import RolloutActor, RolloutConfig, VersionWatcher

    config = RolloutConfig(team=TEAM, run_id="t", n=2, problems_per_batch=2, max_new_tokens=12,
                           **cfg)  # fmt: skip
    watcher = VersionWatcher(redis.Redis.from_url(redis_url), TEAM)
    problems = load_task("gsm8k_train", limit=6)
    return RolloutActor(engine, client, problems, config, workdir, watcher)


def start_engine(kind: str, model: Path) -> Any:
    from rlmec.inference import create_engine
    from rlmec.inference.settings import EngineSettings

    return create_engine(EngineSettings(model=str(model), engine=kind, max_model_len=512,
                                        kv_cache_gib=1.0, max_batch_tokens=2048))  # fmt: skip


@pytest.mark.parametrize("kind", ["hf", pytest.param("vllm", marks=pytest.mark.slow)])
def test_batches_carry_versions_and_behaviour_logprobs_and_follow_new_weights(
    kind: str, tiny_model_dir: Path, redis_url: str, tmp_path: Path
) -> None:
    import redis

    from rlmec.clients import AsyncClient
    from rlmec.shared.policy_version import PolicyVersion, write_version

    # The trainer's shared-memory copy of version 1, which the actor prefers to the disk copy.
    # The disk copy here holds other weights, so the log-probs below show which one it read.
    v1 = perturbed_copy(tiny_model_dir, tmp_path / "shm" / "v000001", seed=1)
    disk = perturbed_copy(tiny_model_dir, tmp_path / "policy" / "v000001", seed=2)
    client = redis.Redis.from_url(redis_url)

    def publish_after_first(report: Any) -> None:  # the trainer, between the actor's batches
        if report.batch == 0:
            write_version(client, TEAM, PolicyVersion(1, str(disk), 1, 0.0, str(v1)))

    async def run(url: str) -> list[Any]:
        engine = start_engine(kind, tiny_model_dir)
        await engine.start()
        try:
            async with AsyncClient(url, api_key=KEY) as http:
                actor = make_actor(engine, http, tmp_path / "work", redis_url, max_batches=2,
                                   params=RewardParams(edit_penalty=True))  # fmt: skip
                return await actor.run(on_batch=publish_after_first)
        finally:
            await engine.close()

    with reward_service(redis_url) as url:
        reports = asyncio.run(run(url))

    assert [r.policy_version for r in reports] == [0, 1]
    assert reports[0].reload_s is None and reports[1].reload_s is not None
    batches = queued_batches(redis_url)
    assert [b.batch_id for b in batches] == ["t-00000000", "t-00000001"]
    assert [b.policy_version for b in batches] == [0, 1]
    assert all(b.params.edit_penalty for b in batches)  # the actor's reward shaping
    tol = 1e-4 if kind == "hf" else 2e-3
    for batch, model in zip(batches, [tiny_model_dir, v1], strict=True):
        assert len(batch.samples) == 4
        for sample in batch.samples:
            assert sample.metadata is not None and sample.metadata["policy_version"] in (0, 1)
            assert sample.prompt is not None and sample.behaviour_logprobs is not None
            expected = teacher_forced(model, sample.prompt, sample.prediction)
            got = sample.behaviour_logprobs
            assert len(got) == len(expected)
            assert max(abs(a - b) for a, b in zip(got, expected, strict=True)) < tol
    # After the refresh the log-probs are the new weights', not the old ones'.
    late = batches[1].samples[0]
    assert late.prompt is not None and late.behaviour_logprobs is not None
    old = teacher_forced(tiny_model_dir, late.prompt, late.prediction)
    assert max(abs(a - b) for a, b in zip(late.behaviour_logprobs, old, strict=True)) > 0.01


def test_a_restart_resumes_without_losing_or_repeating_a_batch(
    tiny_model_dir: Path, redis_url: str, tmp_path: Path
) -> None:
    from rlmec.clients import AsyncClient

    work = tmp_path / "work"

    async def run(url: str, max_batches: int) -> list[Any]:
        engine = start_engine("hf", tiny_model_dir)
        await engine.start()
        try:
            async with AsyncClient(url, api_key=KEY) as http:
                actor = make_actor(engine, http, work, redis_url, max_batches=max_batches)
                return await actor.run()
        finally:
            await engine.close()

    with reward_service(redis_url) as url:
        first = asyncio.run(run(url, 2))
        # A crash after batch 1 was pushed but before state.json recorded it:
        (work / "state.json").write_text(json.dumps({"run_id": "t", "next_batch": 1}))
        second = asyncio.run(run(url, 3))

    assert [r.batch for r in first] == [0, 1]
    assert [(r.batch, r.duplicate) for r in second] == [(1, True), (2, False)]
    ids = [b.batch_id for b in queued_batches(redis_url)]
    assert ids == ["t-00000000", "t-00000001", "t-00000002"]  # each exactly once
    assert json.loads((work / "state.json").read_text())["next_batch"] == 3
    lines = (work / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["batch"] for line in lines] == [0, 1, 1, 2]


def test_a_full_queue_is_waited_out_not_dropped(
    tiny_model_dir: Path, redis_url: str, tmp_path: Path
) -> None:
    """The team's queue holds 4 samples: the second batch waits until a worker takes the
    first, and is pushed then."""
    import redis

    from rlmec.clients import AsyncClient
    from rlmec.services.reward.settings import RewardSettings, TeamConfig
    from rlmec.services.reward.teams import hash_key
    from rlmec.shared.queue import keys_for

    settings = RewardSettings(
        grm_urls=["http://127.0.0.1:9"], redis_url=redis_url,
        teams=[TeamConfig(name=TEAM, key_sha256=[hash_key(KEY)], max_queued_samples=4)],
    )  # fmt: skip
    client = redis.Redis.from_url(redis_url)

    async def drain_later() -> None:  # a worker taking the first batch, 1 s after it came
        keys = keys_for(TEAM)
        while client.xlen(keys.rollouts) == 0:
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        client.set(keys.queued_samples, 0)

    async def run(url: str) -> list[Any]:
        engine = start_engine("hf", tiny_model_dir)
        await engine.start()
        try:
            async with AsyncClient(url, api_key=KEY, max_retries=0) as http:
                actor = make_actor(engine, http, tmp_path / "w", redis_url, max_batches=2,
                                   backpressure_wait_s=0.2)  # fmt: skip
                reports, _ = await asyncio.gather(actor.run(), drain_later())
                return reports
        finally:
            await engine.close()

    from rlmec.services.reward.app import create_app

    with serve_app(create_app(settings)) as url:
        reports = asyncio.run(run(url))
    assert [r.batch for r in reports] == [0, 1]
    assert reports[1].push_s >= 0.5  # it waited for room
    assert [b.batch_id for b in queued_batches(redis_url)] == ["t-00000000", "t-00000001"]
