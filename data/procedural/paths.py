"""``paths``: a sum whose partial sums may come in any order, so a minimal edit is not the
reference.

A problem names N numbers; a solution adds them one a line, in an order of its choosing::

    Add 17, 48, 23, 91 and 56.

    23 + 91 = 114
    114 + 17 = 131
    131 + 56 = 187
    187 + 48 = 235
    The answer is: 235

Every problem ships one reference, in an order drawn from its seed, so the warm start learns
from many orders and the policy's own samples use orders the reference does not. The exact
teacher (:data:`TEACHER`) keeps the policy's order: it fixes a slipped partial sum and
recomputes what follows, so its rewrite is the policy's solution with the slips mended, not
the reference (the case method §2.2's minimum-editing constraint is for). Knobs ride on the
name: ``paths:n=5:low=10:high=99``.
"""

from __future__ import annotations

import random
import re
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

EXAMPLE = "paths:n=5:high=99"
_QUESTION = re.compile(r"^Add ((?:\d+, )*\d+) and (\d+)\.$")


@dataclass(frozen=True)
class PathsSpec:
    """The difficulty knobs; the defaults put the warm start in the issue's 20-50% window."""

    n: int = 5  # numbers to add (n - 1 equation lines)
    low: int = 10  # numbers are drawn from low..high
    high: int = 99

    def __post_init__(self) -> None:
        problems = [
            (2 <= self.n <= 32, f"n ({self.n}) must be 2..32"),
            (0 <= self.low <= self.high, f"low..high ({self.low}..{self.high}) must be 0 <= low"),
        ]
        bad = [msg for ok, msg in problems if not ok]
        if bad:
            raise ValueError(f"paths: {bad[0]}; e.g. {EXAMPLE}")


def make_numbers(spec: PathsSpec, seed: int) -> tuple[int, ...]:
    rng = random.Random(seed)
    return tuple(rng.randint(spec.low, spec.high) for _ in range(spec.n))


def question(numbers: tuple[int, ...]) -> str:
    return f"Add {', '.join(map(str, numbers[:-1]))} and {numbers[-1]}."


def solution_in_order(order: list[int]) -> str:
    """Partial sums in ``order``, then the answer line."""
    lines, running = [], order[0]
    for n in order[1:]:
        lines.append(f"{running} + {n} = {running + n}")
        running += n
    return "\n".join([*lines, f"The answer is: {running}"])


def reference_order(numbers: tuple[int, ...], seed: int) -> list[int]:
    """The order of the problem's one reference: a permutation drawn from its seed."""
    order = list(numbers)
    random.Random(f"{seed}:order").shuffle(order)
    return order


def parse_question(text: str) -> tuple[int, ...] | None:
    match = _QUESTION.match(text.strip())
    if match is None:
        return None
    return (*(int(x) for x in match[1].split(", ")), int(match[2]))


def parse_name(name: str) -> tuple[str, PathsSpec]:
    return parse_knobs(name, PathsSpec, EXAMPLE)


@lru_cache(maxsize=8)
def rows(split: str, spec: PathsSpec, size: int | None = None) -> tuple[dict[str, str], ...]:
    def make(seed: int) -> dict[str, str]:
        numbers = make_numbers(spec, seed)
        return {
            "question": question(numbers),
            "solution": solution_in_order(reference_order(numbers, seed)),
            "answer": str(sum(numbers)),
        }

    return seeded_rows(make, split, size)


def order_of(prediction: str) -> list[int]:
    """The numbers in the order a solution adds them (first line's two, then each right
    operand), as far as its equation lines go."""
    eqs = parse_solution(prediction).equations
    if not eqs:
        return []
    a, b, _ = eqs[0].numbers()
    return [a, b, *(e.numbers()[1] for e in eqs[1:])]


# --- the exact teacher ------------------------------------------------------------------------


class _Pool:
    """The numbers not added yet, taken by value; a missing one is replaced by the first left
    in the question's order."""

    def __init__(self, numbers: tuple[int, ...]) -> None:
        self.left = list(numbers)

    def take(self, wanted: int) -> int:
        value = wanted if wanted in self.left else self.left[0]
        self.left.remove(value)
        return value


class PathsTeacher:
    """Keeps the policy's order: each line's left operand becomes the right running sum, a
    right operand already used (or never asked) becomes the first number left, each sum is
    recomputed; missing numbers are added at the end in the question's order, extra lines
    dropped, and the answer line restates the total."""

    name = "paths-exact"

    def correct(self, question_text: str, prediction: str, reference_answer: str) -> Correction:
        numbers = parse_question(question_text)
        if numbers is None:
            return Correction(None, None, "not_paths")
        parsed = parse_solution(prediction)
        if parsed.problem:
            return Correction(None, None, parsed.problem)
        new = _fixed_lines(numbers, parsed.equations)
        total = str(sum(numbers))
        said = parsed.lines[parsed.answer_at] if parsed.answer_at is not None else None
        old = [e.line for e in parsed.equations]
        if new == old and said is not None and states(said, total):
            return Correction(None, None, "prediction_correct")
        new.append(answer_line(said, total))
        old += [said] if said is not None else []
        step = first_change(new, old, len(parsed.lines))
        return checked(step, "\n".join(new), reference_answer)


def _fixed_lines(numbers: tuple[int, ...], eqs: list[Equation]) -> list[str]:
    pool, out, running = _Pool(numbers), [], None
    for eq in eqs:
        if not pool.left:
            break  # every number added: the rest are extra lines
        a, b, _ = eq.numbers()
        a = pool.take(a) if running is None else running
        if not pool.left:  # a first line whose left operand was the last number
            break
        b = pool.take(b)
        running = a + b
        out.append(eq.rewritten(a, "+", b, running))
    if running is None:
        running = pool.take(pool.left[0])
    while pool.left:
        b = pool.take(pool.left[0])
        out.append(f"{running} + {b} = {running + b}")
        running += b
    return out


TEACHER = PathsTeacher()
