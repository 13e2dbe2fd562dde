"""``rlmec eval compare --plot``: each task's accuracy of A and B with B's 95% interval of the
paired difference drawn around B."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol


class Comparison(Protocol):
    """What :class:`rlmec.evaluation.compare.TaskComparison` carries (plots imports no
    evaluation code)."""

    @property
    def task(self) -> str: ...
    @property
    def shared(self) -> int: ...
    @property
    def accuracy_a(self) -> float: ...
    @property
    def accuracy_b(self) -> float: ...
    @property
    def low(self) -> float: ...
    @property
    def high(self) -> float: ...


def plot_comparison(rows: Sequence[Comparison], path: Path, name_a: str = "A",
                    name_b: str = "B") -> Path:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(rows) + 2), 4))
    x = list(range(len(rows)))
    a = [100 * r.accuracy_a for r in rows]
    b = [100 * r.accuracy_b for r in rows]
    ax.bar([i - 0.2 for i in x], a, width=0.4, label=name_a, color="grey")
    bars = ax.bar([i + 0.2 for i in x], b, width=0.4, label=name_b, color="tab:blue")
    # B's interval: A's accuracy plus the paired difference's interval (rlmec eval compare).
    low = [yb - (ya + 100 * r.low) for r, ya, yb in zip(rows, a, b, strict=True)]
    high = [(ya + 100 * r.high) - yb for r, ya, yb in zip(rows, a, b, strict=True)]
    ax.errorbar([i + 0.2 for i in x], b, yerr=[low, high], fmt="none", ecolor="black", capsize=5)
    ax.bar_label(
        bars, labels=[f"{100 * (r.accuracy_b - r.accuracy_a):+.1f}" for r in rows], padding=12
    )
    ax.set_xticks(x, [f"{r.task}\n({r.shared} rows)" for r in rows])
    ax.set(ylabel="accuracy (%)", ylim=(0, 100),
           title="accuracy per task (B: change, 95% interval)")  # fmt: skip
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
