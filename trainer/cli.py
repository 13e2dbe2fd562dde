"""``rlmec train --config FILE [--set KEY=VALUE ...]``: offline (JSONL) or online (stream).

One process on CPU, or several ranks with ``torchrun --nproc_per_node N -m rlmec train ...``
or ``deepspeed --module rlmec train ...``. Heavy imports happen inside the command only.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from rlmec.shared.settings_cli import deprecated_alias


def add_commands(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        required=True,
        metavar="FILE",
        help="YAML/JSON training config; the shipped 'paper.yaml' and 'tiny-cpu.yaml' are "
        "found by name",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. --set optim.lr=1e-5 --set engine.zero_stage=2 "
        "(repeatable; values are parsed as YAML)",
    )
    parser.add_argument("--output", dest="output_dir", default=None,
                        help="output dir, a shortcut for --set output_dir=DIR")  # fmt: skip
    deprecated_alias(parser, "--output-dir", "--output")
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )
    # The deepspeed launcher passes --local_rank to every rank; LOCAL_RANK is read from the env.
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)
    parser.set_defaults(func=run)


def check_paths(model: str, train_file: str | None) -> str | None:
    if not (Path(model) / "config.json").is_file():
        return (
            f"model ({model!r}) is not a local model directory with a config.json; give the "
            "path of a save_pretrained directory (there is no model hub here)"
        )
    if train_file is not None and not Path(train_file).is_file():
        return f"data.train_file ({train_file!r}) does not exist; give a JSONL file path"
    return None


def run(args: argparse.Namespace) -> int:
    from rlmec.trainer.config import ConfigError, load_config

    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as exc:
        print(f"rlmec train: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(cfg.model_dump_json(indent=2))
        return 0
    problem = check_paths(cfg.model, cfg.data.train_file if cfg.data.mode == "offline" else None)
    if problem:
        print(f"rlmec train: {problem}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from rlmec.trainer.data import DataError
    from rlmec.trainer.train import train

    try:
        result = train(cfg)
    except (ConfigError, DataError) as exc:
        print(f"rlmec train: {exc}", file=sys.stderr)
        return 2
    if os.environ.get("RANK", "0") == "0":
        print(f"rlmec train: {result.steps} steps done; model saved to {result.final_dir}")
    return 0
