"""The one record of the GRM-making pipeline (method §1, steps 1-3), and the released code's.

Every step reads and writes JSONL of :class:`GrmRecord`: ``rlmec data sample`` writes the
policy's solutions (``source="policy"``, ``correct`` set); ``rlmec data distill`` adds the
teacher's located step and rewrite to the wrong ones; ``rlmec data synth`` writes synthetic
wrong solutions with their exact step and rewrite. ``rlmec data grm-sft`` turns accepted
records into GRM training examples.

The authors' released code keeps ``question, solution, prediction, error_step, fix_pred,
is_correct`` per row: :func:`to_released` / :func:`from_released` convert, so existing data can
come in and go out.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from rlmec.shared.prompts import TaskType
from rlmec.shared.schemas import StrictModel

Source = Literal["policy", "teacher", "synthetic", "released"]
Verdict = Literal["accepted", "dropped"]


class GrmRecord(StrictModel):
    id: str = Field(min_length=1, description="Unique id: '<problem id>#<sample>' or similar.")
    task: str = Field(description="Task name (gsm8k_train, ...).")
    task_type: TaskType
    question: str
    reference_solution: str
    reference_answer: str
    prediction: str = Field(description="The solution under judgement.")
    correct: bool = Field(description="Whether the prediction's final answer is right (§4).")
    error_step: int | None = Field(None, ge=0, description="First wrong step (0-based).")
    rewrite: str | None = Field(None, description="Minimal rewrite of the prediction.")
    source: Source = "policy"
    verdict: Verdict | None = Field(None, description="Teacher data: kept or dropped.")
    reason: str | None = Field(None, description="Why it was dropped (or how it was kept).")
    meta: dict[str, Any] = Field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        """A wrong prediction with a located step and a rewrite that reaches the reference."""
        usable = not self.correct and self.error_step is not None and bool(self.rewrite)
        return usable and self.verdict != "dropped"


def to_released(record: GrmRecord) -> dict[str, Any]:
    """The released code's row (its ``fix_pred`` is the rewrite, ``is_correct`` the verdict
    on the prediction)."""
    return {
        "question": record.question,
        "solution": record.reference_solution,
        "prediction": record.prediction,
        "error_step": record.error_step,
        "fix_pred": record.rewrite,
        "is_correct": record.correct,
    }


def from_released(
    row: dict[str, Any], *, task: str, task_type: TaskType, index: int, answer: str
) -> GrmRecord:
    """A released-format row as a record; ``answer`` is the reference answer of its solution."""
    step = row.get("error_step")
    return GrmRecord(
        id=f"released/{task}/{index}", task=task, task_type=task_type,
        question=str(row["question"]), reference_solution=str(row["solution"]),
        reference_answer=answer, prediction=str(row["prediction"]),
        correct=bool(row.get("is_correct", False)),
        error_step=int(step) if step is not None else None,
        rewrite=row.get("fix_pred") or None, source="released",
    )  # fmt: skip
