"""The trainer against the hardware limit (issue 32, item 4): the old path and the new one,
optimizer steps interleaved in one run, and the achieved FLOP/s against the machine's measured
matmul ceiling.

- **old**: the online loop's trainer before issue 32: fp32 everywhere, each micro-batch padded
  to its longest sequence (both passes), ZeRO-2, torch's foreach AdamW;
- **new**: the online loop's trainer now: ``engine.precision: autocast`` (bf16 matmuls where the
  CPU computes bf16 natively: AVX-512 BF16 or AMX; fp32 where bf16 would be emulated),
  ``engine.packing: true``, ZeRO-0 (one rank: nothing to partition, and no gradient all-reduce),
  ``optim.fused: true`` (torch's fused AdamW).

Both are the trainer's own ``train_step`` on a DeepSpeed engine (one rank, CPU) with
SmolLM2-135M-Instruct, the RLMEC objective, steps of ``--batch`` GSM8K records (the same
records in the same order for both, the reference log-probs in the records: the online loop's
case, where the actor sends them). FLOPs per step = 6 x parameters x non-pad tokens (forward
and backward; attention's own FLOPs left out, small at these lengths). The ceiling: the median
time of a 2048 x 2048 ``torch.mm`` in each precision on these cores.
Adds its lines to ``## trainer``: ``.venv/bin/python -m benchmarks.trainer.paths``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from benchmarks.report import set_line, stamp
from benchmarks.trainer.run import SMOLLM2_DIR, gsm8k_records
from rlmec.loop.demo import TRAINER_ENGINE

PREFIX = "Trainer paths side by side"


def matmul_ceiling(dtype: Any, n: int = 2048, reps: int = 5) -> float:
    """FLOP/s of an ``n x n`` matmul in ``dtype`` on this process's threads (median)."""
    import torch

    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times)


OLD = {"engine": {"zero_stage": 2, "precision": "fp32", "packing": False}, "fused": False}
NEW = {"engine": TRAINER_ENGINE, "fused": True}  # the demo's and benchmarks.online's trainer


def make_path(model_dir: str, batch: int, path: dict[str, Any]) -> tuple[Any, Any]:
    from rlmec.trainer.config import TrainConfig
    from rlmec.trainer.train import deepspeed_config, init_deepspeed

    cfg = TrainConfig.model_validate({
        "model": model_dir, "output_dir": "/tmp/rlmec-bench-trainer-paths",
        "data": {"train_file": "unused.jsonl", "max_length": 1024},
        "optim": {"global_batch_size": batch, "micro_batch_size": batch, "epochs": 1,
                  "warmup_ratio": 0.0, "lr": 1e-6, "fused": path["fused"]},
        "engine": path["engine"],
    })  # fmt: skip
    return cfg, init_deepspeed(cfg, deepspeed_config(cfg, 1, 1), total_steps=1000)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from rlmec.services.grm.model_files import convert_smollm2
    from rlmec.trainer.data import PolicyEncoder, TokenRecord, collate, from_token_record
    from rlmec.trainer.distributed import init_process_group
    from rlmec.trainer.train import ReferencePolicy, load_policy_tokenizer, train_step

    model_dir = str(convert_smollm2(SMOLLM2_DIR))
    _, world, device = init_process_group()
    tokenizer = load_policy_tokenizer(model_dir)
    n = args.batch * (args.warmup + args.steps)
    paths = {"old": make_path(model_dir, args.batch, OLD),
             "new": make_path(model_dir, args.batch, NEW)}  # fmt: skip
    cfg_old = paths["old"][0]
    tok = PolicyEncoder(tokenizer, cfg_old.data.max_length)
    records = [TokenRecord.model_validate(r) for r in gsm8k_records(tokenizer, n)]
    samples = [from_token_record(r, tok) for r in records]
    # Reference log-probs in the records, as the rollout actor sends them: no frozen model.
    reference = ReferencePolicy(model_dir, device, torch.float32)
    batches = []
    for i in range(0, n, args.batch):
        part = samples[i : i + args.batch]
        filled = reference.fill(collate(part, tokenizer.pad_token_id))
        batches.append([_with_ref(s, filled, j) for j, s in enumerate(part)])
    params = sum(p.numel() for p in paths["old"][1].module.parameters())
    times: dict[str, list[float]] = {"old": [], "new": []}
    tokens = []
    for i, step in enumerate(batches):
        padded = collate(step, tokenizer.pad_token_id)
        if i >= args.warmup:
            tokens.append(padded.num_tokens())
        for name in ("old", "new") if i % 2 == 0 else ("new", "old"):
            cfg, engine = paths[name]
            t0 = time.perf_counter()
            train_step(engine, [step], cfg, reference=reference, pad_id=tokenizer.pad_token_id,
                       world=world)  # fmt: skip
            if i >= args.warmup:
                times[name].append(time.perf_counter() - t0)
        print(f"step {i}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items() if v),
              flush=True)  # fmt: skip
    precision = paths["new"][0].engine.precision
    return {
        "times": times, "params": params, "tokens": tokens, "new_precision": precision,
        "ceiling_fp32": matmul_ceiling(torch.float32),
        "ceiling_bf16": matmul_ceiling(torch.bfloat16),
    }  # fmt: skip


