"""A free, deterministic teacher for math (``rlmec data synth``): corrupted reference solutions.

SYNTHETIC data, not the paper's teacher. A GSM8K reference solution becomes a policy-style
prediction (calculator annotations ``<<...>>`` removed, ``#### N`` restated as
``The answer is: N``, method §2.3). One step ``k`` with an equation ``expr = result`` is
corrupted the way policies err:

- ``number``: one operand is misread (``48`` becomes ``58``), and the result recomputed;
- ``operation``: one operator is swapped (``+`` for ``-``, ``*`` for ``+``, ...), result
  recomputed;
- ``arithmetic``: the expression is kept and the result is miscalculated.

The wrong result is carried into the later steps (every later use of the old value, and every
later equation recomputed), so the final answer is wrong too. The record holds the wrong
prediction, its exact first wrong step ``k`` and its minimal rewrite: the clean prediction.
A problem whose corruption would not change the final answer (or that has no equation) yields no
record. Everything is seeded per problem id: the same rows for every run and machine.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from rlmec.data.records import GrmRecord
from rlmec.data.tasks import Problem
from rlmec.shared.equations import arithmetic
from rlmec.shared.prompts import split_steps

Kind = Literal["number", "operation", "arithmetic"]
KINDS: tuple[Kind, ...] = ("number", "operation", "arithmetic")

_ANNOTATION = re.compile(r"<<[^<>]*>>")
_FINAL = re.compile(r"^\s*####\s*(.+?)\s*$")
# "expr = result": the expression is digits, operators, parentheses and spaces, with at least
# one operator; the result a number. Whatever precedes the expression in the line is prose.
_EQUATION = re.compile(
    r"(?P<expr>\(?\s*\$?-?\d[\d.,]*(?:\s*[-+*/×x÷]\s*\(?\s*\$?\d[\d.,]*\)?)+\s*\)?)"
    r"\s*=\s*\$?(?P<result>-?\d[\d,]*(?:\.\d+)?)"
)
_OPERAND = re.compile(r"\d[\d,]*(?:\.\d+)?")
_OPERATOR = re.compile(r"(?<=[\d)\s])[-+*/×x÷](?=[\s(\d$])")
_SWAPS = {"+": "-", "-": "+", "*": "+", "×": "+", "x": "+", "/": "*", "÷": "*"}


def policy_solution(reference: str) -> str | None:
    """The reference solution as a policy would write it (§2.3), or None without ``####``."""
    lines = [_ANNOTATION.sub("", line).rstrip() for line in split_steps(reference.strip())]
    final = _FINAL.match(lines[-1]) if lines else None
    if final is None:
        return None
    body = [line for line in lines[:-1] if line.strip()]
    return "\n".join([*body, f"The answer is: {final.group(1)}"])


def evaluate(expr: str) -> float | None:
    """Value of a plain arithmetic expression (numbers, + - * / and parentheses), else None."""
    text = expr.replace("$", "").replace(",", "").replace("×", "*").replace("÷", "/")
    text = re.sub(r"(?<=[\d)\s])x(?=[\s(\d])", "*", text)
    return arithmetic(text)


def fmt(value: float) -> str:
    """A number as a solution writes it: integers without a decimal point, else 2 decimals."""
    if abs(value - round(value)) < 1e-9:
        return str(round(value))
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _number(text: str) -> float:
    return float(text.replace(",", ""))


@dataclass(frozen=True)
class Corruption:
    kind: Kind
    step: int
    before: str  # the original step
    after: str  # the corrupted step


def corrupt(problem: Problem, *, seed: int = 0, kinds: Iterable[Kind] = KINDS) -> GrmRecord | None:
    """The synthetic record of one math problem, or None when none can be made."""
    clean = policy_solution(problem.reference_solution)
    if clean is None:
        return None
    rng = random.Random(f"{seed}:{problem.id}")
    steps = split_steps(clean)
    candidates = [i for i, s in enumerate(steps[:-1]) if _equation(s) is not None]
    rng.shuffle(candidates)
    allowed = list(kinds)
    for k in candidates[:3]:  # a few tries: some corruptions leave the answer unchanged
        kind = rng.choice(allowed)
        changed = _corrupt_step(steps[k], kind, rng)
        if changed is None:
            continue
        wrong = _carry(steps, k, changed)
        if _final(wrong) != _final(steps):
            prediction = "\n".join(wrong)
            return GrmRecord(
                id=f"synth/{problem.id}", task=problem.task, task_type=problem.task_type,
                question=problem.question, reference_solution=problem.reference_solution,
                reference_answer=problem.reference_answer, prediction=prediction,
                correct=False, error_step=k, rewrite=clean, source="synthetic",
                meta={"corruption": kind, "original_step": steps[k], "corrupted_step": changed},
            )  # fmt: skip
    return None


def _equation(step: str) -> re.Match[str] | None:
    """The last ``expr = result`` of a step whose expression really evaluates."""
    matches = [m for m in _EQUATION.finditer(step) if evaluate(m.group("expr")) is not None]
    return matches[-1] if matches else None


def _corrupt_step(step: str, kind: Kind, rng: random.Random) -> str | None:
    m = _equation(step)
    assert m is not None
    expr, result = m.group("expr"), m.group("result")
    if kind == "arithmetic":
        new_expr = expr
        value = _number(result) + rng.choice([-1, 1]) * rng.choice([1, 2, 10, _number(result) / 2])
    else:
        new_expr = _mutate(expr, kind, rng) or ""
        value = evaluate(new_expr) if new_expr else None  # type: ignore[assignment]
    if value is None or value < 0 or fmt(value) == fmt(_number(result)):
        return None
    start, end = m.span()
    eq = step[start:end]
    eq = eq[: m.start("expr") - start] + new_expr + eq[m.end("expr") - start :]
    eq = eq[: len(eq) - len(result)] + fmt(value)
    return step[:start] + eq + step[end:]


def _mutate(expr: str, kind: Kind, rng: random.Random) -> str | None:
    if kind == "operation":
        ops = list(_OPERATOR.finditer(expr))
        if not ops:
            return None
        op = rng.choice(ops)
        return expr[: op.start()] + _SWAPS[op.group()] + expr[op.end() :]
    numbers = list(_OPERAND.finditer(expr))
    target = rng.choice(numbers)
    value = _number(target.group())
    misread = value + rng.choice([1, 2, 10]) if value < 10 else value + rng.choice([-10, 10, 1])
    return expr[: target.start()] + fmt(misread) + expr[target.end() :]


def _carry(steps: list[str], k: int, changed: str) -> list[str]:
    """Steps with step ``k`` replaced and its new result carried into every later step."""
    out = [*steps[:k], changed]
    values = {}
    old, new = _equation(steps[k]), _equation(changed)
    assert old is not None and new is not None
    values[old.group("result")] = new.group("result")
    for step in steps[k + 1 :]:
        step = _substitute(step, values)
        eq = _equation(step)
        if eq is not None:
            value = evaluate(eq.group("expr"))
            stated = eq.group("result")
            if value is not None and value >= 0 and fmt(value) != fmt(_number(stated)):
                values[stated] = fmt(value)
                step = step[: eq.start("result")] + fmt(value) + step[eq.end("result") :]
        out.append(step)
    return out


def _substitute(step: str, values: dict[str, str]) -> str:
    def swap(m: re.Match[str]) -> str:
        return values.get(m.group(), m.group())

    return re.sub(r"(?<![\d.])\d[\d,]*(?:\.\d+)?(?![\d])", swap, step)


def _final(steps: list[str]) -> str:
    return steps[-1].removeprefix("The answer is:").strip()
