"""``paths``: a sum in any order, references in orders drawn per problem, and an exact teacher
whose minimal edit keeps the policy's own order, so its rewrite is not the reference."""

from __future__ import annotations

import pytest

from rlmec.data.procedural import paths
from rlmec.data.tasks import load_task
from rlmec.shared.answers import check_prediction

Q = "Add 17, 48, 23, 91 and 56."


def test_a_problem_and_references_in_many_orders() -> None:
    assert paths.parse_question(Q) == (17, 48, 23, 91, 56)
    assert paths.question((17, 48, 23, 91, 56)) == Q
    assert paths.solution_in_order([17, 48, 23]) == (
        "17 + 48 = 65\n65 + 23 = 88\nThe answer is: 88"
    )
    problems = load_task("paths", limit=200)
    in_question_order = 0
    for p in problems:
        numbers = paths.parse_question(p.question)
        assert numbers is not None and p.reference_answer == str(sum(numbers))
        assert check_prediction(p.reference_solution, p.reference_answer, "math").correct
        order = paths.order_of(p.reference_solution)
        assert sorted(order) == sorted(numbers)
        in_question_order += order == list(numbers)
    assert in_question_order < 20  # 1 in 120 permutations of 5 numbers, by chance


def test_the_teacher_keeps_the_policys_order_and_recomputes_after_a_slip() -> None:
    pred = "91 + 23 = 114\n114 + 56 = 160\n160 + 17 = 177\n177 + 48 = 225\nThe answer is: 225"
    fix = paths.TEACHER.correct(Q, pred, "235")
    assert fix.reason == "rewrite_reaches_reference" and fix.step == 1
    assert fix.rewrite == (
        "91 + 23 = 114\n114 + 56 = 170\n170 + 17 = 187\n187 + 48 = 235\nThe answer is: 235"
    )
    reference = load_task("paths")[0].reference_solution
    assert fix.rewrite != reference


def test_a_number_used_twice_or_never_asked_becomes_the_first_left() -> None:
    pred = "17 + 17 = 34\n34 + 23 = 57\n57 + 91 = 148\n148 + 56 = 204\nThe answer is: 204"
    fix = paths.TEACHER.correct(Q, pred, "235")
    assert fix.step == 0
    assert fix.rewrite == (
        "17 + 48 = 65\n65 + 23 = 88\n88 + 91 = 179\n179 + 56 = 235\nThe answer is: 235"
    )


def test_stopping_early_appends_the_numbers_left_and_a_right_sum_is_kept() -> None:
    fix = paths.TEACHER.correct(Q, "56 + 91 = 147\nThe answer is: 147", "235")
    assert fix.step == 1
    assert fix.rewrite == (
        "56 + 91 = 147\n147 + 17 = 164\n164 + 48 = 212\n212 + 23 = 235\nThe answer is: 235"
    )
    right = "56 + 91 = 147\n147 + 17 = 164\n164 + 48 = 212\n212 + 23 = 235\nThe answer is: 235"
    assert paths.TEACHER.correct(Q, right, "235").reason == "prediction_correct"


@pytest.mark.parametrize(
    ("question", "prediction", "reason"),
    [("Calculate 1 + 2.", "1 + 2 = 3", "not_paths"), (Q, "So 17 + 48 = 65", "unparsed_step")],
)
def test_what_the_teacher_cannot_read_it_drops(question: str, prediction: str, reason: str) -> None:
    assert paths.TEACHER.correct(question, prediction, "235").reason == reason