def _with_ref(sample: Any, filled: Any, j: int) -> Any:
    from dataclasses import replace

    mask = filled.prediction.loss_mask[j]
    return replace(sample, ref_logprobs=tuple(filled.ref_logprobs[j][mask].tolist()))


def lines(r: dict[str, Any], args: argparse.Namespace) -> list[str]:
    old, new = (sum(r["times"][k]) for k in ("old", "new"))
    steps = len(r["times"]["old"])
    flops = 6 * r["params"] * sum(r["tokens"])
    bf16 = r["new_precision"] == "autocast"
    ceiling_new = r["ceiling_bf16"] if bf16 else r["ceiling_fp32"]
    speed = old / new
    verdict = "met" if speed >= 2.0 else "NOT met"
    command = (f".venv/bin/python -m benchmarks.trainer.paths --batch {args.batch} "
               f"--steps {args.steps} --warmup {args.warmup}")  # fmt: skip
    return [
        f"{PREFIX} ({stamp(command)}): "
        f"{steps} steps of {args.batch} GSM8K records each, alternating; "
        "old = fp32, padded, ZeRO-2, foreach AdamW: "
        f"{args.batch * steps / old:.3f} samples/s, {flops / old / 1e9:.1f} GFLOP/s "
        f"({flops / old / r['ceiling_fp32']:.0%} of the fp32 matmul ceiling, "
        f"{r['ceiling_fp32'] / 1e9:.0f} GFLOP/s); new = {r['new_precision']}, packed, ZeRO-0, "
        "fused AdamW: "
        f"{args.batch * steps / new:.3f} samples/s, {flops / new / 1e9:.1f} GFLOP/s "
        f"({flops / new / ceiling_new:.0%} of the {'bf16' if bf16 else 'fp32'} ceiling, "
        f"{ceiling_new / 1e9:.0f} GFLOP/s).",
        f"`trained samples/s new / old: {speed:.1f}x` (target ≥ 2x: {verdict}; the trainer "
        "alone, steps interleaved; `benchmarks.online` runs the whole loop on these cores)",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--batch", type=int, default=2, help="samples per optimizer step")
    parser.add_argument("--steps", type=int, default=8, help="timed steps of each path")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--no-write", action="store_true", help="print, leave BENCHMARKS.md")
    args = parser.parse_args(argv)
    result = run(args)
    text = lines(result, args)
    print("\n".join(text))
    if not args.no_write:
        set_line("trainer", PREFIX, text[0])
        set_line("trainer", "`trained samples/s new / old:", text[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
