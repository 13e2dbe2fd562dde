"""Dense RLMEC token rewards into veRL, with the real ``verl`` package (its ``DataProto`` and
reward-manager base classes) against the live reward service (real GRM on the tiny model,
real Redis): both the reward-loop manager and the legacy one."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from rlmec.clients import Client
from rlmec.loop.redis_server import LocalRedis
from tests.clients.conftest import team_service

verl = pytest.importorskip("verl")
from rlmec.clients.adapters import verl_rewards  # noqa: E402 (needs verl)

pytestmark = pytest.mark.integration

KEY = "verl-key-0123456789"
QUESTION = "Natalia sold 48 clips in April and half as many in May. How many in total?"
CORRECT = "She sold 48/2 = 24 clips in May.\nShe sold 48+24 = 72 clips.\nThe answer is: 72"
WRONG = "She sold 48*2 = 96 clips in May.\nShe sold 48+96 = 144 clips.\nThe answer is: 144"


@pytest.fixture(scope="module")
def reward_url(grm_url: str, redis_server: LocalRedis) -> Iterator[str]:
    with team_service(grm_url, redis_server.url, "verl", KEY, cache_enabled=False) as url:
        yield url


@pytest.fixture
def service_env(reward_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The adapters' configuration, as veRL workers get it: from the environment."""
    monkeypatch.setenv("RLMEC_URL", reward_url)
    monkeypatch.setenv("RLMEC_API_KEY", KEY)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def batch(tokenizer: Any) -> Any:
    """Four responses as veRL holds them: left-padded prompts, right-padded responses with EOS
    (the last one truncated, no EOS), one holding a control character."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    texts = [(CORRECT, True), (WRONG, True), ("The answer is: 72\x07", True), (CORRECT, False)]
    prompt = tokenizer(f"Q: {QUESTION}\nA:", add_special_tokens=False)["input_ids"]
    responses = [tokenizer(t, add_special_tokens=False)["input_ids"] + ([eos] if e else [])
                 for t, e in texts]  # fmt: skip
    width = max(len(r) for r in responses) + 3
    resp = torch.full((4, width), pad)
    mask = torch.zeros((4, len(prompt) + width), dtype=torch.long)
    mask[:, : len(prompt)] = 1
    for i, r in enumerate(responses):
        resp[i, : len(r)] = torch.tensor(r)
        mask[i, len(prompt) : len(prompt) + len(r)] = 1
    return verl.DataProto.from_dict(
        tensors={"prompts": torch.tensor([prompt] * 4), "responses": resp, "attention_mask": mask},
        non_tensors={
            "data_source": np.array(["openai/gsm8k"] * 4, dtype=object),
            "reward_model": np.array([{"ground_truth": "72"}] * 4, dtype=object),
            "extra_info": np.array([{"question": QUESTION} for _ in range(4)], dtype=object),
        },
    ), [len(r) for r in responses]


def test_legacy_manager_gives_dense_token_rewards(
    reward_url: str, tokenizer: Any, service_env: None
) -> None:
    data, lengths = batch(tokenizer)
    from verl.workers.reward_manager import get_reward_manager_cls

    manager = get_reward_manager_cls("rlmec")(tokenizer, num_examine=0)  # registered by name
    out = manager(data, return_dict=True)
    rewards, info = out["reward_tensor"], out["reward_extra_info"]
    assert rewards.shape == data.batch["responses"].shape
    for i, n in enumerate(lengths):
        assert torch.all(rewards[i, n:] == 0)  # nothing past the valid response
    # The correct response: exactly the service's token rewards (the tiny tokenizer is also the
    # GRM's, so the projection is the identity), EOS value on the EOS token. (The random GRM
    # gives a correct response near-zero values; test_dense_values_* checks distinct values.)
    with Client(reward_url, api_key=KEY) as client:
        sample = {"question": QUESTION, "prediction": CORRECT, "reference_solution": "72",
                  "reference_answer": "72"}  # fmt: skip
        expected = client.token_rewards([sample]).results[0].rewards
    assert expected is not None
    assert rewards[0, : lengths[0]].tolist() == pytest.approx(expected.values)
    # The truncated copy: the same text-token values, no EOS value.
    assert rewards[3, : lengths[3]].tolist() == pytest.approx(expected.values[:-1])
    assert torch.all(rewards[2] == 0) and info["rlmec_unjudged"] == [0.0, 0.0, 1.0, 0.0]
    assert info["rlmec_correct"] == [1.0, 0.0, 0.0, 1.0]


async def test_reward_loop_manager_coalesces_and_assembles(
    reward_url: str, tokenizer: Any, service_env: None
) -> None:
    from omegaconf import OmegaConf

    data, _ = batch(tokenizer)
    manager = verl_rewards.RlmecRewardManager(OmegaConf.create({}), tokenizer, None)
    with Client(reward_url, api_key=KEY) as client:
        before = client.usage().usage.get("requests", 0)
        # As veRL's RewardLoopWorker.compute_score_batch calls it: one task per sample.
        outs = await asyncio.gather(*(manager.run_single(data[i : i + 1]) for i in range(4)))
        after = client.usage().usage["requests"]
    assert after - before == 1  # four run_single calls, one HTTP call
    rm_scores = verl_rewards.RlmecRewardManager.assemble_rm_scores(
        data, [o["reward_score"] for o in outs]
    )
    legacy = verl_rewards.RlmecLegacyRewardManager(tokenizer)(data)
    assert torch.allclose(rm_scores, legacy)
    assert [o["reward_extra_info"]["rlmec_unjudged"] for o in outs] == [0.0, 0.0, 1.0, 0.0]


def test_dense_values_follow_the_spans_onto_the_policy_tokens(tokenizer: Any) -> None:
    """Distinct token values go back onto veRL's response ids: identity when the tokenizer
    reproduces the ids, EOS value on a final EOS, none for a truncated response, and through
    the prefix-decoding fallback when the ids are not what re-encoding gives."""
    from rlmec.clients.adapters._tokens import token_offsets
    from rlmec.shared.schemas import ScoredSample
    from rlmec.shared.spans import to_spans
    from rlmec.shared.tokenization import encode_output

    encoded = encode_output(tokenizer, WRONG)
    values = [-0.1 * ((i % 3) + 1) for i in range(len(encoded.token_ids))]
    result = ScoredSample(
        status="scored", correct=False, question=QUESTION, prediction=WRONG,
        predicted_answer="144", reference_answer="72",
        reward_spans=to_spans(encoded.offsets, values),
        rewards={"token_ids": encoded.token_ids, "tokens": encoded.tokens,
                 "offsets": encoded.offsets, "values": values},
    )  # fmt: skip
    ids = encoded.token_ids  # text tokens then EOS
    with_eos = verl_rewards.Response(ids, "gsm8k", "72", {})
    assert verl_rewards.dense_values(tokenizer, with_eos, result) == pytest.approx(values)
    truncated = verl_rewards.Response(ids[:-1], "gsm8k", "72", {})
    assert verl_rewards.dense_values(tokenizer, truncated, result) == pytest.approx(values[:-1])
    # Byte-level ids the tokenizer would merge: same characters, other tokens (fallback path).
    split = [t for i in ids[:8] for t in tokenizer(tokenizer.decode([i]),
             add_special_tokens=False)["input_ids"]]  # fmt: skip
    text = tokenizer.decode(split)
    offsets = token_offsets(tokenizer, split, text)
    assert len(offsets) == len(split) and offsets[-1][1] == len(text)


def test_legacy_naive_manager_calls_the_sync_compute_score(
    tokenizer: Any, service_env: None
) -> None:
    """veRL's own legacy NaiveRewardManager calls compute_score synchronously: the async one
    broke it; ``compute_score_sync`` gives it the scalar per sample."""
    from verl.workers.reward_manager import get_reward_manager_cls

    from rlmec.clients.adapters import verl as verl_adapter

    data, lengths = batch(tokenizer)
    naive = get_reward_manager_cls("naive")(
        tokenizer, num_examine=0, compute_score=verl_adapter.compute_score_sync
    )
    out = naive(data, return_dict=True)
    last = [float(out["reward_tensor"][i, n - 1]) for i, n in enumerate(lengths)]
    assert last == [1.0, 0.0, 0.0, 1.0]  # correctness on the last token, the unjudged one 0
    assert list(out["reward_extra_info"]["rlmec_unjudged"]) == [0.0, 0.0, 1.0, 0.0]


async def test_32_compute_score_calls_in_flight_all_get_a_score(service_env: None) -> None:
    """veRL's reward loop awaits compute_score for every sample of a step at once: over the
    team's concurrency quota the calls wait for a slot (admission queue, SDK retry budget)
    instead of raising RateLimitError (20 of 32 did before)."""
    from rlmec.clients.adapters import verl as verl_adapter

    info = {"question": QUESTION}
    outs = await asyncio.gather(*(
        verl_adapter.compute_score("openai/gsm8k", f"Step {i}.\n{CORRECT}", "72", info)
        for i in range(32)
    ))  # fmt: skip
    assert [o["score"] for o in outs] == [1.0] * 32


def _documented_overrides() -> list[dict[str, str]]:
    """The veRL settings the README's recipe and docs/clients.md document, ``key=value`` as a
    user passes them."""
    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    recipe = readme[readme.index("python -m verl.trainer.main_ppo") :]
    recipe = recipe[: recipe.index("```")]
    docs = (root / "docs" / "clients.md").read_text()
    section = docs[docs.index("- **veRL, dense token rewards**") :]
    section = section[: section.index("- **OpenRLHF with a key**")]
    return [
        dict(re.findall(r"^\s*(reward\.[\w.]+)=(\S+)", recipe, re.M)),
        dict(re.findall(r"`(reward\.[\w.]+)=([^`\s]+)`", section)),
    ]


def test_every_documented_verl_path_loads_through_verls_own_loader() -> None:
    """What veRL's trainer does with those settings: ``resolve_reward_manager_cls`` and
    ``get_custom_reward_fn`` (both ``load_extern_object``), on a config built from them."""
    from omegaconf import OmegaConf
    from verl.trainer.ppo.reward import get_custom_reward_fn, resolve_reward_manager_cls

    recipe, documented = _documented_overrides()
    for page in (recipe, documented):
        assert page["reward.reward_manager.module.path"].startswith("pkg://")
        manager = OmegaConf.create({"reward": {"reward_manager": {
            "source": page["reward.reward_manager.source"],
            "name": page["reward.reward_manager.name"],
            "module": {"path": page["reward.reward_manager.module.path"]},
        }}})  # fmt: skip
        assert resolve_reward_manager_cls(manager) is verl_rewards.RlmecRewardManager
    scalar = OmegaConf.create({"reward": {"custom_reward_function": {
        "path": documented["reward.custom_reward_function.path"],
        "name": documented["reward.custom_reward_function.name"],
    }}})  # fmt: skip
    fn = get_custom_reward_fn(scalar)
    from rlmec.clients.adapters import verl as verl_scalar

    assert fn is not None and fn.args[0] is verl_scalar.compute_score  # type: ignore[attr-defined]
