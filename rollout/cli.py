"""``rlmec rollout``: run the rollout actor (see :mod:`rlmec.rollout.actor`).

    rlmec rollout --model MODEL --reward-url http://127.0.0.1:8002 --team T \\
        --tasks gsm8k_train --workdir runs/rollout \\
        --redis-url redis://127.0.0.1:6379/0     # follow the trainer's published versions
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from rlmec.inference.settings import add_engine_arguments, engine_settings_from
from rlmec.shared.schemas import RewardParams
from rlmec.shared.settings_cli import add_setting_flags, deprecated_alias, model_from_flags

log = logging.getLogger("rlmec.rollout")


def add_commands(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "The rollout actor of the online loop: the policy samples solutions to training "
        "problems, with their behaviour log-probs, and pushes them to the reward service's "
        "queue with the team's key; between batches it loads the newest policy version the "
        "trainer published (data.online.publish_every_steps)."
    )
    add_engine_arguments(parser, kv_cache_gib=1.0)
    parser.add_argument("--reward-url", required=True, help="reward service base URL")
    parser.add_argument("--team", required=True, help="the team (its queue and version record)")
    parser.add_argument("--api-key-file", type=Path, default=None,
                        help="file holding the team's key (default: $RLMEC_API_KEY)")  # fmt: skip
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--tasks", default="gsm8k_train", help="training problems (task names)")
    src.add_argument(
        "--input",
        dest="problems",
        type=Path,
        default=None,
        help="JSONL of problems: question + reference_solution (optional "
        "reference_answer, task math|qa, id), or GSM8K rows (question, answer)",
    )
    deprecated_alias(parser, "--problems", "--input", type=Path)
    parser.add_argument("--limit", type=int, default=None, help="a seeded subset of N problems")
    parser.add_argument("--n", type=int, default=4, help="solutions per problem")
    parser.add_argument("--problems-per-batch", type=int, default=4, help="problems per batch")
    parser.add_argument("--temperature", type=float, default=0.7, help="paper: 0.7")
    parser.add_argument("--top-p", type=float, default=0.95, help="paper: 0.95")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="paper: 512")
    parser.add_argument("--seed", type=int, default=0, help="problem order and sampling seed")
    parser.add_argument("--max-batches", type=int, default=None,
                        help="stop after this many batches (counted across restarts)")  # fmt: skip
    parser.add_argument(
        "--run-id",
        default="rollout",
        help="batch ids are <run-id>-<k>: keep it to resume, change it to restart",
    )
    parser.add_argument("--workdir", type=Path, default=Path("runs/rollout"),
                        help="state.json (resume point) and metrics.jsonl")  # fmt: skip
    parser.add_argument("--policy-tokenizer", default=None,
                        help="registered policy tokenizer of the reward service")  # fmt: skip
    parser.add_argument(
        "--reference-rewrite",
        action="store_true",
        help="send each problem's reference solution as the rewrite (the GRM "
        "then only scores): for a GRM that cannot rewrite this policy yet",
    )
    add_setting_flags(parser, RewardParams, RewardParams.model_fields)  # §3.1 shaping
    parser.add_argument("--redis-url", default=None,
                        help="Redis holding the trainer's version record; without it the "
                        "weights never change")  # fmt: skip
    parser.add_argument("--redis-username", default=None,
                        help="the team's trainer user (rlmec-trainer-<team>)")  # fmt: skip
    parser.add_argument("--redis-password-file", type=Path, default=None,
                        help="file holding --redis-username's password")  # fmt: skip
    parser.set_defaults(func=rollout_command)


def _fail(message: str) -> int:
    print(f"rlmec rollout: {message}", file=sys.stderr)
    return 2


def check_arguments(args: argparse.Namespace) -> str | None:
    """The first problem with the flags, phrased with its fix, or None."""
    if not args.model:
        return "--model is required: the policy's local HF model directory"
    if not (Path(args.model).expanduser() / "config.json").is_file():
        return f"--model {args.model!r} is not a model directory (no config.json)"
    if args.engine == "remote":
        return "--engine remote cannot take new weights; use vllm (default) or hf"
    checks = [
        (args.n >= 1, f"--n ({args.n}) must be at least 1"),
        (args.problems_per_batch >= 1,
         f"--problems-per-batch ({args.problems_per_batch}) must be at least 1"),
        (args.n * args.problems_per_batch <= 1024,
         "--n × --problems-per-batch must be at most 1024 (the service's batch limit)"),
        (args.temperature > 0, f"--temperature ({args.temperature}) must be > 0 to sample"),
        (0 < args.top_p <= 1, f"--top-p ({args.top_p}) must lie in (0, 1]"),
        (args.max_new_tokens >= 1, f"--max-new-tokens ({args.max_new_tokens}) must be >= 1"),
        (args.limit is None or args.limit >= 1, f"--limit ({args.limit}) must be at least 1"),
        (args.max_batches is None or args.max_batches >= 1,
         f"--max-batches ({args.max_batches}) must be at least 1"),
        (args.problems is None or args.problems.is_file(),
         f"--input {args.problems} does not exist; give a JSONL file"),
        (args.api_key_file is None or args.api_key_file.is_file(),
         f"--api-key-file {args.api_key_file} does not exist"),
        (args.api_key_file is not None or bool(os.environ.get("RLMEC_API_KEY")),
         "no team key: set RLMEC_API_KEY or give --api-key-file"),
    ]  # fmt: skip
    return next((msg for ok, msg in checks if not ok), None)


def load_problem_file(path: Path) -> list[Any]:
    """Problems from a JSONL file; a bad line is an error naming the line and the fix."""
    from rlmec.data.tasks import Problem
    from rlmec.shared.answers import reference_answer

    problems = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            task = row.get("task", "math")
            solution = row.get("reference_solution") or row["answer"]
            if task not in ("math", "qa"):
                raise ValueError(f"task {task!r} must be 'math' or 'qa'")
            answer = row.get("reference_answer") or reference_answer(solution, task)
            if not answer:
                raise ValueError("no reference answer: add reference_answer")
            problems.append(Problem(str(row.get("id", f"{path.stem}/{lineno}")), path.stem,
                                    task, row["question"], solution, str(answer)))  # fmt: skip
        except (json.JSONDecodeError, KeyError, ValueError, TypeError, AttributeError) as exc:
            raise ValueError(
                f"{path}:{lineno}: {exc!r}; each line needs question and reference_solution "
                "(or GSM8K's answer)"
            ) from None
    return problems


def rollout_command(args: argparse.Namespace) -> int:
    problem = check_arguments(args)
    if problem:
        return _fail(problem)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        problems = _problems(args)
    except (ValueError, FileNotFoundError) as exc:
        return _fail(str(exc))
    from rlmec.shared.errors import RlmecError

    try:
        reports = asyncio.run(_run(args, problems))
    except (RlmecError, ValueError) as exc:
        return _fail(str(getattr(exc, "message", exc)))
    samples = sum(r.samples for r in reports)
    print(
        f"rlmec rollout: pushed {len(reports)} batch(es), {samples} samples; metrics in "
        f"{args.workdir}/metrics.jsonl"
    )
    return 0


def _problems(args: argparse.Namespace) -> list[Any]:
    from rlmec.data.tasks import load_task, resolve_tasks

    if args.problems is not None:
        problems = load_problem_file(args.problems)
        return problems[: args.limit] if args.limit else problems
    return [p for t in resolve_tasks(args.tasks) for p in load_task(t, limit=args.limit,
                                                                     seed=args.seed)]  # fmt: skip


async def _run(args: argparse.Namespace, problems: list[Any]) -> list[Any]:
    from rlmec.clients import AsyncClient
    from rlmec.inference import create_engine
    from rlmec.rollout.actor import RolloutActor, RolloutConfig, VersionWatcher

    cfg = RolloutConfig(
        team=args.team, run_id=args.run_id, n=args.n, problems_per_batch=args.problems_per_batch,
        temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
        seed=args.seed, max_batches=args.max_batches, policy_tokenizer=args.policy_tokenizer,
        reference_rewrite=args.reference_rewrite, params=model_from_flags(RewardParams, args),
    )  # fmt: skip
    key = args.api_key_file.read_text().strip() if args.api_key_file else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watcher = None
    if args.redis_url:
        from rlmec.shared.redis_acl import credentials
        from rlmec.shared.redis_client import connect

        watcher = VersionWatcher(
            connect(args.redis_url, **credentials(args.redis_username, args.redis_password_file)),
            args.team,
        )
    engine: Any = create_engine(engine_settings_from(args))
    await engine.start()
    try:
        async with AsyncClient(args.reward_url, api_key=key) as client:
            actor = RolloutActor(engine, client, problems, cfg, args.workdir, watcher)
            return await _until_stopped(actor.run(stop, _print_report), stop)
    finally:
        await engine.close()


async def _until_stopped(run: Any, stop: asyncio.Event) -> list[Any]:
    """Run the actor; a signal during generation cancels the batch in flight (it is made
    again on restart, under the same id)."""
    task = asyncio.ensure_future(run)
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if not task.done():
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return []
    return list(task.result())


def _print_report(report: Any) -> None:
    reload = f", reloaded in {report.reload_s:.1f} s" if report.reload_s is not None else ""
    print(
        f"batch {report.batch} ({report.batch_id}): {report.samples} samples from policy "
        f"v{report.policy_version} (generate {report.generate_s:.1f} s, log-probs "
        f"{report.logprobs_s:.1f} s, push {report.push_s:.1f} s{reload})",
        flush=True,
    )
