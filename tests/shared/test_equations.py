"""False equations: a pure arithmetic left side that is not its right side is found; words,
units, variables, percentages, rounding and written fractions are not false."""

from __future__ import annotations

import pytest

from rlmec.shared.equations import evaluate, false_equation


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("62 - 47 = 25", "62 - 47 = 25"),
        ("He had 24 - 18 = 8 left.", "24 - 18 = 8"),
        ("(3 + 4) * 2 = 15", "(3 + 4) * 2 = 15"),
        ("3 x 4 = 13", "3 x 4 = 13"),
        ("so 3 * 4 = 12 and 5 * 5 = 24", "5 * 5 = 24"),
        ("ok\n1,000 + 201 = 1,200", "1,000 + 201 = 1,200"),
        ("62 - 47 = 15", None),
        ("He sold 24 * 3/4 = <<24*3/4=18>>18 muffins.", None),
        ("10 / 3 = 3.33", None),  # rounded as written
        ("$5 * 3 = $15", None),
        ("2x + 3 = 7", None),  # a variable: not a pure expression
        ("20% of 50 = 10", None),
        ("1 / 2 = 50%", None),  # a percentage, not the value
        ("25 / 1/3 = 75", None),  # "divided by a third"
        ("5 + 3 = 8 + 2 = 10", None),  # a chain's first link is not read
        ("The answer is: 85; 65; 122", None),
        ("7 = 7", None),  # no operator
        ("1 / 0 = 5", None),
    ],
)
def test_false_equations(text: str, found: str | None) -> None:
    assert false_equation(text) == found


def test_evaluate_reads_only_numbers_and_operators() -> None:
    assert evaluate("(3 + 4) * 2") == 14
    assert evaluate("1,200 / 4") == 300
    assert evaluate("__import__('os')") is None
    assert evaluate("2 ** 99999") is None
    assert evaluate("7") is None
    assert evaluate("1" + "+1" * 300) is None  # too long to be a solution's expression


def test_an_x_next_to_a_letter_or_operator_is_a_variable() -> None:
    assert false_equation("5+(4x-13)=4") is None
    assert false_equation("3x4 = 13") == "3x4 = 13"
