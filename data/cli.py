"""``rlmec data ...``: the offline pipeline that makes a GRM's training data (method §1).

    rlmec data sample  --model POLICY --limit 500 --output runs/data/samples.jsonl
    rlmec data distill --input runs/data/samples.jsonl --output runs/data/teacher.jsonl \
        --protocol openai --url https://api.example.com/v1 --teacher-model NAME
    rlmec data distill --teacher arith --input samples.jsonl --output teacher.jsonl   # exact
    rlmec data synth   --tasks gsm8k_train --limit 2000 --output runs/data/synth.jsonl
    rlmec data grm-sft --input runs/data/synth.jsonl --output runs/data/grm_sft.jsonl
    rlmec data signals --input runs/data/samples.jsonl --output runs/data/signals.jsonl \
        --reward-url http://127.0.0.1:8002 --policy POLICY

Every step appends to its output and skips the rows already there, so a rerun after an
interruption continues where it stopped; each prints a summary at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from rlmec.data.procedural.registry import TASKS as EXACT_TEACHERS
from rlmec.data.tasks import TASKS, resolve_tasks
from rlmec.inference.settings import (
    add_engine_arguments,
    check_engine_arguments,
    engine_settings_from,
)
from rlmec.shared.schemas import RewardParams
from rlmec.shared.settings_cli import add_setting_flags, deprecated_alias, model_from_flags

SYNTH_KINDS = ("number", "operation", "arithmetic")


def add_commands(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Make a GRM's training data (method §1): sample (the policy's solutions), distill (a "
        "teacher locates and rewrites the wrong ones), synth (a free synthetic teacher for "
        "math), grm-sft (GRM training examples from the records), signals (the RLMEC signals "
        "of samples as rlmec train's records)."
    )
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    _add_sample(sub)
    _add_distill(sub)
    _add_synth(sub)
    _add_grm_sft(sub)
    _add_signals(sub)


def _add_sample(sub: Any) -> None:
    sample = sub.add_parser("sample", help="the policy writes n solutions per problem, judged")
    add_engine_arguments(sample)
    sample.add_argument("--tasks", default="gsm8k_train", help="comma-separated task names")
    sample.add_argument("--limit", type=int, default=None, help="a seeded subset of N problems")
    sample.add_argument("--n", type=int, default=5, help="solutions per problem (paper: 5)")
    sample.add_argument("--temperature", type=float, default=0.7, help="paper: 0.7")
    sample.add_argument("--top-p", type=float, default=0.95, help="paper: 0.95")
    sample.add_argument("--max-new-tokens", type=int, default=512, help="paper: 512")
    sample.add_argument("--seed", type=int, default=0, help="subset and sampling seed")
    sample.add_argument("--chunk-size", type=int, default=64, help="problems per engine call")
    sample.add_argument("--output", type=Path, required=True, help="JSONL of records (appended)")
    sample.set_defaults(func=sample_command)


def _add_distill(sub: Any) -> None:
    distill = sub.add_parser("distill", help="a teacher locates and rewrites the wrong samples")
    distill.add_argument("--input", type=Path, required=True, help="records (rlmec data sample)")
    distill.add_argument("--output", type=Path, required=True, help="JSONL of records (appended)")
    distill.add_argument(
        "--teacher",
        choices=["model", *EXACT_TEACHERS],
        default="model",
        help="model: a chat model at --url; arith, lines, paths: the exact, model-free teacher "
        "of that procedural task (no endpoint, no key)",
    )
    distill.add_argument("--protocol", choices=["openai", "anthropic"], default="openai",
                         help="OpenAI chat completions or Anthropic Messages")  # fmt: skip
    distill.add_argument("--url", dest="base_url", default=None,
                         help="the endpoint's base URL, with or without /v1 for either "
                         "protocol, e.g. http://127.0.0.1:8000/v1 (required with --teacher "
                         "model)")  # fmt: skip
    deprecated_alias(distill, "--base-url", "--url")
    distill.add_argument(
        "--teacher-model",
        default=None,
        help="model name at the endpoint (required with --teacher model)",
    )
    distill.add_argument("--api-key-env", default=None,
                         help="variable holding the key (default OPENAI_API_KEY or "
                         "ANTHROPIC_API_KEY)")  # fmt: skip
    distill.add_argument("--concurrency", type=int, default=8, help="teacher calls in flight")
    distill.add_argument("--max-tokens", type=int, default=1024, help="rewrite reply budget")
    distill.add_argument("--timeout", type=float, default=120.0, help="seconds per call")
    distill.add_argument("--max-retries", type=int, default=6,
                         help="SDK retries on 429/5xx/timeouts, honouring Retry-After")  # fmt: skip
    distill.add_argument("--extra-body", type=json.loads, default=None, metavar="JSON",
                         help="anthropic: extra request fields, e.g. '{\"temperature\": 0}' "
                         "for an endpoint that takes one")  # fmt: skip
    distill.add_argument("--price-input", type=float, default=0.0, help="$ per 1M input tokens")
    distill.add_argument("--price-output", type=float, default=0.0, help="$ per 1M output tokens")
    distill.add_argument("--released-output", type=Path, default=None,
                         help="also write all records in the released code's schema")  # fmt: skip
    distill.add_argument("--no-continue-prefill", action="store_true",
                         help="openai: the server cannot continue an assistant turn")  # fmt: skip
    distill.set_defaults(func=distill_command)


def _add_signals(sub: Any) -> None:
    signals = sub.add_parser("signals", help="RLMEC signals of samples as trainer records")
    signals.add_argument("--input", type=Path, required=True, help="records (sample/distill)")
    signals.add_argument("--output", type=Path, required=True, help="JSONL for rlmec train")
    signals.add_argument("--reward-url", required=True, help="the reward service's base URL")
    signals.add_argument("--api-key-env", default="RLMEC_API_KEY", help="variable with the key")
    signals.add_argument("--policy", default=None, metavar="DIR",
                         help="initial policy: add its reference log-probs (§3.2)")  # fmt: skip
    signals.add_argument("--policy-engine", choices=["vllm", "hf"], default="vllm",
                         help="the engine of --policy's reference log-probs")  # fmt: skip
    signals.add_argument("--batch-size", type=int, default=32, help="samples per request")
    signals.add_argument("--use-rewrites", action="store_true",
                         help="send accepted teacher/synthetic rewrites along "
                         "(the GRM then only scores)")  # fmt: skip
    add_setting_flags(signals, RewardParams, RewardParams.model_fields)  # §3.1 shaping
    signals.set_defaults(func=signals_command)


def _add_synth(sub: Any) -> None:
    synth = sub.add_parser(
        "synth", help="SYNTHETIC wrong solutions with their exact first wrong step and rewrite"
    )
    synth.add_argument("--tasks", dest="task", default="gsm8k_train",
                       help="a math task")  # fmt: skip
    deprecated_alias(synth, "--task", "--tasks")
    synth.add_argument("--limit", type=int, default=None, help="a seeded subset of N problems")
    synth.add_argument("--seed", type=int, default=0, help="subset and corruption seed")
    synth.add_argument("--kinds", default=",".join(SYNTH_KINDS),
                       help="corruptions to use: number, operation, arithmetic")  # fmt: skip
    synth.add_argument("--output", type=Path, required=True, help="JSONL of records (appended)")
    synth.set_defaults(func=synth_command)


def _add_grm_sft(sub: Any) -> None:
    sft = sub.add_parser("grm-sft", help="locate/rewrite/identity GRM examples from records")
    sft.add_argument("--input", dest="records", type=Path, action="append", metavar="FILE",
                     help="record JSONL (synth, distill or sample output); repeatable")  # fmt: skip
    deprecated_alias(sft, "--records", "--input", append=True, type=Path)
    sft.add_argument("--output", type=Path, required=True, help="JSONL of SFT examples")
    sft.add_argument("--seed", type=int, default=0, help="identity sampling and order seed")
    sft.add_argument("--identity-rate", type=float, default=None,
                     help="share of correct samples made identity rewrites "
                     "(default: the paper's accepted / all records)")  # fmt: skip
    sft.add_argument("--rewrite-share", type=float, default=1.0,
                     help="share of accepted records that also give a rewrite example; every "
                     "locate example is kept (default 1: the paper's mix)")  # fmt: skip
    sft.set_defaults(func=grm_sft_command)


def read_records(path: Path) -> tuple[list[Any], int]:
    """The :class:`GrmRecord` rows of a JSONL file, and how many bad lines were skipped (each
    reported with its file and line; the rest of the file is used)."""
    from rlmec.data.records import GrmRecord
    from rlmec.shared.jsonl import BadLine, read_input

    records, bad = [], 0
    for _, row in read_input(path, GrmRecord):
        if isinstance(row, BadLine):
            bad += 1
            print(f"rlmec data: skipped {row}", file=sys.stderr)
        else:
            records.append(row)
    return records, bad


def _fail(message: str) -> int:
    print(f"rlmec data: {message}", file=sys.stderr)
    return 2


def sample_command(args: argparse.Namespace) -> int:
    import asyncio

    problem = check_engine_arguments(args)
    checks = [
        (args.n >= 1, f"--n ({args.n}) must be at least 1"),
        (args.temperature > 0, f"--temperature ({args.temperature}) must be > 0 to sample"),
        (0 < args.top_p <= 1, f"--top-p ({args.top_p}) must lie in (0, 1]"),
        (args.max_new_tokens >= 1, f"--max-new-tokens ({args.max_new_tokens}) must be >= 1"),
        (args.limit is None or args.limit >= 1, f"--limit ({args.limit}) must be at least 1"),
        (args.chunk_size >= 1, f"--chunk-size ({args.chunk_size}) must be at least 1"),
    ]
    problem = problem or next((msg for ok, msg in checks if not ok), None)
    if problem:
        return _fail(problem)
    try:
        tasks = resolve_tasks(args.tasks)
    except ValueError as exc:
        return _fail(f"--tasks: {exc}")
    from rlmec.shared.errors import RlmecError

    try:
        counts = asyncio.run(_sample(args, tasks))
    except (RlmecError, FileNotFoundError, ValueError) as exc:
        return _fail(str(getattr(exc, "message", exc)))
    _print_sample_summary(args.output, counts)
    return 0


async def _sample(args: argparse.Namespace, tasks: list[str]) -> Counter[str]:
    from tqdm import tqdm

    from rlmec.data.sample import SampleConfig, sample_problems
    from rlmec.data.tasks import load_task
    from rlmec.inference import create_engine
    from rlmec.shared.checking import AnswerChecker

    config = SampleConfig(
        n=args.n, temperature=args.temperature, top_p=args.top_p,
        max_new_tokens=args.max_new_tokens, seed=args.seed, chunk_size=args.chunk_size,
    )  # fmt: skip
    engine = create_engine(engine_settings_from(args))
    counts: Counter[str] = Counter()
    await engine.start()
    try:
        with AnswerChecker() as checker:
            for task in tasks:
                problems = load_task(task, limit=args.limit, seed=args.seed)
                with tqdm(desc=f"sample {task}", unit="problem", dynamic_ncols=True) as bar:
                    counts += await sample_problems(
                        engine, checker, problems, args.output, config, bar
                    )
    finally:
        await engine.close()
    return counts


def _print_sample_summary(path: Path, counts: Counter[str]) -> None:
    from rlmec.shared.jsonl import read_rows

    rows = read_rows(path)
    correct = sum(bool(r["correct"]) for r in rows)
    share = correct / len(rows) if rows else 0.0
    print(
        f"{len(rows)} samples in {path}: {correct} correct ({100 * share:.1f}%), "
        f"{len(rows) - correct} wrong (the distill step's input); this run: "
        f"{dict(counts) or 'nothing new'}"
    )


def distill_command(args: argparse.Namespace) -> int:
    import asyncio

    if args.teacher in EXACT_TEACHERS:
        return _distill_exact(args)
    checks = [
        (args.base_url is not None and args.teacher_model is not None,
         "--teacher model needs --url and --teacher-model (or use the exact teacher of a "
         f"procedural task: --teacher {'|'.join(EXACT_TEACHERS)})"),
        (args.concurrency >= 1, f"--concurrency ({args.concurrency}) must be at least 1"),
        (args.max_tokens >= 1, f"--max-tokens ({args.max_tokens}) must be at least 1"),
        (str(args.base_url).startswith(("http://", "https://")),
         f"--url {args.base_url!r} must start with http:// or https://"),
    ]  # fmt: skip
    problem = next((msg for ok, msg in checks if not ok), None)
    if problem:
        return _fail(problem)
    from rlmec.data.teacher import TeacherRefused

    try:
        deferred = asyncio.run(_distill(args))
    except (FileNotFoundError, TeacherRefused) as exc:
        return _fail(str(exc))
    if deferred:
        print(f"rlmec data: {deferred} records deferred (the teacher stayed unavailable after "
              "retries); rerun the same command to finish them", file=sys.stderr)  # fmt: skip
        return 3
    return 0


def _distill_exact(args: argparse.Namespace) -> int:
    """An exact teacher (arith, lines, paths): the same records the model teachers write,
    instantly."""
    from rlmec.data.procedural.base import teach_many
    from rlmec.data.procedural.registry import get
    from rlmec.shared.jsonl import append_rows, open_output

    try:
        records, _ = read_records(args.input)
    except FileNotFoundError as exc:
        return _fail(str(exc))
    done = {r["id"] for r in open_output(args.output)}
    todo = [r for r in records if r.id not in done]
    wrong = [r for r in todo if not r.correct]
    teacher = get(args.teacher).teacher
    taught, outcomes = teach_many(wrong, teacher)
    append_rows(args.output, [r for r in todo if r.correct] + taught)
    if args.released_output is not None:
        _write_released(args.output, args.released_output)
    print(json.dumps({
        "output": str(args.output), "teacher": teacher.name, "wrong_sent": len(wrong),
        "passed_through_correct": len(todo) - len(wrong), "outcomes": dict(outcomes),
    }, indent=1))  # fmt: skip
    return 0


def _write_released(records: Path, released: Path) -> None:
    from rlmec.data.records import GrmRecord, to_released
    from rlmec.shared.jsonl import read_rows

    _write_atomic(released, [to_released(GrmRecord.model_validate(r)) for r in read_rows(records)])


async def _distill(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from rlmec.data.teacher import (
        AnthropicTeacher,
        DistillStats,
        OpenAITeacher,
        distill_many,
        preflight,
    )
    from rlmec.shared.checking import AnswerChecker
    from rlmec.shared.jsonl import append_rows, open_output

    records, _ = read_records(args.input)
    done = {r["id"] for r in open_output(args.output)}
    todo = [r for r in records if r.id not in done]
    append_rows(args.output, [r for r in todo if r.correct])  # correct ones pass through
    wrong = [r for r in todo if not r.correct]
    env = args.api_key_env or ("OPENAI_API_KEY" if args.protocol == "openai" else
                               "ANTHROPIC_API_KEY")  # fmt: skip
    key = os.environ.get(env) or "no-key"  # a local server needs none
    if wrong:
        await preflight(args.base_url, args.teacher_model, key, env)
    common = {"api_key": key, "timeout": args.timeout, "max_retries": args.max_retries}
    teacher = (
        OpenAITeacher(args.base_url, args.teacher_model,
                      continue_prefill=not args.no_continue_prefill, **common)
        if args.protocol == "openai"
        else AnthropicTeacher(args.base_url, args.teacher_model, extra_body=args.extra_body,
                              **common)
    )  # fmt: skip
    stats = DistillStats()
    step = 4 * args.concurrency
    try:
        with AnswerChecker() as checker, tqdm(total=len(wrong), desc="distill",
                                              unit="sample") as bar:  # fmt: skip
            for start in range(0, len(wrong), step):
                chunk = wrong[start : start + step]
                kept = await distill_many(teacher, checker, chunk, stats,
                                          concurrency=args.concurrency,
                                          max_tokens=args.max_tokens)  # fmt: skip
                append_rows(args.output, kept)
                bar.update(len(chunk))
    finally:
        await teacher.close()
    if args.released_output is not None:
        _write_released(args.output, args.released_output)
    print(json.dumps({
        "output": str(args.output), "wrong_sent": len(wrong),
        "passed_through_correct": sum(r.correct for r in todo),
        "outcomes": dict(stats.outcomes), "input_tokens": stats.input_tokens,
        "output_tokens": stats.output_tokens,
        "estimated_cost": round(stats.cost(args.price_input, args.price_output), 6),
    }, indent=1))  # fmt: skip
    deferred = sum(v for k, v in stats.outcomes.items() if k.startswith("deferred"))
    if deferred:
        print(f"rlmec data: the teacher at {args.base_url} stayed unavailable for {deferred} "
              f"records (last error: {stats.last_error})", file=sys.stderr)  # fmt: skip
    return deferred


def _write_atomic(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    os.replace(tmp, path)  # all or nothing: a short run never leaves half a file


def signals_command(args: argparse.Namespace) -> int:
    import asyncio

    if not 1 <= args.batch_size <= 1024:
        return _fail(f"--batch-size ({args.batch_size}) must lie in 1..1024")
    if args.policy and not (Path(args.policy).expanduser() / "config.json").is_file():
        return _fail(f"--policy {args.policy!r} is not a model directory (no config.json)")
    from rlmec.clients.errors import RlmecClientError

    try:
        args.params = model_from_flags(RewardParams, args)
    except ValueError as exc:
        return _fail(str(exc))

    try:
        counts = asyncio.run(_signals(args))
    except FileNotFoundError as exc:
        return _fail(str(exc))
    except RlmecClientError as exc:
        # Nothing of the failed batch was written: a rerun continues from there.
        return _fail(f"{exc}; the rows written so far are kept, rerun to continue")
    print(json.dumps({"output": str(args.output), "this_run": dict(counts)}, indent=1))
    return 0


async def _signals(args: argparse.Namespace) -> Counter[str]:
    from tqdm import tqdm

    from rlmec.clients.async_ import AsyncClient
    from rlmec.data.signals import score_batch
    from rlmec.inference import create_engine
    from rlmec.inference.engine import Engine
    from rlmec.inference.settings import EngineSettings
    from rlmec.shared.jsonl import open_output

    records, _ = read_records(args.input)
    done = {r.get("id") for r in open_output(args.output)}
    todo = [r for r in records if r.id not in done]
    engine: Engine | None = None
    if args.policy:
        engine = create_engine(EngineSettings(model=args.policy, engine=args.policy_engine,
                                              dtype="float32", kv_cache_gib=1.0))  # fmt: skip
        await engine.start()
    counts: Counter[str] = Counter()
    try:
        async with AsyncClient(args.reward_url, api_key=os.environ.get(args.api_key_env),
                               timeout=600.0) as client:  # fmt: skip
            with tqdm(total=len(records), initial=len(records) - len(todo), desc="signals",
                      unit="sample") as bar:  # fmt: skip
                for start in range(0, len(todo), args.batch_size):
                    batch = todo[start : start + args.batch_size]
                    counts += await score_batch(client, batch, engine=engine,
                                                use_rewrite=args.use_rewrites,
                                                params=args.params, output=args.output)  # fmt: skip
                    bar.update(len(batch))
    finally:
        if engine is not None:
            await engine.close()
    return counts


def synth_command(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from rlmec.data.synth import corrupt
    from rlmec.data.tasks import load_task
    from rlmec.shared.jsonl import append_rows, open_output

    if args.task not in TASKS or TASKS[args.task].task_type != "math":
        maths = ", ".join(t for t, s in TASKS.items() if s.task_type == "math")
        return _fail(f"--task {args.task!r} is not a math task; choose one of {maths}")
    kinds: list[Any] = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not kinds or any(k not in SYNTH_KINDS for k in kinds):
        return _fail(f"--kinds {args.kinds!r}: choose among {', '.join(SYNTH_KINDS)}")
    if args.limit is not None and args.limit < 1:
        return _fail(f"--limit ({args.limit}) must be at least 1")
    problems = load_task(args.task, limit=args.limit, seed=args.seed)
    written = open_output(args.output)
    done = {row["id"] for row in written}
    # Corruption is deterministic and cheap, so a rerun simply skips the records written.
    todo = [p for p in problems if f"synth/{p.id}" not in done]
    made: Counter[str] = Counter()
    with tqdm(total=len(problems), initial=len(problems) - len(todo), desc="synth",
              unit="problem") as bar:  # fmt: skip
        for start in range(0, len(todo), 256):
            chunk = todo[start : start + 256]
            records = [corrupt(p, seed=args.seed, kinds=kinds) for p in chunk]
            kept = [r for r in records if r is not None]
            made.update(r.meta["corruption"] for r in kept)
            made["no usable equation"] += len(chunk) - len(kept)
            append_rows(args.output, kept)
            bar.update(len(chunk))
    total = len(written) + sum(made.values()) - made["no usable equation"]
    print(
        f"SYNTHETIC records (corrupted reference solutions, not a teacher's): {total} in "
        f"{args.output}; this run: {dict(made) or 'nothing new'}"
    )
    return 0


def grm_sft_command(args: argparse.Namespace) -> int:
    from rlmec.data.grm_sft import build_examples
    from rlmec.data.records import GrmRecord

    if not args.records:
        return _fail("--input FILE is required: the records (synth, distill or sample output)")
    if args.identity_rate is not None and not 0.0 <= args.identity_rate <= 1.0:
        return _fail(f"--identity-rate ({args.identity_rate}) must lie in [0, 1]")
    if not 0.0 <= args.rewrite_share <= 1.0:
        return _fail(f"--rewrite-share ({args.rewrite_share}) must lie in [0, 1]")
    records: list[GrmRecord] = []
    bad = 0
    for path in args.records:
        try:
            good, skipped = read_records(path)
            records += good
            bad += skipped
        except FileNotFoundError as exc:
            return _fail(str(exc))
    examples, stats = build_examples(
        records, seed=args.seed, identity_rate=args.identity_rate, rewrite_share=args.rewrite_share
    )
    if not examples:
        return _fail(f"no usable records in {', '.join(map(str, args.records))}")
    _write_atomic(args.output, [e.model_dump(mode="json") for e in examples])
    kinds = Counter(e.kind for e in examples)
    print(json.dumps({
        "output": str(args.output), "examples": len(examples), "by_kind": dict(kinds),
        "records": stats.records, "wrong": stats.wrong, "accepted": stats.accepted,
        "correct": stats.correct, "identity_rate": round(stats.identity_rate, 4),
        "skipped": dict(stats.skipped), "bad_lines": bad,
        "mean_target_chars": round(sum(len(e.target) for e in examples) / len(examples), 1),
    }, indent=1))  # fmt: skip
    return 0
