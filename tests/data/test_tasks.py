"""The shipped data sets: every task loads with the row count of datasets/README.md, typed
rows hold a reference answer the checker accepts, subsets are fixed by the seed, and a missing
data folder or an unknown task is a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlmec.data.tasks import EVAL_TASKS, TASKS, data_dir, load_task, raw_rows, resolve_tasks
from rlmec.shared.answers import check_prediction


@pytest.mark.parametrize("name", list(TASKS))
def test_every_task_loads_with_its_published_row_count(name: str) -> None:
    problems = load_task(name)
    assert len(problems) == TASKS[name].rows
    assert len({p.id for p in problems}) == len(problems)
    first = problems[0]
    assert first.task == name and first.task_type == TASKS[name].task_type
    assert first.question.strip() and first.reference_answer.strip()
    if first.task_type == "qa":
        assert "\nOptions:\n" in first.question


@pytest.mark.parametrize("name", EVAL_TASKS)
def test_reference_solutions_reach_their_own_answers(name: str) -> None:
    for p in load_task(name, limit=200):
        assert check_prediction(p.reference_solution, p.reference_answer, p.task_type).correct


def test_readme_lists_every_file_with_its_rows() -> None:
    readme = (data_dir() / "README.md").read_text(encoding="utf-8")
    for spec in TASKS.values():
        if spec.file_stem is not None:  # procedural tasks (arith) have no file
            assert spec.file_stem in readme and str(spec.rows) in readme


def test_a_limit_is_a_fixed_seeded_subset() -> None:
    a, b = load_task("gsm8k", limit=50), load_task("gsm8k", limit=50)
    assert [p.id for p in a] == [p.id for p in b]
    assert [p.id for p in a] != [p.id for p in load_task("gsm8k", limit=50, seed=1)]
    assert [int(p.id.split("/")[1]) for p in a] == sorted(int(p.id.split("/")[1]) for p in a)


def test_svamp_and_mmlu_rows_are_built_from_their_fields() -> None:
    svamp = load_task("svamp")[0]
    assert svamp.question.endswith("How much do you have to pay to buy each pack?")
    assert svamp.reference_answer == "51" and svamp.reference_solution.endswith("#### 51")
    mmlu = load_task("mmlu_math")[0]
    assert mmlu.question.endswith("\nOptions:\np = 4\np = 8\np = 12\np = 24")
    assert mmlu.reference_answer == "p = 12"


def test_all_is_the_eight_evaluation_sets_and_unknown_names_are_refused() -> None:
    assert resolve_tasks("all") == list(EVAL_TASKS) and len(EVAL_TASKS) == 8
    assert resolve_tasks("gsm8k, arc_easy") == ["gsm8k", "arc_easy"]
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['gsm9k'\]; choose from gsm8k"):
        resolve_tasks("gsm8k,gsm9k")


def test_a_missing_data_folder_names_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLMEC_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="set RLMEC_DATA_DIR"):
        raw_rows("gsm8k_test")
