"""``rlmec eval``: evaluate a policy on the test sets; ``rlmec eval compare A B``."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

from rlmec.data.tasks import resolve_tasks
from rlmec.inference.settings import (
    add_engine_arguments,
    check_engine_arguments,
    engine_settings_from,
)

DEFAULT_OUTPUT = Path("runs/eval")


def add_commands(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Zero-shot greedy accuracy on the RLMEC test sets (method §7): "
        "`rlmec eval --model DIR --tasks all --limit 200`, then "
        "`rlmec eval compare A/results.json B/results.json`."
    )
    add_engine_arguments(parser)
    parser.add_argument("--tasks", default="all", help="comma-separated task names, or all")
    parser.add_argument("--limit", type=int, default=None,
                        help="a fixed, seeded subset of N rows per task")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of the --limit subset")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="samples.jsonl per task, results.json; reruns resume")  # fmt: skip
    parser.add_argument("--chunk-size", type=int, default=512,
                        help="prompts per engine call")  # fmt: skip
    parser.add_argument("--answer-check-timeout-s", type=float, default=5.0,
                        help="seconds one answer check may take (§4)")  # fmt: skip
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="generation budget for every task (default: math 1024, qa 512, "
        "as the paper); a shorter one makes a quick check, not a paper number",
    )
    parser.set_defaults(func=run_command)
    sub = parser.add_subparsers(dest="eval_command", metavar="SUBCOMMAND")
    cmp = sub.add_parser("compare", help="two evaluations side by side, with 95%% intervals")
    cmp.add_argument("a", type=Path, help="results.json (or its directory) of model A")
    cmp.add_argument("b", type=Path, help="results.json (or its directory) of model B")
    cmp.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    cmp.add_argument("--plot", type=Path, default=None, metavar="PNG",
                     help="also draw each task's accuracies and B's interval into PNG")  # fmt: skip
    cmp.set_defaults(func=compare_command)


def _fail(message: str) -> int:
    print(f"rlmec eval: {message}", file=sys.stderr)
    return 2


def run_command(args: argparse.Namespace) -> int:
    problem = check_engine_arguments(args)
    if problem:
        return _fail(problem)
    if args.limit is not None and args.limit < 1:
        return _fail(f"--limit ({args.limit}) must be at least 1")
    if args.chunk_size < 1:
        return _fail(f"--chunk-size ({args.chunk_size}) must be at least 1")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        return _fail(f"--max-new-tokens ({args.max_new_tokens}) must be at least 1")
    try:
        tasks = resolve_tasks(args.tasks)
    except ValueError as exc:
        return _fail(f"--tasks: {exc}")
    from rlmec.shared.errors import RlmecError

    try:
        document = asyncio.run(_evaluate(args, tasks))
    except (RlmecError, FileNotFoundError, ValueError) as exc:
        return _fail(str(getattr(exc, "message", exc)))
    print(format_table(document))
    print(f"\nwrote {args.output / 'results.json'}")
    return 0


async def _evaluate(args: argparse.Namespace, tasks: list[str]) -> dict[str, Any]:
    from tqdm import tqdm

    from rlmec.evaluation.run import EvalConfig, evaluate_task, results_document, write_results
    from rlmec.inference import create_engine
    from rlmec.shared.checking import AnswerChecker

    settings = engine_settings_from(args)
    config = EvalConfig(tasks=tasks, limit=args.limit, seed=args.seed, chunk_size=args.chunk_size)
    if args.max_new_tokens is not None:
        budget = {task: args.max_new_tokens for task in config.max_new_tokens}
        config = dataclasses.replace(config, max_new_tokens=budget)
    args.output.mkdir(parents=True, exist_ok=True)
    engine = create_engine(settings)
    started = time.perf_counter()
    await engine.start()
    try:
        with AnswerChecker(timeout_s=args.answer_check_timeout_s) as checker:
            results = []
            for task in tasks:
                with tqdm(desc=task, unit="row", dynamic_ncols=True) as bar:
                    results.append(
                        await evaluate_task(engine, checker, task, config, args.output, bar)
                    )
    finally:
        await engine.close()
    document = results_document(
        results, model=str(args.model), engine=args.engine, config=config,
        seconds=time.perf_counter() - started,
    )  # fmt: skip
    write_results(args.output, document)
    return document


def format_table(document: dict[str, Any]) -> str:
    rows = document["tasks"]
    lines = [f"{'task':<12} {'accuracy':>9} {'correct':>8} {'rows':>6} {'tokens/s':>9}"]
    lines.append("-" * len(lines[0]))
    for task, r in rows.items():
        rate = r["generated_tokens"] / r["seconds"] if r["seconds"] else 0.0
        lines.append(
            f"{task:<12} {100 * r['accuracy']:>8.1f}% {r['correct']:>8} {r['total']:>6} "
            f"{rate:>9.0f}"
        )
        if "line_accuracy" in r:  # a task with lines: K trials a problem
            lines.append(f"{'  per line':<12} {100 * r['line_accuracy']:>8.1f}% of {r['lines']}")
    if rows:
        mean = sum(r["accuracy"] for r in rows.values()) / len(rows)
        lines.append(f"{'mean':<12} {100 * mean:>8.1f}%")
    return "\n".join(lines)


def compare_command(args: argparse.Namespace) -> int:
    from rlmec.evaluation.compare import compare, format_comparison

    try:
        rows = compare(args.a, args.b, seed=args.seed)
    except (FileNotFoundError, ValueError) as exc:
        return _fail(str(exc))
    print(format_comparison(rows, "A", "B"))
    print(f"\nA = {args.a}\nB = {args.b}")
    if args.plot is not None:
        from rlmec.plots.compare import plot_comparison

        print(f"plot: {plot_comparison(rows, args.plot)}")
    return 0
