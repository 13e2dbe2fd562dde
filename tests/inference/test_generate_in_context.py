"""``generate_in_context``: each prompt's budget is what its context leaves, prompts of one
budget go together, per-prompt seeds follow their prompts, and a prompt that fills the
context is an error naming it. A recording engine stands in (this is logic around engines;
the engines themselves are tested on real models in tests/services/grm and tests/data)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from rlmec.inference.engine import EngineInfo, Generation, Sampling, generate_in_context


class Recorder:
    name = "recorder"

    def __init__(self, max_model_len: int) -> None:
        self.calls: list[tuple[list[int], int, tuple[int, ...]]] = []
        self._info = EngineInfo("m", "r", "t", max_model_len, "recorder")

    def info(self) -> EngineInfo:
        return self._info

    async def generate(
        self, prompts: list[list[int]], max_new_tokens: int, stop: Sequence[str],
        sampling: Sampling | None = None,
    ) -> list[Generation]:  # fmt: skip
        seeds = sampling.seeds if sampling else ()
        self.calls.append(([len(p) for p in prompts], max_new_tokens, seeds))
        return [Generation(f"len{len(p)}", 1, "stop") for p in prompts]


async def test_budgets_group_prompts_and_seeds_follow_them() -> None:
    engine = Recorder(max_model_len=10)
    prompts = [[1] * 2, [1] * 8, [1] * 3, [1] * 8]
    out = await generate_in_context(
        engine,
        prompts,
        5,
        (),
        Sampling(seeds=(10, 11, 12, 13)),  # type: ignore[arg-type]
    )
    assert [g.text for g in out] == ["len2", "len8", "len3", "len8"]  # input order kept
    # length 8 leaves 2 tokens: its own call; the others keep the full budget of 5
    assert sorted(engine.calls) == [([2, 3], 5, (10, 12)), ([8, 8], 2, (11, 13))]


async def test_a_prompt_that_fills_the_context_is_named() -> None:
    engine = Recorder(max_model_len=4)
    with pytest.raises(ValueError, match="gsm8k/7: the prompt \\(4 tokens\\) fills"):
        await generate_in_context(engine, [[1], [1] * 4], 3, (), names=["a", "gsm8k/7"])  # type: ignore[arg-type]
