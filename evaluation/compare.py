"""Did training help? Two evaluations side by side, paired on the rows both answered.

For each task: accuracy of A and B on the shared rows, the difference B - A with a 95% paired
bootstrap interval (rows resampled together, seeded), and the exact McNemar test on the rows
where the two disagree. An interval that excludes 0 (and a small p) says the difference is not
noise; a run with ``--limit 200`` resolves differences of a few points at best.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

from rlmec.evaluation.run import SAMPLES_FILE
from rlmec.shared.jsonl import read_rows

BOOTSTRAP_ROUNDS = 2000


@dataclass(frozen=True)
class TaskComparison:
    task: str
    shared: int
    accuracy_a: float
    accuracy_b: float
    low: float  # 95% interval of accuracy_b - accuracy_a
    high: float
    b_only: int  # rows only B got right
    a_only: int
    p_value: float  # exact McNemar (two-sided binomial on the discordant rows)

    @property
    def difference(self) -> float:
        return self.accuracy_b - self.accuracy_a


def mcnemar_p(b_only: int, a_only: int) -> float:
    """Two-sided exact McNemar p-value: under "no difference" each discordant row is a fair
    coin flip between the two models."""
    n = b_only + a_only
    if n == 0:
        return 1.0
    k = min(b_only, a_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_bootstrap(
    a: list[bool], b: list[bool], *, rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0
) -> tuple[float, float]:
    """95% interval of mean(b) - mean(a), resampling the rows (pairs kept together)."""
    n = len(a)
    if n == 0:
        return 0.0, 0.0
    rng = random.Random(seed)
    deltas = [int(y) - int(x) for x, y in zip(a, b, strict=True)]
    means = sorted(sum(deltas[rng.randrange(n)] for _ in range(n)) / n for _ in range(rounds))
    return means[int(0.025 * rounds)], means[min(rounds - 1, int(0.975 * rounds))]


def _correct_by_id(run_dir: Path, task: str) -> dict[str, bool]:
    return {r["id"]: bool(r["correct"]) for r in read_rows(run_dir / task / SAMPLES_FILE)}


def _run_dir(results: Path) -> Path:
    """A results.json, or the output directory holding one."""
    path = results if results.is_dir() else results.parent
    if not (path / "results.json").is_file():
        raise FileNotFoundError(
            f"no results.json at {results}; pass an `rlmec eval --output` directory or its "
            "results.json"
        )
    return path


def compare(a: Path, b: Path, *, seed: int = 0) -> list[TaskComparison]:
    """Compare every task both runs evaluated, on the rows both answered."""
    dir_a, dir_b = _run_dir(a), _run_dir(b)
    tasks_a = json.loads((dir_a / "results.json").read_text())["tasks"]
    tasks_b = json.loads((dir_b / "results.json").read_text())["tasks"]
    shared_tasks = [t for t in tasks_a if t in tasks_b]
    if not shared_tasks:
        raise ValueError(
            f"{a} and {b} evaluated no task in common ({list(tasks_a)} vs {list(tasks_b)})"
        )
    out = []
    for task in shared_tasks:
        ca, cb = _correct_by_id(dir_a, task), _correct_by_id(dir_b, task)
        ids = sorted(set(ca) & set(cb))
        xa, xb = [ca[i] for i in ids], [cb[i] for i in ids]
        low, high = paired_bootstrap(xa, xb, seed=seed)
        b_only = sum(y and not x for x, y in zip(xa, xb, strict=True))
        a_only = sum(x and not y for x, y in zip(xa, xb, strict=True))
        n = len(ids) or 1
        out.append(TaskComparison(
            task, len(ids), sum(xa) / n, sum(xb) / n, low, high, b_only, a_only,
            mcnemar_p(b_only, a_only),
        ))  # fmt: skip
    return out


def format_comparison(rows: list[TaskComparison], name_a: str, name_b: str) -> str:
    header = (
        f"{'task':<12} {'rows':>5} {name_a[:12]:>12} {name_b[:12]:>12} {'B - A':>7}  "
        f"{'95% interval':>17}  {'McNemar p':>9}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.task:<12} {r.shared:>5} {100 * r.accuracy_a:>11.1f}% {100 * r.accuracy_b:>11.1f}% "
            f"{100 * r.difference:>+6.1f}  [{100 * r.low:>+6.1f}, {100 * r.high:>+6.1f}]  "
            f"{r.p_value:>9.3g}"
        )
    better = [r.task for r in rows if r.low > 0]
    worse = [r.task for r in rows if r.high < 0]
    lines.append("")
    lines.append(f"B better than A (interval above 0): {', '.join(better) or 'none'}")
    lines.append(f"B worse than A (interval below 0): {', '.join(worse) or 'none'}")
    return "\n".join(lines)
