"""The loop's summary (text) and its plot (PNG): token reward over time, the losses per
optimizer step, and held-out accuracy before and after with its 95% interval."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlmec.loop.monitor import ScoredTally


def summary(
    tally: ScoredTally, steps: list[dict[str, Any]], actor: list[dict[str, Any]],
    comparison: str | None,
) -> str:  # fmt: skip
    lines = ["", "=== rlmec online loop: summary ==="]
    generated = sum(r["samples"] for r in actor)
    refreshes = sum(r["reload_s"] is not None for r in actor)
    lines.append(f"rollouts generated: {generated} samples in {len(actor)} batches; "
                 f"weight refreshes in the actor: {refreshes}")  # fmt: skip
    share = tally.wrong / tally.scored if tally.scored else 0.0
    lines.append(f"samples through the reward service: {tally.samples}; scored {tally.scored} "
                 f"({share:.0%} of them wrong)")  # fmt: skip
    if tally.unscored:
        why = ", ".join(f"{reason} {n}" for reason, n in tally.unscored.most_common())
        lines.append(f"unscored: {sum(tally.unscored.values())} ({why})")
    else:
        lines.append("unscored: none")
    if tally.rewards:
        thirds = _thirds([r for _, r in tally.rewards])
        lines.append("mean token reward of scored batches, first/middle/last third: "
                     + " / ".join(f"{v:+.4f}" for v in thirds))  # fmt: skip
    if steps:
        first, last = steps[0], steps[-1]
        lines.append(f"optimizer steps: {len(steps)}; loss {first['loss']:.4f} -> "
                     f"{last['loss']:.4f} (rl {last['rl_loss']:.4f}, imitation "
                     f"{last['imitation_loss']:.4f}); policy version {last['policy_version']}; "
                     f"stale batches skipped {last['stale_batches']}")  # fmt: skip
    else:
        lines.append("optimizer steps: none (no scored batch reached the trainer)")
    if comparison:
        lines += ["held-out accuracy, before (A) and after (B) training:", comparison]
    return "\n".join(lines)


def _thirds(values: list[float]) -> list[float]:
    k = max(1, len(values) // 3)
    parts = [values[:k], values[k : len(values) - k] or values[:k], values[len(values) - k :]]
    return [sum(p) / len(p) for p in parts]


def plot(
    path: Path, tally: ScoredTally, steps: list[dict[str, Any]],
    accuracy: tuple[float, float, float, float] | None,
) -> Path:  # fmt: skip
    """``accuracy``: (before, after, interval low, interval high) of after - before."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ax = axes[0]
    if tally.rewards:
        ax.plot([t / 60 for t, _ in tally.rewards], [r for _, r in tally.rewards], marker=".")
    ax.set(title="mean token reward per scored batch", xlabel="minutes", ylabel="reward")
    ax = axes[1]
    if steps:
        x = [s["step"] for s in steps]
        for key in ("loss", "rl_loss", "imitation_loss"):
            ax.plot(x, [s[key] for s in steps], label=key)
        ax.legend()
    ax.set(title="trainer losses", xlabel="optimizer step")
    ax = axes[2]
    if accuracy is not None:
        before, after, low, high = accuracy
        bars = ax.bar(["before", "after"], [before, after], color=["grey", "tab:blue"])
        ax.bar_label(bars, labels=[f"{before:.1%}", f"{after:.1%}"])
        ax.errorbar([1], [after], yerr=[[after - (before + low)], [(before + high) - after]],
                    fmt="none", ecolor="black", capsize=6)  # fmt: skip
    ax.set(title="held-out accuracy (95% interval of the change)", ylim=(0, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
