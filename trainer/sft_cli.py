"""``rlmec grm train --config grm-cpu.yaml [--set KEY=VALUE ...]``: GRM supervised fine-tuning.

Registered under ``rlmec grm`` next to the service's own subcommands (the top-level CLI joins
them), so making a GRM and serving it read as one area. Heavy imports happen inside the command.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from rlmec.shared.settings_cli import deprecated_alias
from rlmec.trainer.cli import check_paths


def add_subcommands(sub: Any) -> None:
    train = sub.add_parser(
        "train",
        help="fine-tune a GRM on `rlmec data grm-sft` examples (DeepSpeed)",
        description="Causal-LM SFT of a GRM, loss on the target tokens only (method §1 step "
        "4). The shipped configs: grm-paper.yaml (the paper's settings), grm-cpu.yaml.",
    )
    train.add_argument("--config", default="grm-cpu.yaml", metavar="FILE",
                       help="YAML/JSON config; shipped ones are found by name")  # fmt: skip
    train.add_argument("--set", dest="overrides", action="append", default=[],
                       metavar="KEY=VALUE", help="override a setting (repeatable)")  # fmt: skip
    train.add_argument("--model", default=None, help="shortcut for --set model=DIR")
    train.add_argument("--input", dest="train_file", default=None,
                       help="training examples (JSONL): data.train_file")  # fmt: skip
    deprecated_alias(train, "--train-file", "--input")
    train.add_argument("--output", dest="output_dir", default=None,
                       help="output dir, a shortcut for --set output_dir=DIR")  # fmt: skip
    deprecated_alias(train, "--output-dir", "--output")
    train.add_argument("--print-config", action="store_true", help="print it and exit")
    train.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)
    train.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rlmec.trainer.config import ConfigError, load_recipe_config
    from rlmec.trainer.sft import SftConfig

    shortcuts = {"model": args.model, "data.train_file": args.train_file,
                 "output_dir": args.output_dir}  # fmt: skip
    overrides = [*args.overrides, *(f"{k}={v}" for k, v in shortcuts.items() if v)]
    try:
        cfg = load_recipe_config(args.config, overrides, SftConfig)
    except ConfigError as exc:
        return _fail(str(exc))
    if args.print_config:
        print(cfg.model_dump_json(indent=2))
        return 0
    problem = check_paths(cfg.model, cfg.data.train_file)
    if problem is None and cfg.data.eval_file and not os.path.isfile(cfg.data.eval_file):
        problem = f"data.eval_file ({cfg.data.eval_file!r}) does not exist; give a JSONL file path"
    if problem:
        return _fail(problem)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from rlmec.trainer.data import DataError
    from rlmec.trainer.sft import train_grm

    try:
        result = train_grm(cfg)
    except (ConfigError, DataError) as exc:
        return _fail(str(exc))
    if os.environ.get("RANK", "0") == "0":
        print(
            f"rlmec grm train: {result.steps} steps done ({result.skipped} examples skipped); "
            f"serve it with: rlmec grm serve --model {result.final_dir}"
        )
    return 0


def _fail(message: str) -> int:
    print(f"rlmec grm train: {message}", file=sys.stderr)
    return 2
