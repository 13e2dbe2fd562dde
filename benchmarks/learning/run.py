"""Do the rewards teach? RLMEC against the paper's baselines on ``arith``, in the paper's offline
setting, on these 2 CPU cores (issue 25; section ``learning`` of BENCHMARKS.md).

Pipeline (each stage is cached in ``--work``; a rerun does only what is missing):

1. **Warm start.** SmolLM2-135M-Instruct does not write steps zero-shot (5% on ``arith``, by
   guessing). ``rlmec train`` with ``loss.objective: sft`` on the reference solutions of the
   *first* ``--warm-problems`` ``arith_train`` problems makes the start policy of every method.
2. **Calibration.** ``rlmec eval --tasks arith`` (the 1000 test problems, greedy) of the start
   policy, and the kind of each wrong solution's first error (the exact teacher's reading).
3. **One shared sample set.** The start policy writes ``--n`` solutions to each of the *last*
   ``--problems`` ``arith_train`` problems (disjoint from the warm start; temperature 0.7, top-p
   0.95, as ``rlmec data sample``), judged by §4 answer checking.
4. **The exact teacher** (``rlmec data distill --teacher arith``) locates and rewrites the wrong
   ones; :mod:`rlmec.data.oracle` turns them into token rewards as a certain GRM would give.
5. **Training.** Every method starts from the start policy, on that one file, for the same
   ``--steps`` optimizer steps (batch ``--batch``, constant lr, the same DeepSpeed recipe), for
   each seed (data order): ``rlmec`` (exact-teacher rewards), ``rlmec_no_im`` (λ = 0),
   ``sequence``, ``rft``, ``sft``. Checkpoints at ``--curve-every`` steps are evaluated on
   ``--curve-problems`` test problems for the curves; the last on all of them.
6. **Report.** Accuracy before and after, each method against the start policy and RLMEC
   against each baseline, with the paired 95% bootstrap interval over test problems (seeds
   averaged per problem) and the exact McNemar p of the seed-0 runs; ``learning.png``.

    .venv/bin/python -m benchmarks.learning.run [--work runs/learning] [--stage calibrate]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

from benchmarks.report import cpu_flags, machine, replace_section, set_line, today
from rlmec import warm_start as WARM


class Method(NamedTuple):
    overrides: list[str]  # `rlmec train` settings
    data: str  # "teacher" (the exact teacher's records) or a grm.SCORINGS key (the GRM's)


RESPONSE = "loss.rl_tokens=response"
METHODS: dict[str, Method] = {
    "rlmec": Method(["loss.objective=rlmec"], "teacher"),
    "sequence": Method(["loss.objective=sequence"], "teacher"),
    "rft": Method(["loss.objective=rft"], "teacher"),
    "sft": Method(["loss.objective=sft"], "teacher"),
    "rlmec_no_im": Method(["loss.objective=rlmec", "loss.imitation_coef=0"], "teacher"),
    "rlmec_grm": Method(["loss.objective=rlmec"], "rlmec_grm"),  # the platform's GRM scored
    "rlmec_grm_edits": Method(["loss.objective=rlmec"], "rlmec_grm_edits"),  # with edit_penalty
    "rlmec_resp": Method(["loss.objective=rlmec", RESPONSE], "teacher"),
    "rlmec_grm_edits_resp": Method(["loss.objective=rlmec", RESPONSE], "rlmec_grm_edits"),
}
# The same settings on the exact teacher's rewards: what the GRM costs.
EXACT_TWIN = {"rlmec_grm": "rlmec", "rlmec_grm_edits": "rlmec",
              "rlmec_grm_edits_resp": "rlmec_resp"}  # fmt: skip
# A method that differs from another by one setting: the report compares the two.
VARIANTS = {
    "rlmec_grm_edits": ("rlmec_grm", "The same GRM, its rewards scored with `edit_penalty` "
                        "(the floor also on every token its rewrite does not keep; "
                        "`rlmec data signals --edit-penalty`)"),
    "rlmec_resp": ("rlmec", "The exact teacher's rewards, `N_r` = every response token "
                   "(`loss.rl_tokens: response`) instead of the rewarded ones (§5)"),
    "rlmec_grm_edits_resp": ("rlmec_grm_edits", "The GRM's `edit_penalty` rewards, `N_r` = "
                             "every response token (`loss.rl_tokens: response`)"),
}  # fmt: skip
BOOTSTRAP_ROUNDS = 2000


def rlmec(*args: str) -> None:
    """One ``rlmec`` command, as a user runs it."""
    subprocess.run([sys.executable, "-m", "rlmec", *args], check=True)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    p.add_argument("--work", type=Path, default=Path("runs/learning"), help="cache of stages")
    p.add_argument("--stage", choices=["calibrate", "grm", "all"], default="all",
                   help="stop after the start policy's calibration, or after the GRM is made, "
                   "judged and has scored the sample set")  # fmt: skip
    p.add_argument("--model", default="~/.cache/rlmec/models/smollm2-135m",
                   help="the base policy (rlmec grm convert-smollm2 makes it)")  # fmt: skip
    p.add_argument("--problems", type=int, default=128, help="P: problems of the sample set")
    p.add_argument("--n", type=int, default=4, help="solutions per problem")
    p.add_argument("--steps", type=int, default=48, help="optimizer steps of every method")
    p.add_argument("--batch", type=int, default=8, help="samples per optimizer step")
    p.add_argument("--lr", type=float, default=5e-5, help="constant lr of every method")
    p.add_argument("--warmup", type=int, default=0,
                   help="linear warmup steps before the constant lr (a fresh AdamW's first "
                   "steps move every weight by about lr)")  # fmt: skip
    p.add_argument("--seeds", default="0,1", help="data-order seeds")
    p.add_argument(
        "--methods",
        default=",".join(METHODS),
        help="comma-separated; rlmec_grm trains on the sample set as the arith GRM scored it "
        "through the services, rlmec_grm_edits the same with the reward service's "
        "edit_penalty (both need --grm-steps > 0; without them the GRM is made and judged "
        "but does not score); a *_resp method divides the RL term by every response token "
        "(loss.rl_tokens=response)",
    )
    p.add_argument("--headline", default="rlmec_grm",
                   help="the method the headline lines call RLMEC (the platform's "
                   "configuration); its exact-teacher twin gives the GRM line")  # fmt: skip
    p.add_argument("--curve-every", type=int, default=24, help="curve checkpoint period")
    p.add_argument("--curve-problems", type=int, default=200, help="test problems per point")
    p.add_argument(
        "--grm-problems",
        type=int,
        default=1000,
        help="arith_train problems the GRM's data comes from (after the warm start's)",
    )
    p.add_argument("--grm-steps", type=int, default=240, help="GRM training steps (0: no GRM)")
    p.add_argument("--grm", choices=["train", "shipped"], default="train",
                   help="train: make the arith GRM from the start policy's errors and judge it "
                   "(about 50 min); shipped: serve the adapter in datasets/adapters/, which an "
                   "earlier `train` made, without training or judging it again")  # fmt: skip
    p.add_argument("--gsm8k-limit", type=int, default=200,
                   help="GSM8K test problems scored before and after RLMEC (0: skip)")  # fmt: skip
    p.add_argument("--no-write", action="store_true",
                   help="print, leave BENCHMARKS.md and learning.png")  # fmt: skip
    args = p.parse_args()
    unknown = [m for m in args.methods.split(",") if m not in METHODS]
    if unknown:
        p.error(f"--methods {','.join(unknown)}: unknown; choose from {', '.join(METHODS)}")
    return args


# --- stages -------------------------------------------------------------------------------


def train_config(work: Path, name: str, model: str, data: Path, max_length: int = 256) -> Path:
    """A config file for one run (constant lr after a fixed number of warmup steps: a run
    stopped at step k and resumed is the run that went on, which the curve's checkpoints rely
    on)."""
    cfg = {
        "model": model, "output_dir": str(work / name), "seed": 0,
        "data": {"mode": "offline", "train_file": str(data), "max_length": max_length},
        "optim": {"lr_schedule": "constant", "warmup_ratio": 0.0, "epochs": 100,
                  "micro_batch_size": 8, "weight_decay": 0.0},
        "engine": {"zero_stage": 0, "precision": "autocast"},
        "save_every_steps": 0, "log_every_steps": 4,
    }  # fmt: skip
    path = work / f"{name}.json"
    path.write_text(json.dumps(cfg, indent=1))
    return path


def train(config: Path, overrides: list[str], final: Path) -> Path:
    if not (final / "config.json").is_file():
        rlmec("train", "--config", str(config), *[x for o in overrides for x in ("--set", o)])
    return final


def warm_start(args: argparse.Namespace) -> Path:
    """The start policy (:mod:`rlmec.warm_start`), also copied where the demo finds it."""
    from rlmec.services.grm.model_files import ARITH_START_DIR
    from rlmec.warm_start import make_start_policy

    make_start_policy(Path(args.model), args.work, ARITH_START_DIR)
    return args.work / "start" / "final"


def evaluate(
    model: Path, out: Path, limit: int | None = None, task: str = "arith", max_new: int = 96
) -> dict[str, Any]:
    """``rlmec eval`` on ``task`` (resumable by itself); the per-problem correctness."""
    if not (out / "results.json").is_file():
        extra = ["--limit", str(limit)] if limit else []
        rlmec("eval", "--model", str(model), "--tasks", task, "--output", str(out),
              "--max-new-tokens", str(max_new), "--max-batch-size", "256", *extra)  # fmt: skip
    rows = [json.loads(line) for line in (out / task / "samples.jsonl").open()]
    return {r["id"]: r for r in rows}


def gsm8k_check(args: argparse.Namespace, start: Path, method: str) -> dict[str, float]:
    """Nothing else broke: GSM8K (its first ``--gsm8k-limit`` test problems, greedy) before
    and after ``method``'s first seed."""
    after = args.work / f"{method}-s{args.seeds.split(',')[0]}-step{args.steps}"
    rows = [evaluate(model, args.work / "eval" / f"gsm8k-{name}", args.gsm8k_limit, "gsm8k", 320)
            for name, model in (("start", start), (after.name, after))]  # fmt: skip
    return versus([rows[1]], [rows[0]])


