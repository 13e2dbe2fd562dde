"""Run every benchmark in turn (``make bench``); each writes its own section of BENCHMARKS.md.

    .venv/bin/python -m benchmarks.run [--only grm,reward]

Each benchmark runs in its own process (vLLM and DeepSpeed want a clean one), one after the
other so they never compete for the 2 cores.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

BENCHMARKS: dict[str, list[str]] = {
    "alignment": ["benchmarks.alignment.run"],
    "answers": ["benchmarks.alignment.answers"],
    "grm": ["benchmarks.grm.run"],
    "reward": ["benchmarks.reward.run"],
    "get_reward": ["benchmarks.get_reward.run"],
    "fairness": ["benchmarks.fairness.run"],
    "robustness": ["benchmarks.robustness.run"],
    "queue": ["benchmarks.queue.run"],
    "trainer": ["benchmarks.trainer.run"],
    "eval": ["benchmarks.eval.run"],
    "grm_quality": ["benchmarks.grm_quality.run"],
    "speculative": ["benchmarks.grm.speculative"],  # rewrites with the GRM grm_quality made
    "online": ["benchmarks.online.run"],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", default="", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}"
    )
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    failed = []
    for name in names:
        for module in BENCHMARKS[name]:
            print(f"=== {name}: python -m {module}", flush=True)
            start = time.monotonic()
            code = subprocess.call([sys.executable, "-m", module])
            print(f"=== {name}: exit {code} after {time.monotonic() - start:.0f} s", flush=True)
            if code != 0:
                failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
