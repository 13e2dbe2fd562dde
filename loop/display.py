"""The live view of the loop: one row per stage (a ``rich`` table, redrawn in place on a
terminal; a plain line every ``plain_every_s`` seconds when the output is a log file)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from rlmec.loop.monitor import LoopMonitor


@dataclass(frozen=True)
class Snapshot:
    elapsed_s: float
    budget_s: float
    rollout_batches: int
    rollout_samples: int
    actor_version: int
    queued: int
    scored_waiting: int
    scored: int
    wrong: int
    unscored: int
    steps: int
    total_steps: int
    trainer_version: int
    stale_batches: int
    loss: float | None
    reward: float | None

    @property
    def samples_per_s(self) -> float:
        return self.rollout_samples / self.elapsed_s if self.elapsed_s > 0 else 0.0


def snapshot(monitor: LoopMonitor, started: float, budget_s: float, total_steps: int) -> Snapshot:
    monitor.poll()
    actor, steps, depth, tally = (
        monitor.actor_reports(), monitor.trainer_steps(), monitor.depth(), monitor.tally
    )  # fmt: skip
    last = steps[-1] if steps else {}
    return Snapshot(
        elapsed_s=time.monotonic() - started, budget_s=budget_s,
        rollout_batches=len(actor), rollout_samples=sum(r["samples"] for r in actor),
        actor_version=actor[-1]["policy_version"] if actor else 0,
        queued=depth.queued_samples, scored_waiting=depth.scored_samples,
        scored=tally.scored, wrong=tally.wrong, unscored=sum(tally.unscored.values()),
        steps=len(steps), total_steps=total_steps,
        trainer_version=last.get("policy_version", 0), stale_batches=last.get("stale_batches", 0),
        loss=last.get("loss"), reward=last.get("mean_reward"),
    )  # fmt: skip


def table(s: Snapshot) -> Any:
    from rich.table import Table

    t = Table(title=f"rlmec online loop: {s.elapsed_s / 60:.1f} of {s.budget_s / 60:.0f} min",
              title_justify="left")  # fmt: skip
    t.add_column("stage")
    t.add_column("progress", justify="right")
    t.add_column("detail")
    t.add_row("rollouts", f"{s.rollout_samples} samples",
              f"{s.rollout_batches} batches, {s.samples_per_s:.2f} samples/s, "
              f"actor on policy v{s.actor_version}")  # fmt: skip
    t.add_row("queued", f"{s.queued} samples", "waiting for a reward worker")
    t.add_row("scored", f"{s.scored} samples",
              f"{s.wrong} wrong, {s.unscored} unscored; {s.scored_waiting} waiting for the "
              "trainer")  # fmt: skip
    loss = "-" if s.loss is None else f"{s.loss:.4f}"
    reward = "-" if s.reward is None else f"{s.reward:+.4f}"
    t.add_row("trained", f"step {s.steps}/{s.total_steps}",
              f"loss {loss}, mean token reward {reward}, {s.stale_batches} stale batches "
              "skipped")  # fmt: skip
    t.add_row("policy", f"v{s.trainer_version}", "newest version the trainer published")
    return t


def line(s: Snapshot) -> str:
    loss = "-" if s.loss is None else f"{s.loss:.4f}"
    return (
        f"[{s.elapsed_s / 60:4.1f} min] rollouts {s.rollout_samples} ({s.samples_per_s:.2f}/s, "
        f"actor v{s.actor_version}) | queued {s.queued} | scored {s.scored} (wrong {s.wrong}, "
        f"unscored {s.unscored}) | trained step {s.steps}/{s.total_steps} loss {loss} | "
        f"policy v{s.trainer_version}, stale {s.stale_batches}"
    )
