"""``lines``: seeded problems whose lines are independent, a per-line check, and an exact
teacher that fixes every slipped line in place and keeps the rest."""

from __future__ import annotations

import pytest

from rlmec.data.procedural import lines
from rlmec.data.tasks import load_task, resolve_tasks
from rlmec.shared.answers import check_prediction

Q = "Compute each: 47 + 38; 91 - 26; 63 + 59."
REF = "47 + 38 = 85\n91 - 26 = 65\n63 + 59 = 122\nThe answer is: 85; 65; 122"


def test_a_problem_and_its_reference() -> None:
    items = lines.parse_question(Q)
    assert items is not None and [i.value for i in items] == [85, 65, 122]
    assert lines.question(items) == Q and lines.solution(items) == REF
    assert lines.answer(items) == "85; 65; 122"
    assert lines.parse_question("Calculate 1 + 2.") is None


@pytest.mark.parametrize("name", ["lines", "lines_train:k=2", "lines:k=3:high=999:ops=+-*"])
def test_references_reach_their_answers_and_never_go_negative(name: str) -> None:
    problems = load_task(name, limit=200)
    k = int(name.split("k=")[1].split(":")[0]) if "k=" in name else 8
    for p in problems:
        assert check_prediction(p.reference_solution, p.reference_answer, "math").correct
        assert lines.line_scores(p.question, p.reference_solution) == (k, k)
        assert all(int(x) >= 0 for x in p.reference_answer.split("; "))
    assert not {p.question for p in load_task("lines")} & {
        p.question for p in load_task("lines_train")[:2000]
    }


def test_bad_knobs_name_the_fix() -> None:
    with pytest.raises(ValueError, match="lines knob 'x=1' is not KEY=VALUE with KEY one of"):
        resolve_tasks("lines:x=1")
    with pytest.raises(ValueError, match=r"k \(0\) must be 1..32; e.g. lines:k=8"):
        resolve_tasks("lines:k=0")


def test_the_teacher_fixes_every_slipped_line_in_place_and_keeps_the_rest() -> None:
    pred = "47 + 38 = 85\n91 - 26 = 64\n63  +  59 = 112\nThe answer is: 85; 64; 112"
    assert lines.line_scores(Q, pred) == (1, 3)
    fix = lines.TEACHER.correct(Q, pred, "85; 65; 122")
    assert fix.reason == "rewrite_reaches_reference" and fix.step == 1
    # the policy's own spacing stays: the rewrite is not the reference, and edits only numbers
    assert fix.rewrite == "47 + 38 = 85\n91 - 26 = 65\n63  +  59 = 122\nThe answer is: 85; 65; 122"


def test_a_slip_in_the_answer_line_only_is_fixed_there() -> None:
    pred = REF.replace("The answer is: 85; 65; 122", "The answer is: 85; 65; 121")
    fix = lines.TEACHER.correct(Q, pred, "85; 65; 122")
    assert (fix.step, fix.rewrite) == (3, REF)


def test_missing_lines_are_written_and_extra_lines_dropped() -> None:
    short = lines.TEACHER.correct(Q, "47 + 38 = 85\nThe answer is: 85", "85; 65; 122")
    assert (short.step, short.rewrite) == (1, REF)
    extra = "47 + 38 = 85\n91 - 26 = 65\n63 + 59 = 122\n1 + 1 = 2\nThe answer is: 85; 65; 122"
    fix = lines.TEACHER.correct(Q, extra, "85; 65; 122")
    assert (fix.step, fix.rewrite) == (3, REF)


def test_what_the_teacher_cannot_read_it_drops() -> None:
    assert lines.TEACHER.correct(Q, REF, "85; 65; 122").reason == "prediction_correct"
    assert lines.TEACHER.correct(Q, "I think 85.\n" + REF, "x").reason == "unparsed_step"
    assert lines.TEACHER.correct(Q, REF + "\nbye", "x").reason == "text_after_answer"
    assert lines.TEACHER.correct("Add 1 and 2.", REF, "x").reason == "not_lines"
