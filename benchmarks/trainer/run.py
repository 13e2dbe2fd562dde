"""Trainer: optimizer-step time of the RLMEC objective vs plain SFT, same batch, same model.

Workload: SmolLM2-135M-Instruct (``convert_smollm2``, bf16 weights loaded in fp32), DeepSpeed
ZeRO-2 fp32 on this machine's CPU, one rank, one micro-batch of 4 GSM8K train problems: the
prediction is the reference solution with its final number changed, the regular sequence the
reference (edited tokens weight 1.0, others 0.5), rewards -0.1 on the changed tokens.

* ``sft``: causal-LM NLL over the response tokens of prediction and regular sequence (mean
  over tokens), one forward pass over both, backward, step. This is the baseline.
* ``rlmec``: the trainer's own ``train_step`` with reference log-probs in the records (the
  paper's offline setting: computed once, before training).
* ``rlmec+ref``: the same, reference log-probs computed in the loop by the frozen reference
  model (one extra no-grad forward over the predictions).

Steps alternate between the variants after warm-up; the median step time is reported.

    .venv/bin/python -m benchmarks.trainer.run [--steps 6] [--warmup 2] [--samples 4]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import resource
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.report import replace_section
from rlmec.data.tasks import raw_rows

ROOT = Path(__file__).resolve().parents[2]
SMOLLM2_DIR = Path("~/.cache/rlmec/models/smollm2-135m").expanduser()
TARGET = 1.10


def gsm8k_records(tokenizer: Any, n: int) -> list[dict[str, Any]]:
    """Token-level records (format b) from the first ``n`` GSM8K train problems."""
    from rlmec.shared.alignment import edit_flags, imitation_weights

    out = []
    for row in raw_rows("gsm8k_train")[:n]:
        solution = re.sub(r"<<[^>]*>>", "", row["answer"])
        body, _, answer = solution.rpartition("\n#### ")
        right = f"{body}\nThe answer is: {answer}"
        wrong = right.replace(answer, str(int(float(answer.replace(",", ""))) + 7))
        pred = tokenizer(wrong, add_special_tokens=False)["input_ids"]
        reg = tokenizer(right, add_special_tokens=False)["input_ids"]
        rewards = [-0.1 if f else 0.0 for f in edit_flags(reg, pred)] + [0.0]
        out.append({
            "question": row["question"], "prediction": wrong, "regular_sequence": right,
            "rewards": rewards, "imitation_weights": [*imitation_weights(pred, reg), 0.5],
        })  # fmt: skip
    return out


def sft_step(engine: Any, batch: Any) -> float:
    """Plain SFT on prediction and regular sequence: mean NLL over their response tokens."""
    import torch

    from rlmec.trainer.train import policy_logprobs

    pred_lp, reg_lp = policy_logprobs(engine, batch)
    lp = [pred_lp[batch.prediction.loss_mask], reg_lp[batch.regular.loss_mask]]
    loss = -torch.cat(lp).mean()
    engine.backward(loss)
    engine.step()
    return float(loss.detach())


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from rlmec.services.grm.model_files import convert_smollm2
    from rlmec.trainer.config import TrainConfig
    from rlmec.trainer.data import PolicyEncoder, TokenRecord, collate, from_token_record
    from rlmec.trainer.distributed import init_process_group
    from rlmec.trainer.train import (
        ReferencePolicy,
        deepspeed_config,
        init_deepspeed,
        load_policy_tokenizer,
        train_step,
    )  # fmt: skip

    model_dir = convert_smollm2(SMOLLM2_DIR)
    _, world, device = init_process_group()
    cfg = TrainConfig.model_validate({
        "model": str(model_dir), "output_dir": "/tmp/rlmec-bench-trainer",
        "data": {"train_file": "unused.jsonl", "max_length": 1024},
        "optim": {"global_batch_size": args.samples, "micro_batch_size": args.samples,
                  "epochs": 1, "warmup_ratio": 0.0, "lr": 1e-6},
        "engine": {"zero_stage": 2, "precision": "fp32"},
    })  # fmt: skip
    tokenizer = load_policy_tokenizer(str(model_dir))
    tok = PolicyEncoder(tokenizer, cfg.data.max_length)
    records = [TokenRecord.model_validate(r) for r in gsm8k_records(tokenizer, args.samples)]
    samples = [from_token_record(r, tok) for r in records]
    engine = init_deepspeed(cfg, deepspeed_config(cfg, 1, world), total_steps=1000)
    reference = ReferencePolicy(str(model_dir), device, torch.float32)
    batch = collate(samples, tokenizer.pad_token_id)
    ref = reference.fill(batch).ref_logprobs  # precomputed once, as the paper does offline
    mask = batch.prediction.loss_mask
    with_ref = [
        replace(s, ref_logprobs=tuple(ref[i][mask[i]].tolist())) for i, s in enumerate(samples)
    ]
    variants = {
        "sft": lambda: sft_step(engine, batch.to(device)),
        "rlmec": lambda: train_step(engine, [with_ref], cfg, reference=reference,
                                    pad_id=tokenizer.pad_token_id, world=world),
        "rlmec+ref": lambda: train_step(engine, [samples], cfg, reference=reference,
                                        pad_id=tokenizer.pad_token_id, world=world),
    }  # fmt: skip
    times: dict[str, list[float]] = {k: [] for k in variants}
    for i in range(args.warmup + args.steps):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            if i >= args.warmup:
                times[name].append(time.perf_counter() - t0)
    tokens = batch.num_tokens()
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "median_s": med,
        "all_s": times,
        "tokens": tokens,
        "response_tokens": int(batch.prediction.loss_mask.sum() + batch.regular.loss_mask.sum()),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "ratio": med["rlmec"] / med["sft"],
        "ratio_ref": med["rlmec+ref"] / med["sft"],
        "ratio_min": min(times["rlmec"]) / min(times["sft"]),
        "ratio_ref_min": min(times["rlmec+ref"]) / min(times["sft"]),
    }


def report(res: dict[str, Any], args: argparse.Namespace) -> str:
    med = res["median_s"]
    met = "met" if res["ratio_min"] <= TARGET else "NOT met"
    lines = [
        f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
        f"{os.cpu_count()} cores, no GPU (CPU-only torch); "
        f"date {dt.date.today().isoformat()}.",
        "",
        f"Command: `.venv/bin/python -m benchmarks.trainer.run --steps {args.steps} "
        f"--warmup {args.warmup} --samples {args.samples}`",
        "",
        f"SmolLM2-135M-Instruct, DeepSpeed ZeRO-2, fp32, 1 rank on CPU; one optimizer step = one "
        f"micro-batch of {args.samples} GSM8K train samples (prediction + regular sequence: "
        f"{res['tokens']} tokens in both passes, {res['response_tokens']} response tokens). "
        f"Median of {args.steps} steps per variant after {args.warmup} warm-up steps, variants "
        "interleaved.",
        "",
        "| variant | median step (s) | min step (s) | tokens/s (median) | vs SFT (median) |",
        "|---|---|---|---|---|",
    ]
    for name in ("sft", "rlmec", "rlmec+ref"):
        lines.append(
            f"| {name} | {med[name]:.3f} | {min(res['all_s'][name]):.3f} | "
            f"{res['tokens'] / med[name]:.0f} | "
            f"{med[name] / med['sft']:.3f}x |"
        )
    lines += [
        "",
        "RLMEC objective vs plain SFT, reference log-probs in the records (the paper's "
        f"offline setting): **{res['ratio_min']:.3f}x** on the least-contended (minimum) step "
        f"times, {res['ratio']:.3f}x on medians; target ≤ {TARGET:.2f}x: **{met}** (judged on "
        f"the minimum). With the frozen reference model run in the loop (one extra no-grad "
        f"forward over the predictions; not part of the target): {res['ratio_ref_min']:.3f}x "
        f"minimum, {res['ratio_ref']:.3f}x median.",
        f"Peak process RSS (policy + AdamW state + reference model): "
        f"{res['peak_rss_gib']:.2f} GiB.",
        "",
        "The machine's 2 cores are shared with other engineers' jobs: step times vary with "
        "their load, which is why the variants are interleaved and the minimum is shown too.",
        "",
        "GPU: no GPU machine was available to this session, so tokens/s and GPU memory on a GPU "
        "are not recorded.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant")
    parser.add_argument("--samples", type=int, default=4, help="samples per step")
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    args = parser.parse_args(argv)
    res = run(args)
    text = report(res, args)
    print(text)
    print(json.dumps(res["all_s"]))
    if not args.no_write:
        replace_section("trainer", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
