"""An in-place weight reload gives what a fresh engine on the new weights gives (issue 32): the
rollout actor loads each published version this way, from the trainer's shared-memory copy.
Real engines on the tiny model; the vllm one is slow (it starts two vLLM engines)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.rollout.test_actor import perturbed_copy, start_engine

pytestmark = pytest.mark.integration
PROMPTS = ["Calculate 17 + 21 - 31.", "Ann has 9 cards. She gets 17 more.", "2 + 2 ="]


async def _outputs(engine: Any) -> tuple[list[list[int]], list[list[float]]]:
    tok = engine.tokenizer
    prompts = [list(tok(p)["input_ids"]) for p in PROMPTS]
    gens = await engine.generate(prompts, 12, ())
    outputs = [list(tok(g.text, add_special_tokens=False)["input_ids"]) for g in gens]
    return outputs, await engine.score(prompts, outputs)


async def _fresh(kind: str, model: Path) -> tuple[list[list[int]], list[list[float]]]:
    engine = start_engine(kind, model)
    await engine.start()
    try:
        return await _outputs(engine)
    finally:
        await engine.close()


async def _reloaded(kind: str, start: Path, new: Path) -> tuple[Any, Any, str]:
    engine = start_engine(kind, start)
    await engine.start()
    try:
        before = await _outputs(engine)
        await engine.reload_weights(new, revision="policy-v1")
        return before, await _outputs(engine), engine.info().revision
    finally:
        await engine.close()


@pytest.mark.parametrize("kind", ["hf", pytest.param("vllm", marks=pytest.mark.slow)])
def test_a_reload_from_shared_memory_equals_a_fresh_engine(
    kind: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    disk = perturbed_copy(tiny_model_dir, tmp_path / "policy" / "v000001", seed=3)
    memory = tmp_path / "shm" / "v000001"  # what the trainer writes under /dev/shm/rlmec
    shutil.copytree(disk, memory)
    before, after, revision = asyncio.run(_reloaded(kind, tiny_model_dir, memory))
    fresh = asyncio.run(_fresh(kind, disk))
    assert revision == "policy-v1"  # named by the caller: no hashing of the weights
    assert after[0] == fresh[0]  # the same greedy tokens
    for got, want in zip(after[1], fresh[1], strict=True):
        assert got == pytest.approx(want, abs=1e-4)
    # and the weights did change: other tokens, or the same tokens at other log-probs
    flat = [[x for row in side[1] for x in row] for side in (before, after)]
    assert before[0] != after[0] or flat[0] != pytest.approx(flat[1], abs=1e-2)
