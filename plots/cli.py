"""``rlmec plot RUN_DIR``: the training curves of a run, now (``rlmec train`` and ``rlmec grm
train`` also write them when they end)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_commands(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Draw the curves of an `rlmec train` or `rlmec grm train` output directory "
        "(metrics.jsonl, and eval.jsonl when present) into RUN_DIR/curves.png, during the run "
        "or after it."
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the run's output_dir")
    parser.add_argument("--output", type=Path, default=None,
                        help="the PNG to write (default: RUN_DIR/curves.png)")  # fmt: skip
    parser.set_defaults(func=plot_command)


def plot_command(args: argparse.Namespace) -> int:
    from rlmec.plots.curves import NoMetrics, plot_run

    try:
        path = plot_run(args.run_dir, args.output)
    except NoMetrics as exc:
        print(f"rlmec plot: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0
