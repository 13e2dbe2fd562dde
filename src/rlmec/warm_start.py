"""The start policy of a procedural task: SmolLM2-135M-Instruct after a short SFT warm start.

Zero-shot the model writes no step on ``arith`` (5%, by guessing), so every method of the
learning benchmark and the demo start from the same warm start: ``rlmec train`` with
``loss.objective: sft`` on the reference solutions of the first 1200 ``arith_train`` problems,
80 steps of 8, constant lr 5e-5 after 4 warmup steps, bf16 autocast where the CPU computes bf16.
It scores 31.5% on the 1000 ``arith`` test problems, every error a one-step slip (BENCHMARKS.md,
``learning``). Made once (about 8 minutes on 2 cores) into ``~/.cache/rlmec/models``. The
credit study (issue 42) makes the ``lines`` and ``paths`` start policies the same way, from
their own ``*_train`` references (``task``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

PROBLEMS, STEPS, LR, BATCH = 1200, 80, 5e-5, 8


def reference_records(problems: int = PROBLEMS, task: str = "arith_train") -> list[dict[str, Any]]:
    """Reference-only trainer records (``question``, ``reference_solution``) of the first
    ``problems`` problems of ``task`` (a ``*_train`` split, knobs allowed)."""
    from rlmec.data.tasks import load_task

    return [{"id": p.id, "question": p.question, "task": "math",
             "reference_solution": p.reference_solution}
            for p in load_task(task)[:problems]]  # fmt: skip


def config(base: Path, train_file: Path, output_dir: Path) -> dict[str, Any]:
    return {
        "model": str(base), "output_dir": str(output_dir), "seed": 0,
        "loss": {"objective": "sft"},
        "data": {"mode": "offline", "train_file": str(train_file), "max_length": 256},
        "optim": {"lr": LR, "lr_schedule": "constant", "warmup_ratio": 0.05, "epochs": 1,
                  "max_steps": STEPS, "global_batch_size": BATCH, "micro_batch_size": BATCH},
        "engine": {"zero_stage": 0, "precision": "autocast"},
        "save_every_steps": 40, "log_every_steps": 10,
    }  # fmt: skip


def make_start_policy(
    base: Path, work: Path, dest: Path | None = None, task: str = "arith_train"
) -> Path:
    """Train the warm start in ``work/start`` (resumable) unless ``work/start/final`` or
    ``dest`` holds it already; copy it to ``dest`` when given. Returns the model directory."""
    final = work / "start" / "final"
    if dest is not None and (dest / "config.json").is_file():
        return dest
    if not (final / "config.json").is_file():
        work.mkdir(parents=True, exist_ok=True)
        refs, cfg = work / "warm_refs.jsonl", work / "start.json"
        refs.write_text("".join(json.dumps(r) + "\n" for r in reference_records(task=task)))
        cfg.write_text(json.dumps(config(base, refs, work / "start"), indent=1))
        subprocess.run([sys.executable, "-m", "rlmec", "train", "--config", str(cfg)], check=True)
    if dest is None:
        return final
    shutil.copytree(final, dest, dirs_exist_ok=True)
    return dest