def calibration(rows: dict[str, Any]) -> dict[str, Any]:
    from collections import Counter

    from rlmec.data.arith_teacher import LOCAL_ERRORS, error_kind

    question = {p.id: p.question for p in _test_problems()}
    wrong = [r for r in rows.values() if not r["correct"]]
    kinds = Counter(error_kind(question[r["id"]], r["output"].strip()) for r in wrong)
    local = sum(kinds[k] for k in LOCAL_ERRORS)
    share = local / max(len(wrong), 1)
    return {"accuracy": 1 - len(wrong) / len(rows), "rows": len(rows), "wrong": len(wrong),
            "kinds": dict(kinds.most_common()), "local_share": share}  # fmt: skip


def _test_problems() -> list[Any]:
    from rlmec.data.tasks import load_task

    return load_task("arith")


def sample_set(args: argparse.Namespace, start: Path) -> Path:
    return sample_slice(start, args.work / "samples.jsonl", -args.problems, 0, args.n)


def sample_slice(
    model: Path,
    out: Path,
    first: int,
    last: int,
    n: int,
    task: str = "arith_train",
    max_new_tokens: int = 96,
) -> Path:
    """The model's ``n`` solutions to ``task[first:last]`` (resumed when cut short)."""
    wanted = ((last or 20_000) - first if first >= 0 else -first) * n
    if not out.is_file() or _lines(out) < wanted:
        code = (
            "import asyncio, sys; from benchmarks.learning.sampling import main; "
            "asyncio.run(main(*sys.argv[1:]))"
        )
        argv = [str(model), str(out), str(first), str(last), str(n), task, str(max_new_tokens)]
        subprocess.run([sys.executable, "-c", code, *argv], check=True)
    return out


