"""Bounded answer checking: a check over its time budget is stopped (its worker killed and
replaced) and reported as a failure of that sample alone; adversarial answers never take
longer than the budget."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlmec.shared.checking import AnswerChecker, CheckFailure, CheckInput, Judgement

# sympy needs ~3.5 s to parse this binomial (no pre-screen catches it): a real slow input.
SLOW = "The answer is $\\binom{10000000}{5000000}$"
TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def checker() -> Iterator[AnswerChecker]:
    with AnswerChecker(workers=2, timeout_s=TIMEOUT_S) as c:
        yield c


def test_a_check_over_budget_fails_that_sample_only(checker: AnswerChecker) -> None:
    items = [
        CheckInput("so 48+24 = 72\nThe answer is: 72", "math", "#### 72"),
        CheckInput(SLOW, "math", "#### 3"),
        CheckInput("The answer is 71", "math", "#### 72"),
        CheckInput("no number", "math", "no reference answer here"),
    ]
    judged = asyncio.run(checker.judge_many(items))
    assert isinstance(judged[0], Judgement) and judged[0].check is not None
    assert judged[0].check.correct and judged[0].reference == "72"
    assert isinstance(judged[1], CheckFailure) and "longer than 1 s" in judged[1].message
    assert isinstance(judged[2], Judgement) and judged[2].check is not None
    assert not judged[2].check.correct
    assert judged[3] == Judgement(None, None)
    # The killed worker was replaced: the pool keeps answering.
    again = asyncio.run(checker.check_many([("The answer is 5", "5", "math")]))
    assert not isinstance(again[0], CheckFailure) and again[0].correct


def test_the_event_loop_keeps_running_during_a_slow_check(checker: AnswerChecker) -> None:
    async def run() -> int:
        ticks = 0
        task = asyncio.ensure_future(checker.check_many([(SLOW, "3", "math")]))
        while not task.done():
            await asyncio.sleep(0.01)
            ticks += 1
        assert isinstance((await task)[0], CheckFailure)
        return ticks

    # A thread running sympy would hold the GIL and starve the loop (0-2 ticks).
    assert asyncio.run(run()) >= 20


def test_given_reference_answer_wins_over_the_solution(checker: AnswerChecker) -> None:
    item = CheckInput("The answer is 7", "math", "#### 5", reference_answer="7")
    (judged,) = asyncio.run(checker.judge_many([item]))
    assert isinstance(judged, Judgement) and judged.reference == "7"


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="workers"):
        AnswerChecker(workers=0)
    with pytest.raises(ValueError, match="timeout_s"):
        AnswerChecker(timeout_s=0)
    with pytest.raises(ValueError, match="memory_mib"):
        AnswerChecker(memory_mib=10)


_digits = st.integers(min_value=2, max_value=10**9).map(str)
_tower = st.lists(_digits, min_size=2, max_size=6).map(
    lambda parts: "{" + "^{".join(parts) + "}" * len(parts)
)
_units = st.integers(min_value=10, max_value=400).map(lambda n: "5 " + "a" * n + "!")
_nested = st.integers(min_value=50, max_value=2000).map(lambda n: "(" * n + "1" + ")" * n)
_factorial = _digits.map(lambda d: f"{d}!")
_power = st.tuples(_digits, _digits).map(lambda p: f"{p[0]}^{{{p[1]}}}")
_adversarial = st.one_of(_tower, _units, _nested, _factorial, _power)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(answer=_adversarial, reference=st.sampled_from(["3", "\\frac{1}{2}", "x^2"]))
def test_adversarial_answers_are_bounded_per_sample(
    checker: AnswerChecker, answer: str, reference: str
) -> None:
    started = time.monotonic()
    (result,) = asyncio.run(checker.check_many([(f"The answer is ${answer}$", reference, "math")]))
    elapsed = time.monotonic() - started
    # The budget plus room for replacing a killed worker on a loaded CI machine; the
    # unbounded code took minutes on such answers.
    assert elapsed < TIMEOUT_S + 10
    assert isinstance(result, CheckFailure) or not result.correct
