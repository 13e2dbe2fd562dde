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

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from rlmec.data.arith import Chain, parse_chain
from rlmec.data.records import GrmRecord
from rlmec.shared.answers import check_prediction
from rlmec.shared.prompts import split_steps

TEACHER_NAME = "arith-exact"

# "38 - 31 = 7": the three numbers and the operator, with their positions for in-place edits.
_STEP = re.compile(
    r"^\s*(?P<a>-?\d+)\s*(?P<op>[-+*x×])\s*(?P<b>-?\d+)\s*=\s*(?P<c>-?\d+)\s*\.?\s*$"
)
_ANSWER = re.compile(r"^\s*The answer is:?\s*(?P<v>-?\d+)?\s*\.?\s*$", re.IGNORECASE)
_OP_ALIASES = {"x": "*", "×": "*"}


@dataclass(frozen=True)
class Step:
    line: str
    match: re.Match[str]

    @property
    def op(self) -> str:
        op = self.match["op"]
        return _OP_ALIASES.get(op, op)

    def numbers(self) -> tuple[int, int, int]:
        return int(self.match["a"]), int(self.match["b"]), int(self.match["c"])

    def rewritten(self, a: int, op: str, b: int, c: int) -> str:
        """The line with its numbers and operator replaced in place (spacing kept); a line
        already right comes back unchanged."""
        written_op = self.match["op"] if _OP_ALIASES.get(self.match["op"]) == op else op
        parts = {"a": str(a), "op": written_op, "b": str(b), "c": str(c)}
        out, last = [], 0
        for name in ("a", "op", "b", "c"):
            start, end = self.match.span(name)
            out += [self.line[last:start], parts[name]]
            last = end
        return "".join(out) + self.line[last:]


@dataclass(frozen=True)
class Correction:
    """The first wrong step (0-based line index) and the minimal rewrite, or why there is none."""

    step: int | None
    rewrite: str | None
    reason: str


def _parse(prediction: str) -> tuple[list[Step], int | None, str | None]:
    """The equation lines, the index of the answer line (or None), and a drop reason."""
    steps: list[Step] = []
    lines = split_steps(prediction)
    for i, line in enumerate(lines):
        if _ANSWER.match(line):
            after = any(rest.strip() for rest in lines[i + 1 :])
            return steps, i, "text_after_answer" if after else None
        match = _STEP.match(line)
        if match is None:
            return steps, None, "unparsed_step"
        steps.append(Step(line, match))
    return steps, None, None


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
    lines = split_steps(prediction)
    steps, answer_at, problem = _parse(prediction)
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
            if len(steps) == len(chain.ops) and _states(lines[answer_at], chain.answer):
                return Correction(None, None, "prediction_correct")
    fixed = _corrected_steps(chain, steps, min(wrong, len(steps)))
    answer_line = _answer_line(lines[answer_at] if answer_at is not None else None, chain.answer)
    rewrite = "\n".join([*lines[: min(wrong, len(steps))], *fixed, answer_line])
    if not check_prediction(rewrite, reference_answer, "math").correct:
        return Correction(wrong, rewrite, "rewrite_incorrect")
    return Correction(wrong, rewrite, "rewrite_reaches_reference")


def _states(line: str, value: int) -> bool:
    match = _ANSWER.match(line)
    return bool(match and match["v"] is not None and int(match["v"]) == value)


def _answer_line(line: str | None, value: int) -> str:
    """The policy's answer line with the right value (its wording kept), or the reference's."""
    match = _ANSWER.match(line) if line is not None else None
    if match is None or match["v"] is None or line is None:
        return f"The answer is: {value}"
    start, end = match.span("v")
    return line[:start] + str(value) + line[end:]


def teach(record: GrmRecord) -> GrmRecord:
    """A ``rlmec data distill`` record: the located step and rewrite, kept or dropped."""
    fix = correct(record.question, record.prediction, record.reference_answer)
    ok = fix.reason == "rewrite_reaches_reference"
    meta = {**record.meta, "teacher": TEACHER_NAME}
    update: dict[str, Any] = {"source": "teacher", "verdict": "accepted" if ok else "dropped",
              "reason": fix.reason, "meta": meta}  # fmt: skip
    if ok:
        update |= {"error_step": fix.step, "rewrite": fix.rewrite}
    return record.model_copy(update=update)


def teach_many(records: list[GrmRecord]) -> tuple[list[GrmRecord], Counter[str]]:
    """Every wrong record taught; the outcome counts, as the model teachers report them."""
    out = [teach(r) for r in records]
    return out, Counter(f"{r.verdict}: {r.reason}" for r in out)


def error_kind(question: str, prediction: str) -> str:
    """What went wrong first, for the calibration's error table: ``result`` (right operands,
    wrong result), ``operand``, ``operator``, ``answer line``, ``stopped early``, ``extra
    step`` (the first four are local, one-step slips), or why the teacher cannot tell
    (``unparsed_step``, ``text_after_answer``, ``not_arith``, ``no_step_to_fix``)."""
    chain = parse_chain(question)
    if chain is None:
        return "not_arith"
    steps, answer_at, problem = _parse(prediction)
    if problem:
        return problem
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
