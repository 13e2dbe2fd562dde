"""What the loop is doing, read from where each stage already writes it: the actor's and the
trainer's ``metrics.jsonl``, the team's queue depth, and the scored batches themselves.

Scored batches are read through a consumer group of their own (``monitor``) and acknowledged
with a plain ``XACK``: the stream keeps every entry until all groups are done with it, so none
is missed, and the trainer's group, counters and ``consumed`` marks are left alone.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlmec.shared.jsonl import read_rows
from rlmec.shared.queue import RolloutQueue, ScoredBatch, keys_for

MONITOR_GROUP = "monitor"


@dataclass
class ScoredTally:
    """Every scored sample the loop produced, summed up."""

    batches: int = 0
    samples: int = 0
    scored: int = 0
    wrong: int = 0  # of the scored
    unscored: Counter[str] = field(default_factory=Counter)  # reason -> samples
    # (seconds since start, mean token reward of the batch's scored samples)
    rewards: list[tuple[float, float]] = field(default_factory=list)
    # per batch: when it was scored (Unix time), its samples, how many were scored
    log: list[dict[str, Any]] = field(default_factory=list)

    def add(self, batch: ScoredBatch, since: float) -> None:
        self.batches += 1
        means = []
        for r in batch.results:
            self.samples += 1
            if r.status != "scored":
                self.unscored[r.reason or "unknown"] += 1
                continue
            self.scored += 1
            self.wrong += not r.correct
            if r.rewards is not None and r.rewards.values:
                means.append(sum(r.rewards.values) / len(r.rewards.values))
        if means:
            self.rewards.append((batch.scored_at - since, sum(means) / len(means)))
        self.log.append({"batch_id": batch.batch_id, "scored_at": batch.scored_at,
                         "samples": len(batch.results), "scored": len(means),
                         "policy_version": batch.policy_version})  # fmt: skip


class LoopMonitor:
    def __init__(self, client: Any, team: str, actor_dir: Path, trainer_dir: Path) -> None:
        self.client, self.team = client, team
        self.keys = keys_for(team)
        self.actor_dir, self.trainer_dir = actor_dir, trainer_dir
        self.queue = RolloutQueue(client)
        self.tally = ScoredTally()
        self.started = time.time()
        try:
            client.xgroup_create(self.keys.scored, MONITOR_GROUP, id="0", mkstream=True)
        except Exception as exc:  # BUSYGROUP: a rerun in the same Redis
            if "BUSYGROUP" not in str(exc):
                raise

    def poll(self) -> None:
        """Take in the scored batches that arrived since the last call."""
        while True:
            reply = self.client.xreadgroup(MONITOR_GROUP, "m", {self.keys.scored: ">"}, count=64)
            entries = reply[0][1] if reply else []
            if not entries:
                return
            for entry_id, fields in entries:
                raw = fields.get(b"batch") or fields.get("batch")
                if raw is not None:
                    self.tally.add(ScoredBatch.model_validate_json(raw), self.started)
                self.client.xack(self.keys.scored, MONITOR_GROUP, entry_id)

    def actor_reports(self) -> list[dict[str, Any]]:
        return read_rows(self.actor_dir / "metrics.jsonl")

    def trainer_steps(self) -> list[dict[str, Any]]:
        return read_rows(self.trainer_dir / "metrics.jsonl")

    def depth(self) -> Any:
        return self.queue.depth(self.team)