def _lines(path: Path) -> int:
    return sum(1 for line in path.open() if line.strip())


def teach_and_score(args: argparse.Namespace, samples: Path, start: Path) -> Path:
    """The exact teacher's records, then the trainer's records (rewards of a certain GRM)."""
    return exact_training_file(args.work, samples, start, "arith")


def exact_training_file(work: Path, samples: Path, start: Path, teacher: str) -> Path:
    """``rlmec data distill --teacher <teacher>`` of the sample set, then the trainer's records
    (:func:`rlmec.data.oracle.oracle_record`: a certain GRM's rewards, the outcome, the
    reference and the share of right lines), each cached in ``work``."""
    from transformers import AutoTokenizer

    from rlmec.data.oracle import oracle_record
    from rlmec.data.records import GrmRecord
    from rlmec.shared.jsonl import read_rows

    taught, out = work / "taught.jsonl", work / "train_exact.jsonl"
    if not taught.is_file():
        rlmec("data", "distill", "--teacher", teacher, "--input", str(samples),
              "--output", str(taught))  # fmt: skip
    if not out.is_file():
        tok = AutoTokenizer.from_pretrained(start)
        records = [GrmRecord.model_validate(r) for r in read_rows(taught)]
        rows = [r for r in (oracle_record(x, tok) for x in records) if r is not None]
        out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def make_grm(args: argparse.Namespace, start: Path, start_rows: dict[str, Any],
             samples: Path) -> tuple[dict[str, Any], dict[str, Path]]:  # fmt: skip
    """The arith GRM (:mod:`benchmarks.learning.grm`): its held-out judgement and the shared
    sample set scored by it through the services (a file per GRM method asked for)."""
    from benchmarks.learning import grm

    scorings = [METHODS[m].data for m in args.methods.split(",")]
    if args.grm == "shipped":
        model = grm.shipped_grm(Path(args.model))
        files = grm.score_with_grm(args.work, model, samples, scorings)
        counts = {m: grm.scored_counts(f) for m, f in files.items()}
        return {"shipped": True, "scored": counts or None}, files
    sft, val = grm.grm_data(args.work, start, WARM.PROBLEMS, args.grm_problems, 2)
    model = grm.train_grm(args.work, args.model, sft, val, args.grm_steps)
    judged = grm.judge(args.work, model, grm.heldout_records(args.work, start_rows))
    files = grm.score_with_grm(args.work, model, samples, scorings)
    counts = {m: grm.scored_counts(f) for m, f in files.items()}
    return grm_summary(args, judged, counts or None), files


