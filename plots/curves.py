"""Training curves of a run directory: ``metrics.jsonl`` (one row per optimizer step, from
``rlmec train`` or ``rlmec grm train``) and, when present, ``eval.jsonl`` (held-out scores per
example kind, ``rlmec grm train``), drawn as one PNG with a panel per quantity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlmec.shared.jsonl import read_rows

PNG = "curves.png"
# (panel title, metrics.jsonl keys): a panel is drawn when its run logged one of its keys.
PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("loss", ("loss", "rl_loss", "imitation_loss")),
    ("mean token reward", ("mean_reward",)),
    ("ratio to the behaviour policy", ("mean_ratio", "clip_fraction")),
    ("learning rate", ("lr",)),
    ("tokens/s", ("tokens_per_s",)),
    ("policy lag of trained samples (online)", ("lag_0", "lag_1", "lag_2", "lag_3plus")),
)


class NoMetrics(ValueError):
    """The directory holds no metrics.jsonl rows: not a run directory, or a run not started."""


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The step rows of a run's file; a live run's torn last line is skipped (read_rows)."""
    return [r for r in read_rows(path) if isinstance(r, dict) and "step" in r]


def _by_step(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last row of each step (a resumed run logs a step again), in step order."""
    return sorted({r["step"]: r for r in rows}.values(), key=lambda r: r["step"])


Series = dict[str, list[tuple[int, float]]]  # series name -> (step, value) points


def panels(steps: list[dict[str, Any]], evals: list[dict[str, Any]]) -> list[tuple[str, Series]]:
    """(title, {series name: [(step, value)]}) of every panel the run has data for; the held-out
    scores make a panel per metric with a series per example kind."""
    out = []
    for title, keys in PANELS:
        series = {k: [(r["step"], float(r[k])) for r in steps if k in r] for k in keys}
        series = {k: v for k, v in series.items() if v}
        if not any(y for v in series.values() for _, y in v):
            continue  # all 0: what the run does not use (lag offline, rewards under sft)
        if series:
            out.append((title, series))
    metrics: dict[str, Series] = {}
    for row in evals:
        for kind, values in row.items():
            if isinstance(values, dict):
                for name, value in values.items():
                    if name != "n" and isinstance(value, int | float):
                        metrics.setdefault(name, {}).setdefault(kind, []).append(
                            (row["step"], float(value))
                        )
    out += [(f"held-out {name}", series) for name, series in metrics.items()]
    return out


def plot_run(run_dir: Path, out: Path | None = None) -> Path:
    """Write the run's curves (``run_dir/curves.png`` unless ``out``); :class:`NoMetrics` when
    there is nothing to draw."""
    steps = _by_step(read_jsonl(run_dir / "metrics.jsonl"))
    if not steps:
        raise NoMetrics(f"{run_dir} holds no metrics.jsonl rows; give the output_dir of an "
                        "`rlmec train` or `rlmec grm train` run")  # fmt: skip
    drawn = panels(steps, _by_step(read_jsonl(run_dir / "eval.jsonl")))
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    import matplotlib.pyplot as plt

    cols = min(3, len(drawn))
    rows = (len(drawn) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, (title, series) in zip(axes.flat, drawn, strict=False):
        for name, points in series.items():
            ax.plot([x for x, _ in points], [y for _, y in points], label=name,
                    marker="." if len(points) < 40 else None)  # fmt: skip
        ax.set(title=title, xlabel="optimizer step")
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(drawn) :]:
        ax.set_visible(False)
    fig.suptitle(f"{run_dir.name}: {len(steps)} steps", fontsize=10)
    fig.tight_layout()
    path = out or run_dir / PNG
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_quietly(run_dir: Path) -> Path | None:
    """The end of a training run: its curves, or None (a message, never a failed run) when
    matplotlib is not installed."""
    try:
        return plot_run(run_dir)
    except ModuleNotFoundError as exc:
        print(f"no curves.png: {exc.name} is not installed (pip install 'rlmec[loop]')")
    except NoMetrics:
        pass
    return None
