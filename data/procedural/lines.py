"""``lines``: K independent equations a problem, where token credit has something to localise.

A problem lists K items; its solution writes one line per item, then the answer line::

    Compute each: 47 + 38; 91 - 26; 63 + 59.

    47 + 38 = 85
    91 - 26 = 65
    63 + 59 = 122
    The answer is: 85; 65; 122

No line depends on another, so a slip stays in its line and a solution can hold several; the
answer line restates the values (the §4 check compares it as a whole). Per-line accuracy
(:func:`line_scores`) gives K trials a problem. Knobs ride on the name:
``lines:k=8:low=10:high=99:ops=+-``; subtraction never goes below 0.

The exact teacher (:data:`TEACHER`) fixes every wrong line in place and keeps the others, so its
rewrite of a wrong solution differs from the prediction exactly on the slipped lines.
"""

from __future__ import annotations

import operator
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from rlmec.data.procedural.base import (
    Correction,
    Equation,
    answer_line,
    checked,
    first_change,
    parse_knobs,
    parse_solution,
    seeded_rows,
    states,
)

OPS = "+-*"
EXAMPLE = "lines:k=8:high=99:ops=+-"
_APPLY: dict[str, Callable[[int, int], int]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
}
_ITEM = re.compile(r"^(\d+) ([-+*]) (\d+)$")
SEPARATOR = "; "


@dataclass(frozen=True)
class LinesSpec:
    """The difficulty knobs; the defaults are the issue's pilot (K = 8, operands 10-99)."""

    k: int = 8  # items a problem (equation lines a solution)
    low: int = 10  # operands are drawn from low..high
    high: int = 99
    ops: str = "+-"  # operators to draw from: a subset of "+-*"

    def __post_init__(self) -> None:
        problems = [
            (1 <= self.k <= 32, f"k ({self.k}) must be 1..32"),
            (0 <= self.low <= self.high, f"low..high ({self.low}..{self.high}) must be 0 <= low"),
            (bool(self.ops) and set(self.ops) <= set(OPS), f"ops must be a subset of {OPS!r}"),
        ]
        bad = [msg for ok, msg in problems if not ok]
        if bad:
            raise ValueError(f"lines: {bad[0]}; e.g. {EXAMPLE}")


@dataclass(frozen=True)
class Item:
    a: int
    op: str
    b: int

    @property
    def value(self) -> int:
        return _APPLY[self.op](self.a, self.b)

    def expression(self) -> str:
        return f"{self.a} {self.op} {self.b}"


def make_items(spec: LinesSpec, seed: int) -> tuple[Item, ...]:
    rng = random.Random(seed)
    items = []
    for _ in range(spec.k):
        op = rng.choice(spec.ops)
        a, b = rng.randint(spec.low, spec.high), rng.randint(spec.low, spec.high)
        if op == "-" and b > a:
            a, b = b, a  # never below 0
        items.append(Item(a, op, b))
    return tuple(items)


def question(items: tuple[Item, ...]) -> str:
    return "Compute each: " + SEPARATOR.join(i.expression() for i in items) + "."


def answer(items: tuple[Item, ...]) -> str:
    return SEPARATOR.join(str(i.value) for i in items)


def solution(items: tuple[Item, ...]) -> str:
    lines = [f"{i.expression()} = {i.value}" for i in items]
    return "\n".join([*lines, f"The answer is: {answer(items)}"])


def parse_question(text: str) -> tuple[Item, ...] | None:
    """The items a question lists, or None for anything else."""
    body = text.strip()
    if not (body.startswith("Compute each: ") and body.endswith(".")):
        return None
    items = []
    for part in body[len("Compute each: ") : -1].split(";"):
        match = _ITEM.match(part.strip())
        if match is None:
            return None
        items.append(Item(int(match[1]), match[2], int(match[3])))
    return tuple(items)


def parse_name(name: str) -> tuple[str, LinesSpec]:
    return parse_knobs(name, LinesSpec, EXAMPLE)


@lru_cache(maxsize=8)
def rows(split: str, spec: LinesSpec, size: int | None = None) -> tuple[dict[str, str], ...]:
    def make(seed: int) -> dict[str, str]:
        items = make_items(spec, seed)
        return {"question": question(items), "solution": solution(items), "answer": answer(items)}

    return seeded_rows(make, split, size)


# --- per-line check and the exact teacher -----------------------------------------------------


def line_right(items: tuple[Item, ...], lines: list[str]) -> list[bool]:
    """Per item: its line (the i-th line of the solution) states the item and its value."""
    out = []
    for i, item in enumerate(items):
        match = _equation(lines[i]) if i < len(lines) else None
        out.append(match == (item.a, item.op, item.b, item.value))
    return out


def _equation(line: str) -> tuple[int, str, int, int] | None:
    eq = Equation.parse(line)
    if eq is None:
        return None
    a, b, c = eq.numbers()
    return a, eq.op, b, c


def line_scores(question_text: str, prediction: str) -> tuple[int, int] | None:
    """(lines right, K) of a prediction, or None when the question is not a ``lines`` one."""
    items = parse_question(question_text)
    if items is None:
        return None
    return sum(line_right(items, prediction.split("\n"))), len(items)


class LinesTeacher:
    """Fixes every wrong line in place (its spacing kept), keeps the right ones, writes the
    missing items in the reference wording, drops extra lines, and restates the answer line."""

    name = "lines-exact"

    def correct(self, question_text: str, prediction: str, reference_answer: str) -> Correction:
        items = parse_question(question_text)
        if items is None:
            return Correction(None, None, "not_lines")
        parsed = parse_solution(prediction)
        if parsed.problem:
            return Correction(None, None, parsed.problem)
        eqs, lines = parsed.equations, parsed.lines
        right = line_right(items, [e.line for e in eqs])
        value = answer(items)
        said = lines[parsed.answer_at] if parsed.answer_at is not None else None
        if all(right) and len(eqs) == len(items) and said is not None and states(said, value):
            return Correction(None, None, "prediction_correct")
        fixed = [_fixed_line(eqs[i] if i < len(eqs) else None, it) for i, it in enumerate(items)]
        new = [*fixed, answer_line(said, value)]
        old = [e.line for e in eqs] + ([said] if said is not None else [])
        return checked(first_change(new, old, len(lines)), "\n".join(new), reference_answer)


def _fixed_line(eq: Equation | None, item: Item) -> str:
    """The policy's line with the item's numbers and value in place, or the reference's."""
    if eq is None:
        return f"{item.expression()} = {item.value}"
    return eq.rewritten(item.a, item.op, item.b, item.value)


TEACHER = LinesTeacher()