def grm_summary(args: argparse.Namespace, judged: dict[str, Any],
                scored: dict[str, dict[str, int]] | None) -> dict[str, Any]:  # fmt: skip
    """What the report says of the GRM: its judgement, data, curve and training time."""
    from collections import Counter

    from benchmarks.grm_quality.run import first_step_share, learning_curve

    kinds = Counter(json.loads(line)["kind"] for line in (args.work / "grm_sft.jsonl").open())
    floor = first_step_share(args.work / "grm_heldout.jsonl")
    return {"judge": judged, "scored": scored, "curve": learning_curve(args.work), "floor": floor,
            "examples": dict(kinds), "minutes": train_minutes(args.work, "grm", "")}  # fmt: skip


def run_method(args: argparse.Namespace, name: str, seed: int, start: Path,
               data: Path) -> dict[int, dict[str, Any]]:  # fmt: skip
    """Train one method for one seed in curve segments; the evaluation at each point."""
    run = f"{name}-s{seed}"
    config = train_config(args.work, run, str(start), data)
    base = [*METHODS[name].overrides, f"seed={seed}", f"optim.lr={args.lr}",
            f"optim.global_batch_size={args.batch}",
            f"optim.micro_batch_size={min(args.batch, 8)}",
            f"optim.warmup_steps={args.warmup}"]  # fmt: skip
    points = sorted({*range(args.curve_every, args.steps, args.curve_every), args.steps})
    curve: dict[int, dict[str, Any]] = {}
    for step in points:
        seg = args.work / f"{run}-step{step}"
        final = args.work / run / "final"
        if not (seg / "config.json").is_file():
            (final / "config.json").unlink(missing_ok=True)  # the previous segment's final/
            train(config, [*base, f"optim.max_steps={step}"], final)
            final.rename(seg)
        limit = None if step == args.steps else args.curve_problems
        curve[step] = evaluate(seg, args.work / "eval" / f"{run}-step{step}", limit)
    return curve


