"""Progress of a training recipe on rank 0: a console bar, TensorBoard, ``metrics.jsonl`` and, at
the end, ``curves.png`` (:mod:`rlmec.plots.curves`)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any


class Reporter:
    """``report(metrics, line)`` per optimizer step: ``metrics`` (a dataclass with a ``step``
    field) goes to ``metrics.jsonl`` and TensorBoard, ``line`` to the console every
    ``log_every`` steps."""

    def __init__(
        self, output_dir: str | Path, log_every: int, rank: int, start: int, total: int, desc: str
    ) -> None:
        from tqdm import tqdm

        self.on = rank == 0
        self.every = log_every
        self.bar = tqdm(total=total, initial=start, disable=not self.on, desc=desc)
        self.writer: Any = None
        self.path = Path(output_dir) / "metrics.jsonl"
        if self.on:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(Path(output_dir) / "tensorboard"))

    def report(self, metrics: Any, line: str, **postfix: str) -> None:
        if not self.on:
            return
        values = asdict(metrics)
        self.bar.update(1)
        self.bar.set_postfix(**postfix)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(values) + "\n")
        if values["step"] % self.every == 0:
            for name, value in values.items():
                if name != "step":
                    self.writer.add_scalar(f"train/{name}", value, values["step"])
            self.bar.write(line)

    def report_eval(self, step: int, scores: dict[str, dict[str, float]], line: str) -> None:
        """Held-out scores per example kind: ``eval.jsonl``, TensorBoard ``eval/...``, console."""
        if not self.on:
            return
        with (self.path.parent / "eval.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"step": step, **scores}) + "\n")
        for kind, values in scores.items():
            for name, value in values.items():
                if name != "n":
                    self.writer.add_scalar(f"eval/{kind}/{name}", value, step)
        self.bar.write(line)

    def close(self) -> None:
        """Close the bar and TensorBoard, and draw the run's curves (``curves.png``)."""
        self.bar.close()
        if self.writer is not None:
            self.writer.close()
        if self.on:
            from rlmec.plots.curves import plot_quietly

            # A plot never fails the run it describes (which may be ending on an error).
            try:
                plot_quietly(self.path.parent)
            except Exception as exc:
                self.bar.write(f"curves.png not written: {exc!r}")
