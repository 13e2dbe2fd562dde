"""False equations in a solution: ``62 - 47 = 25`` (issue 42, item 6).

A GRM's rewrite can reach the reference answer through a line that is false. The reward service
would score it and the trainer would imitate that line, so such a rewrite is unscored with the
reason ``rewrite_false_equation`` (``RewardParams.check_equations``, on by default for math).

What is checked: each ``<left> = <right>`` where ``<left>`` is a pure arithmetic expression
(numbers, ``+ - * / x ×`` and parentheses, at least one operator) and ``<right>`` a number. A
left side that touches a word, a unit or a variable (``2x + 3 = 7``, ``20% of 50 = 10``) is not
a pure expression and is left alone; so is a chain ``a = b = c`` beyond its first link. A right
side written with fewer decimals is compared at the precision it is written to (``10 / 3 =
3.33`` holds), as people round; a right side followed by ``%`` is a percentage, not the
value, and ``25 / 1/3`` is read both as written and with ``1/3`` as one number. Evaluation
walks a parsed tree of numbers and operators only.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation

# <left> = <right>: the left run holds only expression characters and starts a line or follows
# a character that cannot be part of a number or a word ("$" included: "$5 * 3 = $15").
_EQUATION = re.compile(
    r"(?:^|(?<=[\s(<:;,$]))(?P<left>[\d.,()\s+\-*/x×]*\d[\d.,()\s+\-*/x×]*?)\s*=\s*\$?"
    r"(?P<right>-?\d[\d,]*(?:\.\d+)?)(?![\d.,]*\s*(?:%|[-+*/x×(]\s*\d))"
)
_BINARY: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
# "25 / 1/3": a written fraction is one number to its writer ("divided by a third"); both
# readings are tried, and the line is false only if neither holds.
_FRACTION = re.compile(r"(?<![\d.])(\d+)/(\d+)(?![\d.])")
# "3 x 4" is a product; the x of "4x - 13" is a variable, and the left side is not pure.
_TIMES = re.compile(r"(?<=[\d)])\s*x\s*(?=[\d(])")
MAX_CHARS = 200  # a longer left side is not read (no expression of a solution line is that long)


def _value(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _value(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_value(node.operand)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _BINARY[type(node.op)](_value(node.left), _value(node.right))
    raise ValueError("not a pure arithmetic expression")


def arithmetic(text: str) -> float | None:
    """The value of ``text`` read as numbers, ``+ - * /`` and parentheses only, else None (a
    parsed tree is walked; nothing is executed)."""
    try:
        return _value(ast.parse(text.strip(), mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError):
        return None


def evaluate(expression: str) -> float | None:
    """The value of a pure arithmetic expression (``x``/``×`` as multiplication, thousands
    separators dropped), or None when it is not one (or divides by zero)."""
    text = _TIMES.sub("*", expression.replace("×", "*")).replace(",", "").strip()
    if (
        "x" in text
        or not text
        or len(text) > MAX_CHARS
        or not re.search(r"\d\s*[-+*/]\s*[\d(]", text)
    ):
        return None
    return arithmetic(text)


def _holds(value: float, right: str) -> bool:
    """``value`` equals ``right`` at the precision ``right`` is written to."""
    try:
        stated = Decimal(right.replace(",", ""))
    except InvalidOperation:
        return True
    decimals = max(-stated.as_tuple().exponent, 0)  # type: ignore[operator]
    tolerance = max(0.5 * 10.0**-decimals, 1e-9 * abs(value))
    return abs(value - float(stated)) <= tolerance + 1e-12


def false_equation(text: str) -> str | None:
    """The first false ``<pure expression> = <number>`` of ``text``, as written, or None."""
    for line in text.split("\n"):
        for match in _EQUATION.finditer(line):
            left = match["left"]
            if left.count("(") != left.count(")"):
                continue
            values = [evaluate(left), evaluate(_FRACTION.sub(r"(\1/\2)", left))]
            known = [v for v in values if v is not None]
            if known and not any(_holds(v, match["right"]) for v in known):
                return match.group().strip()
    return None