# --- statistics ---------------------------------------------------------------------------


def paired_interval(deltas: list[float], seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean of per-problem differences."""
    rng, n = random.Random(seed), len(deltas)
    means = sorted(sum(deltas[rng.randrange(n)] for _ in range(n)) / n
                   for _ in range(BOOTSTRAP_ROUNDS))  # fmt: skip
    return means[int(0.025 * BOOTSTRAP_ROUNDS)], means[int(0.975 * BOOTSTRAP_ROUNDS) - 1]


def seed_mean(runs: list[dict[str, Any]], ids: list[str]) -> list[float]:
    return [sum(bool(r[i]["correct"]) for r in runs) / len(runs) for i in ids]


def versus(b: list[dict[str, Any]], a: list[dict[str, Any]]) -> dict[str, float]:
    """B - A on the test problems both answered, seeds averaged per problem; McNemar on the
    first seed's runs."""
    from rlmec.evaluation.compare import mcnemar_p

    ids = sorted(set.intersection(*(set(r) for r in [*a, *b])))
    xb, xa = seed_mean(b, ids), seed_mean(a, ids)
    deltas = [y - x for x, y in zip(xa, xb, strict=True)]
    lo, hi = paired_interval(deltas)
    b_only = sum(b[0][i]["correct"] and not a[0][i]["correct"] for i in ids)
    a_only = sum(a[0][i]["correct"] and not b[0][i]["correct"] for i in ids)
    return {"a": sum(xa) / len(ids), "b": sum(xb) / len(ids), "diff": sum(deltas) / len(ids),
            "lo": lo, "hi": hi, "p": mcnemar_p(b_only, a_only), "rows": len(ids)}  # fmt: skip


# --- report -------------------------------------------------------------------------------


def plot(curves: dict[str, dict[int, list[dict[str, Any]]]], start: dict[str, Any],
         path: Path) -> None:  # fmt: skip
    """Accuracy against step per method, every point on the same test problems (the curve
    subset, which every evaluation holds), seeds averaged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [run for points in curves.values() for seeds in points.values() for run in seeds]
    ids = sorted(set(start).intersection(*(set(r) for r in runs)))

    def accuracy(seeds: list[dict[str, Any]]) -> float:
        return 100 * sum(seed_mean(seeds, ids)) / len(ids)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, points in curves.items():
        steps = [0, *sorted(points)]
        ax.plot(steps, [accuracy([start]), *(accuracy(points[s]) for s in sorted(points))],
                marker="o", label=name)  # fmt: skip
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"accuracy (%) on {len(ids)} arith test problems")
    ax.set_title("Learning on arith from the same start policy and data (mean over seeds)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _pts(v: dict[str, float]) -> str:
    return f"{100 * v['diff']:+.1f} points [{100 * v['lo']:+.1f}, {100 * v['hi']:+.1f}]"


def report(args: argparse.Namespace, cal: dict[str, Any], finals: dict[str, list[dict[str, Any]]],
           start_rows: dict[str, Any], minutes: float, grm: dict[str, Any] | None,
           gsm8k: dict[str, float] | None = None) -> str:  # fmt: skip
    lines = [
        f"Machine: {machine()}; CPU flags: {cpu_flags()}. Date: {today()}.",
        f"Command: `.venv/bin/python -m benchmarks.learning.run --problems {args.problems} "
        f"--n {args.n} --steps {args.steps} --batch {args.batch} --lr {args.lr} --warmup "
        f"{args.warmup} --seeds "
        f"{args.seeds} --methods {args.methods} --headline {args.headline}"
        + (
            f" --grm-problems {args.grm_problems} --grm-steps {args.grm_steps} --grm {args.grm}`"
            if args.grm_steps
            else " --grm-steps 0`"
        )
        + f" (stages cached in `{args.work}`; this call {minutes:.0f} min).",
        "",
        f"Start policy: SmolLM2-135M-Instruct + SFT warm start ({WARM.STEPS} steps of "
        f"{WARM.BATCH} on the references of the first {WARM.PROBLEMS} `arith_train` problems, "
        f"lr {WARM.LR}; `rlmec.warm_start`). Calibration on the 1000 `arith` test problems "
        "(greedy): accuracy "
        f"**{100 * cal['accuracy']:.1f}%**; first errors of the {cal['wrong']} wrong: "
        + ", ".join(f"{k} {v}" for k, v in cal["kinds"].items())
        + f" (local, one-step slips: {100 * cal['local_share']:.0f}%).",
        "",
        f"Data: {args.problems} problems x {args.n} samples of the start policy (temperature "
        "0.7), wrong ones rewritten by the exact teacher (rewards as a certain GRM gives them). "
        f"Every method: {args.steps} optimizer steps of {args.batch}, constant lr {args.lr} "
        f"after {args.warmup} warmup steps, "
        "same start, same file.",
        "",
        *(
            [
                "**A pilot** (one seed, not every method): it chooses P, n and the step count; "
                "the frozen comparison runs at least 2 seeds of every method.",
                "",
            ]
            if len(args.seeds.split(",")) < 2
            else []
        ),
        "| method | accuracy after (mean of seeds) | vs start (points, 95% interval) | McNemar p "
        "| training time (min, all seeds) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    start = [start_rows]
    vs_start = {m: versus(runs, start) for m, runs in finals.items()}
    acc0 = vs_start[next(iter(vs_start))]["a"]
    lines.append(f"| start policy | {100 * acc0:.1f}% | | | |")
    for m, v in vs_start.items():
        minutes = train_minutes(args.work, m, args.seeds)
        lines.append(f"| {m} | {100 * v['b']:.1f}% | {_pts(v)} | {v['p']:.3g} | {minutes:.1f} |")
    # The headline's RLMEC is the platform's (--headline): rewards from the arith GRM.
    main = headline(args, finals)
    source = ("the arith GRM's" if METHODS[main].data != "teacher"
              else "the exact teacher's (a certain GRM)")  # fmt: skip
    lines += ["", f"Headline (RLMEC = `{main}`, token rewards {source}), each against its target:"]
    if main in finals:
        v = vs_start[main]
        lines.append(f"- `RLMEC vs start: {_pts(v)}` (target +10 with the interval above 0: "
                     f"{_verdict(v['diff'] >= 0.10 and v['lo'] > 0)})")  # fmt: skip
        for other in ("sequence", "rft", "sft", "rlmec_no_im"):
            if other in finals:
                v = versus(finals[main], finals[other])
                target = (f" (target: the interval above 0: {_verdict(v['lo'] > 0)})"
                          if other in ("sequence", "rft") else "")  # fmt: skip
                lines.append(f"- `RLMEC vs {other}: {_pts(v)}`{target}")
    exact = EXACT_TWIN.get(main)
    if main in finals and exact in finals:
        v = versus(finals[main], finals[exact])
        lines.append(f"- `GRM vs exact teacher: {_pts(v)}` (`{exact}`; target: within 3 points: "
                     f"{_verdict(abs(v['diff']) <= 0.03)})")  # fmt: skip
    for variant, (twin, label) in VARIANTS.items():
        if variant in finals:
            lines += ["", f"{label}:"]
            for other in ("start", twin, "rlmec", "sequence", "rft"):
                if other != variant and (other == "start" or other in finals):
                    v = versus(finals[variant], start if other == "start" else finals[other])
                    lines.append(f"- `{variant} vs {other}: {_pts(v)}`")
    if gsm8k is not None:
        seed = args.seeds.split(",")[0]
        lines += ["", f"Nothing else broke? GSM8K, its first {args.gsm8k_limit} test problems, "
                  f"greedy (`{main}`, seed {seed}): {100 * gsm8k['a']:.1f}% before, "
                  f"{100 * gsm8k['b']:.1f}% after, {_pts(gsm8k)} (McNemar p "
                  f"{gsm8k['p']:.3g})."]  # fmt: skip
    if grm is not None:
        lines += ["", *grm_lines(args, grm)]
    exact = args.work / "train_exact.jsonl"
    for name, label in (("train_grm.jsonl", "§3.1"), ("train_grm_edits.jsonl", "edit_penalty")):
        scored = args.work / name
        if exact.is_file() and scored.is_file():
            from benchmarks.learning.agreement import agreement, agreement_line

            lines += ["", f"Rewards ({label}): " + agreement_line(agreement(exact, scored))]
    lines += ["", "![learning curves](benchmarks/learning/learning.png)"]
    return "\n".join(lines)


def headline(args: argparse.Namespace, finals: dict[str, Any]) -> str:
    """The method the headline lines call RLMEC: ``--headline`` when it was trained, else the
    exact teacher's ``rlmec``."""
    return args.headline if args.headline in finals else "rlmec"


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def train_minutes(work: Path, method: str, seeds: str) -> float:
    """The optimizer steps' time of a method's runs (metrics.jsonl; a resumed step counts
    once)."""
    total = 0.0
    for seed in seeds.split(","):
        path = work / (f"{method}-s{seed}" if seed else method) / "metrics.jsonl"
        steps = {}
        for line in path.read_text().splitlines() if path.is_file() else []:
            m = json.loads(line)
            steps[m["step"]] = m["step_time_s"]
        total += sum(steps.values())
    return total / 60


def grm_lines(args: argparse.Namespace, grm: dict[str, Any]) -> list[str]:
    from benchmarks.learning.grm import LORA

    if grm.get("shipped"):
        return [
            "The arith GRM: the adapter shipped in `datasets/adapters/grm-smollm2-arith` "
            "(`--grm shipped`: not trained or judged again in this call; section "
            "`grm_quality` has its judgement). The shared sample set scored by it through "
            f"`rlmec grm serve` + the reward service: {grm['scored']}."
        ]
    j = grm["judge"]
    curve = ", ".join(f"step {c['step']} {100 * c['locate']['exact_match']:.0f}%"
                      for c in grm["curve"] if "locate" in c)  # fmt: skip
    ratio = j["edit_fraction_median"] / max(j["true_edit_fraction_median"], 1e-9)
    ok = (j["locate_accuracy"] >= 0.9, j["rewrites_reaching_reference"] >= 0.9, ratio <= 1.5)
    return [
        "The arith GRM: a LoRA adapter of SmolLM2-135M-Instruct (`rlmec grm train --config "
        f"grm-cpu.yaml {' '.join(LORA)}`, shipped in `datasets/adapters/`) for "
        f"{args.grm_steps} steps of 8 ({grm['minutes']:.0f} min of steps) on the exact "
        f"teacher's rewrites of the start policy's own errors ({args.grm_problems} "
        f"`arith_train` problems x 2 samples; examples {grm['examples']}). Validation locate "
        f"accuracy during training: {curve}.",
        f"Judged on {j['n']} held-out real wrong solutions of the start policy to `arith` test "
        "problems (the exact teacher's step and rewrite as the truth; a GRM that always names "
        f"step 0 would locate {100 * grm['floor']:.1f}%), through the GRM service's own path:",
        f"- `{arith_grm_line(j)}` (targets 90% and 90%: {_verdict(ok[0])}, {_verdict(ok[1])});",
        f"- median edit fraction {j['edit_fraction_median']:.3f} against the exact teacher's "
        f"{j['true_edit_fraction_median']:.3f}: {ratio:.2f}x (target 1.5x: {_verdict(ok[2])}); "
        f"mean {j['edit_fraction']:.3f} against {j['true_edit_fraction']:.3f}.",
        "- The shared sample set scored by it through `rlmec grm serve` + the reward service: "
        + (
            f"{grm['scored']}."
            if grm.get("scored")
            else "not run (it runs when --methods has rlmec_grm or rlmec_grm_edits)."
        ),
    ]


def arith_grm_line(j: dict[str, Any]) -> str:
    return (f"arith GRM on real errors: locate {100 * j['locate_accuracy']:.1f}%, reaches "
            f"{100 * j['rewrites_reaching_reference']:.1f}%")  # fmt: skip


def main() -> None:
    args = parse_args()
    args.model = str(Path(args.model).expanduser())
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    start = warm_start(args)
    start_rows = evaluate(start, args.work / "eval" / "start")
    cal = calibration(start_rows)
    print(json.dumps({"calibration": cal}, indent=1))
    if args.stage == "calibrate":
        return
    samples = sample_set(args, start)
    data = teach_and_score(args, samples, start)
    seeds = [int(s) for s in args.seeds.split(",")]
    grm_result: dict[str, Any] | None = None
    grm_files: dict[str, Path] = {}
    if args.grm_steps:
        grm_result, grm_files = make_grm(args, start, start_rows, samples)
        print(json.dumps({"grm": grm_result}, indent=1))
    # Trained in --methods order (the GRM's methods only when the GRM scored the sample set).
    grm_files["teacher"] = data
    files = {name: grm_files[METHODS[name].data] for name in args.methods.split(",")
             if METHODS[name].data in grm_files}  # fmt: skip
    if args.stage == "grm":
        if grm_result is not None:
            print("\n".join(grm_lines(args, grm_result)))
            if not args.no_write and "judge" in grm_result:
                write_grm_line(grm_result)
        return
    curves: dict[str, dict[int, list[dict[str, Any]]]] = {}
    for name, train_file in files.items():
        per_seed = [run_method(args, name, seed, start, train_file) for seed in seeds]
        curves[name] = {s: [c[s] for c in per_seed] for s in per_seed[0]}
    finals = {m: c[max(c)] for m, c in curves.items()}
    if not args.no_write:  # the PNG is part of what BENCHMARKS.md shows
        plot(curves, start_rows, Path(__file__).with_name("learning.png"))
    main_method = headline(args, finals)
    gsm8k = None
    if args.gsm8k_limit and main_method in finals:
        gsm8k = gsm8k_check(args, start, main_method)
    body = report(args, cal, finals, start_rows, (time.time() - t0) / 60, grm_result, gsm8k)
    print(body)
    if not args.no_write:
        replace_section("learning", body)
        if grm_result is not None and "judge" in grm_result:
            write_grm_line(grm_result)


def write_grm_line(grm: dict[str, Any]) -> None:
    set_line("grm_quality", "arith GRM on real errors:",
             f"`{arith_grm_line(grm['judge'])}` (section `learning` has the details; "
             "`python -m benchmarks.learning.run --stage grm` writes this line)")  # fmt: skip


if __name__ == "__main__":
    main()
