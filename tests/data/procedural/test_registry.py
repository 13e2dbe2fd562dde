"""Every exact teacher runs through one record flow: ``rlmec data distill --teacher <task>``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlmec.cli import main
from rlmec.data.procedural.registry import TASKS
from rlmec.data.records import GrmRecord
from rlmec.shared.jsonl import read_rows

CASES = {
    "lines": (
        "Compute each: 47 + 38; 91 - 26.",
        "47 + 38 = 85\n91 - 26 = 64\nThe answer is: 85; 64",
        "85; 65",
        "lines-exact",
    ),
    "paths": (
        "Add 17, 48 and 23.",
        "23 + 17 = 40\n40 + 48 = 98\nThe answer is: 98",
        "88",
        "paths-exact",
    ),
}


@pytest.mark.parametrize("task", sorted(CASES))
def test_distill_with_an_exact_teacher(
    task: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    question, prediction, answer, name = CASES[task]
    record = GrmRecord(
        id=f"{task}/0#0",
        task=task,
        task_type="math",
        question=question,
        reference_solution="",
        reference_answer=answer,
        prediction=prediction,
        correct=False,
    )
    samples, out = tmp_path / "samples.jsonl", tmp_path / "taught.jsonl"
    samples.write_text(json.dumps(record.model_dump(mode="json")) + "\n")
    assert (
        main(["data", "distill", "--teacher", task, "--input", str(samples), "--output", str(out)])
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["teacher"] == name == TASKS[task].teacher.name
    assert summary["outcomes"] == {"accepted: rewrite_reaches_reference": 1}
    (row,) = read_rows(out)
    assert row["verdict"] == "accepted" and row["meta"]["teacher"] == name
    assert row["rewrite"].endswith(f"The answer is: {answer}") and row["error_step"] == 1
