"""The exact teacher of ``arith`` (``rlmec data distill --teacher arith``): model-free, no key.

For a wrong solution of a chain problem (:mod:`rlmec.data.arith`) it finds the first wrong step
and writes the minimal rewrite, as the paper's teacher is asked to (method §2.2):

- step ``k`` (one line, ``a op b = c``) is wrong when its left operand is not the value the
  problem (``k = 0``) or step ``k-1`` gives, its operator or right operand is not the chain's,
  or ``c`` is not ``a op b``;
- a solution that ends its steps early is wrong at its answer line (the missing steps are
  written there); a step past the chain's end is wrong itself; an answer line that misstates
  a right final value is the wrong step;
- the rewrite keeps every line before step ``k`` verbatim, fixes the wrong numbers or operator
  of step ``k`` in place (its spacing and wording kept), recomputes each later step in place
  the same way, and restates the answer line with the new value.

Every rewrite is answer-checked (§4) before it is accepted. A solution with a line that is
neither an equation nor the answer line is dropped with the reason ``unparsed_step``: the
teacher never guesses what such a line meant.
"""

from __future__ import annotations

from collections import Counter

from rlmec.data.arith import Chain, parse_chain
from rlmec.data.procedural.base import (
    Correction,
    Equation,
    answer_line,
    checked,
    parse_solution,
    states,
)
from rlmec.data.procedural.base import teach as _teach
from rlmec.data.procedural.base import teach_many as _teach_many
from rlmec.data.records import GrmRecord

TEACHER_NAME = "arith-exact"
Step = Equation  # one ``38 - 31 = 7`` line, edited in place


def _first_wrong(chain: Chain, steps: list[Step]) -> int | None:
    values = chain.values()
    for k, step in enumerate(steps):
        if k >= len(chain.ops):
            return k  # a step past the chain's end
        a, b, c = step.numbers()
        expected = (values[k], chain.ops[k], chain.numbers[k + 1], values[k + 1])
        if (a, step.op, b, c) != expected:
            return k
    return None


def _corrected_steps(chain: Chain, steps: list[Step], k: int) -> list[str]:
    """Step ``k`` and every later step recomputed (in place where the policy wrote one), the
    chain's missing steps appended in the reference wording, extra steps dropped."""
    values = chain.values()
    out = []
    for j in range(k, len(chain.ops)):
        a, op, b, c = values[j], chain.ops[j], chain.numbers[j + 1], values[j + 1]
        out.append(steps[j].rewritten(a, op, b, c) if j < len(steps) else f"{a} {op} {b} = {c}")
    return out


def correct(question: str, prediction: str, reference_answer: str) -> Correction:
    """The exact correction of one prediction of an ``arith`` problem."""
    chain = parse_chain(question)
    if chain is None:
        return Correction(None, None, "not_arith")
    parsed = parse_solution(prediction)
    lines, steps, answer_at, problem = (
        parsed.lines,
        parsed.equations,
        parsed.answer_at,
        parsed.problem,
    )
    if problem:
        return Correction(None, None, problem)
    wrong = _first_wrong(chain, steps)
    if wrong is None:
        if answer_at is None:
            wrong = len(steps)  # every step right, no answer line: the step after the last
            if wrong >= len(lines):
                return Correction(None, None, "no_step_to_fix")
        else:
            wrong = answer_at
            if len(steps) == len(chain.ops) and states(lines[answer_at], str(chain.answer)):
                return Correction(None, None, "prediction_correct")
    fixed = _corrected_steps(chain, steps, min(wrong, len(steps)))
    said = lines[answer_at] if answer_at is not None else None
    rewrite = "\n".join(
        [*lines[: min(wrong, len(steps))], *fixed, answer_line(said, str(chain.answer))]
    )
    return checked(wrong, rewrite, reference_answer)


class ArithTeacher:
    """The :class:`~rlmec.data.procedural.base.ExactTeacher` of ``arith``."""

    name = TEACHER_NAME

    def correct(self, question: str, prediction: str, reference_answer: str) -> Correction:
        return correct(question, prediction, reference_answer)


TEACHER = ArithTeacher()


def teach(record: GrmRecord) -> GrmRecord:
    """A ``rlmec data distill`` record: the located step and rewrite, kept or dropped."""
    return _teach(record, TEACHER)


def teach_many(records: list[GrmRecord]) -> tuple[list[GrmRecord], Counter[str]]:
    """Every wrong record taught; the outcome counts, as the model teachers report them."""
    return _teach_many(records, TEACHER)


def error_kind(question: str, prediction: str) -> str:
    """What went wrong first, for the calibration's error table: ``result`` (right operands,
    wrong result), ``operand``, ``operator``, ``answer line``, ``stopped early``, ``extra
    step`` (the first four are local, one-step slips), or why the teacher cannot tell
    (``unparsed_step``, ``text_after_answer``, ``not_arith``, ``no_step_to_fix``)."""
    chain = parse_chain(question)
    if chain is None:
        return "not_arith"
    parsed = parse_solution(prediction)
    steps, answer_at = parsed.equations, parsed.answer_at
    if parsed.problem:
        return parsed.problem
    k = _first_wrong(chain, steps)
    if k is None:
        if len(steps) < len(chain.ops):
            return "stopped early" if answer_at is not None else "no_step_to_fix"
        return "answer line"
    if k >= len(chain.ops):
        return "extra step"
    a, b, _ = steps[k].numbers()
    if steps[k].op != chain.ops[k]:
        return "operator"
    if (a, b) != (chain.values()[k], chain.numbers[k + 1]):
        return "operand"
    return "result"


LOCAL_ERRORS = ("result", "operand", "operator", "answer line")
