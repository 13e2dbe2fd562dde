"""Weight refresh side by side (issue 32): the rollout actor's engine loading one published
policy version the old way and the new way, interleaved, in one run.

- **disk**: the version's directory under ``publish_dir``, just written (so in the page cache,
  as in the loop), and the engine hashing its files for a revision (before issue 32);
- **memory**: the same directory in shared memory (tmpfs, where the trainer now writes it
  first), with the revision named by the version record (no hashing).

Both go through vLLM's in-place reload of the running engine (``collective_rpc
("reload_weights")``). The version is the start model saved in fp32, as the trainer publishes
it. Appends the figures to the ``## online`` section of BENCHMARKS.md:
``.venv/bin/python -m benchmarks.online.reload [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import cast

from benchmarks.report import set_line, stamp

MODEL = Path.home() / ".cache/rlmec/models/smollm2-135m"
PREFIX = "Weight reload side by side"


def publish(model: Path, disk: Path, memory: Path) -> None:
    """The start model as the trainer publishes a version: fp32 safetensors + tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for out in (disk, memory):
        shutil.rmtree(out, ignore_errors=True)
    AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).save_pretrained(disk)
    AutoTokenizer.from_pretrained(model).save_pretrained(disk)
    shutil.copytree(disk, memory)


async def measure(model: Path, disk: Path, memory: Path, rounds: int) -> dict[str, list[float]]:
    from rlmec.inference import create_engine
    from rlmec.inference.engine import ReloadableEngine
    from rlmec.inference.settings import EngineSettings

    # The vllm engine reloads in place (isinstance on the protocol would read its tokenizer,
    # which does not exist before start()).
    engine = cast(ReloadableEngine, create_engine(EngineSettings(
        model=str(model), engine="vllm", max_model_len=1024, kv_cache_gib=1.0)))  # fmt: skip
    await engine.start()
    times: dict[str, list[float]] = {"disk": [], "memory": []}
    try:
        await engine.reload_weights(memory, revision="warm-up")  # the first call pays setup
        for i in range(rounds):
            for way in ("disk", "memory") if i % 2 == 0 else ("memory", "disk"):
                t0 = time.perf_counter()
                if way == "disk":
                    await engine.reload_weights(disk)
                else:
                    await engine.reload_weights(memory, revision=f"policy-v{i}")
                times[way].append(time.perf_counter() - t0)
                print(f"{way}: {times[way][-1]:.2f} s", flush=True)
    finally:
        await engine.close()
    return times


def line(times: dict[str, list[float]], command: str) -> str:
    old, new = (statistics.median(times[w]) for w in ("disk", "memory"))
    spread = {w: f"min {min(v):.2f}, max {max(v):.2f}" for w, v in times.items()}
    return (
        f"{PREFIX} (SmolLM2-135M, fp32 version, vllm engine, {len(times['disk'])} rounds "
        f"interleaved; {stamp(command)}): from "
        f"disk with hashing {old:.2f} s ({spread['disk']}), from shared memory {new:.2f} s "
        f"({spread['memory']}): disk / memory **{old / new:.2f}x**. `weight reload: "
        f"{new:.1f} s` (median, the actor's path now)."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", type=Path, default=MODEL, help="the policy's start model")
    parser.add_argument("--rounds", type=int, default=5, help="reloads of each way")
    parser.add_argument("--workdir", type=Path, default=Path.home() / ".cache/rlmec/bench-reload")
    parser.add_argument("--memory-dir", type=Path, default=Path("/dev/shm/rlmec-bench-reload"),
                        help="a tmpfs directory (removed after)")  # fmt: skip
    parser.add_argument("--no-write", action="store_true", help="print, leave BENCHMARKS.md")
    args = parser.parse_args(argv)
    if not (args.model / "config.json").is_file():
        parser.error(f"--model {args.model}: no config.json; run `rlmec grm convert-smollm2`")
    disk, memory = args.workdir / "v000001", args.memory_dir / "v000001"
    publish(args.model, disk, memory)
    try:
        times = asyncio.run(measure(args.model, disk, memory, args.rounds))
    finally:
        shutil.rmtree(args.memory_dir, ignore_errors=True)
    text = line(times, f".venv/bin/python -m benchmarks.online.reload --rounds {args.rounds}")
    print(text)
    if not args.no_write:
        set_line("online", PREFIX, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
