"""The answer checker on the real benchmark rows (the repository's datasets/): every
reference solution must be judged correct against its own answer, a policy-style restatement
(`The answer is: X`) must be too, and perturbed answers must never match.

Measured agreement (BENCHMARKS.md, "answer checking"): 100.0% on every set below. The one
MATH row that failed at first ("the answer is a multiple of 3 ... \\boxed{42}") is fixed by
letting a box after the last marker win.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from rlmec.data.tasks import raw_rows
from rlmec.shared.answers import (
    _to_number,
    answers_match,
    check_prediction,
    extract_answer,
    reference_answer,
)
from rlmec.shared.prompts import TaskType

QA_SETS = ["ecqa_test", "qasc_test", "openbookqa_test", "arc_easy_test"]


def _rows(name: str) -> list[dict[str, Any]]:
    return raw_rows(name)


def _solutions(name: str) -> tuple[TaskType, list[tuple[str, str]]]:
    """(solution, its own answer) pairs: GSM8K's `####`, MATH's box, the QA `answer` field."""
    rows = _rows(name)
    if name == "gsm8k_test":
        pairs = [(r["answer"], r["answer"].split("####")[-1].strip()) for r in rows]
        return "math", pairs
    if name == "math_test":
        solutions = [r["solution"] for r in rows]
        return "math", [(s, reference_answer(s, "math") or "") for s in solutions]
    return "qa", [(r["solution"], r["answer"]) for r in rows]


def _agreement(task: TaskType, pairs: list[tuple[str, str]]) -> tuple[float, list[str]]:
    failures = [
        f"{answer!r} <- {solution[-120:]!r}"
        for solution, answer in pairs
        if not check_prediction(solution, answer, task).correct
    ]
    return 1 - len(failures) / len(pairs), failures


@pytest.mark.parametrize(
    ("name", "rows"),
    [("gsm8k_test", 1319), ("math_test", 5000)] + [(n, None) for n in QA_SETS],
)
def test_every_reference_solution_matches_its_own_answer(name: str, rows: int | None) -> None:
    task, pairs = _solutions(name)
    if rows is not None:
        assert len(pairs) == rows
    assert all(answer for _, answer in pairs), "every row must carry a reference answer"
    rate, failures = _agreement(task, pairs)
    assert rate == 1.0, f"{name}: agreement {rate:.4f}; failures: {failures[:5]}"


def _policy_style(solution: str, answer: str) -> str:
    """The MetaMath-style ending the math policy prompt asks for (§2.3)."""
    body = solution.split("####")[0].rstrip()
    return f"{body}\nThe answer is: {answer}"


def test_gsm8k_policy_style_and_perturbed_answers() -> None:
    _, pairs = _solutions("gsm8k_test")
    for solution, answer in pairs:
        value = float(answer.replace(",", ""))
        assert check_prediction(_policy_style(solution, answer), answer, "math").correct
        # Without thousands separators, with a dollar sign, as a decimal: still the same.
        assert answers_match(f"${value:.2f}", answer, "math"), answer
        wrong = _policy_style(solution, f"{value + 1:g}")
        assert not check_prediction(wrong, answer, "math").correct, answer


def test_math_numeric_answers_survive_restatement_and_not_perturbation() -> None:
    _, pairs = _solutions("math_test")
    numeric = [(answer, _to_number(answer)) for _, answer in pairs]
    numeric = [(a, v) for a, v in numeric if v is not None]
    assert len(numeric) > 2500  # most MATH answers are plain numbers or fractions
    for answer, value in numeric:
        assert answers_match(f"{value:.6f}", answer, "math"), answer
        assert not answers_match(f"{value + 1:.6f}", answer, "math"), answer
        assert not answers_match(f"{value + 0.01:.6f}", answer, "math"), answer


def test_math_answers_restated_after_the_marker() -> None:
    """Strip the box and restate the answer as the policy would: `The answer is: $X$`."""
    _, pairs = _solutions("math_test")
    for solution, answer in pairs[:1000]:
        unboxed = re.sub(r"\\boxed", "", solution)
        assert check_prediction(f"{unboxed}\nThe answer is: ${answer}$", answer, "math").correct


@pytest.mark.parametrize("name", QA_SETS)
def test_qa_other_options_never_match(name: str) -> None:
    for row in _rows(name):
        options = row["problem"].split("\nOptions:\n", 1)[1].split("\n")
        norm = row["answer"].casefold().rstrip(".").strip()
        for option in options:
            if option.casefold().rstrip(".").strip() == norm:
                continue
            assert not check_prediction(f"The answer is {option}", row["answer"], "qa").correct
        shouted = f"Hmm.\nThe answer is {row['answer'].upper()}."
        assert extract_answer(shouted, "qa") == row["answer"].upper()  # one period stripped
        assert check_prediction(shouted, row["answer"], "qa").correct


def test_svamp_float_answers() -> None:
    rows = raw_rows("svamp")
    for row in rows:
        value = float(row["Answer"])
        shown = int(value) if value.is_integer() else value
        text = f"{row['Body']} {row['Question']}\nThe answer is: {shown}"
        assert check_prediction(text, str(row["Answer"]), "math").correct
