"""The ``arith`` task family: seeded, deterministic, disjoint splits, knobs on the task name,
reference solutions in the §2.3 format that reach their own answers."""

from __future__ import annotations

import pytest

from rlmec.data import arith
from rlmec.data.tasks import load_task, resolve_tasks
from rlmec.shared.answers import check_prediction


def test_a_chain_and_its_reference_solution() -> None:
    chain = arith.Chain((17, 21, 31), ("+", "-"))
    assert chain.question() == "Calculate 17 + 21 - 31."
    assert chain.solution() == "17 + 21 = 38\n38 - 31 = 7\nThe answer is: 7"
    assert arith.parse_chain(chain.question()) == chain
    assert arith.parse_chain("Calculate 17 plus 21.") is None
    assert arith.parse_chain("How many apples?") is None


def test_the_test_set_is_fixed_and_disjoint_from_train() -> None:
    test, again = load_task("arith"), load_task("arith")
    assert len(test) == arith.TEST_SIZE >= 1000
    assert [p.question for p in test] == [p.question for p in again]
    assert test[0].id == "arith/0" and test[0].task_type == "math"
    train = load_task("arith_train")
    assert len(train) == arith.TRAIN_SIZE
    assert not {p.question for p in test} & {p.question for p in train}
    # Seeds: problem i of the test set is seed i, train problems come from another range.
    assert test[5].question == arith.make_chain(arith.ArithSpec(), 5).question()


@pytest.mark.parametrize("name", ["arith", "arith_train", "arith:steps=3:high=999:ops=+-*"])
def test_reference_solutions_reach_their_answers_and_never_go_negative(name: str) -> None:
    for p in load_task(name, limit=300):
        assert check_prediction(p.reference_solution, p.reference_answer, "math").correct
        lines = p.reference_solution.split("\n")
        assert lines[-1] == f"The answer is: {p.reference_answer}"
        assert all(int(line.split("= ")[1]) >= 0 for line in lines[:-1])


def test_knobs_ride_on_the_task_name() -> None:
    three = load_task("arith:steps=3:ops=*", limit=5)
    assert all(p.reference_solution.count("\n") == 3 for p in three)
    assert all(" * " in p.question and "+" not in p.question for p in three)
    assert resolve_tasks("gsm8k,arith:steps=4") == ["gsm8k", "arith:steps=4"]
    big = load_task("arith:low=100:high=999", limit=20)
    assert all(int(p.question.split()[1]) >= 100 for p in big)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("arith:steps=0", r"steps \(0\) must be at least 1"),
        ("arith:ops=/", r"ops \('/'\) must be a non-empty subset"),
        ("arith:depth=2", r"knob 'depth=2' is not KEY=VALUE with KEY one of steps"),
        ("arith:high=ten", r"high \('ten'\) must be a whole number"),
        ("gsm8k:steps=2", "only procedural tasks"),
    ],
)
def test_a_bad_knob_names_the_value_and_the_fix(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_tasks(name)
