"""What the procedural tasks and their exact teachers share.

- Knobs ride on the task name (``lines:k=8:high=999``), parsed into the task's frozen spec.
- Seeded splits: test problem ``i`` from seed ``i``; train problem ``i`` from seed
  ``TRAIN_SEED_BASE + i``, skipping any whose question is in the test set.
- One equation line (``47 + 38 = 85``) and one answer line (``The answer is: 85``), parsed with
  their positions so a teacher edits numbers in place and keeps the policy's spacing.
- An exact teacher is an :class:`ExactTeacher`: ``correct(question, prediction, answer)``
  gives the first wrong step and the minimal rewrite. :func:`teach_many` is the one record
  flow of every exact teacher (``rlmec data distill --teacher <task>``), the same records the
  model teachers write.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol, TypeVar

from rlmec.data.records import GrmRecord
from rlmec.shared.answers import check_prediction
from rlmec.shared.prompts import split_steps

TEST_SIZE = 1000
TRAIN_SIZE = 20_000
TRAIN_SEED_BASE = 1_000_000

EQUATION = re.compile(
    r"^\s*(?P<a>-?\d+)\s*(?P<op>[-+*x×])\s*(?P<b>-?\d+)\s*=\s*(?P<c>-?\d+)\s*\.?\s*$"
)
# "The answer is: 7", or a list "The answer is: 85; 65; 122" (lines): numbers only, so an
# answer line with words in it is an unparsed line, never silently rewritten.
ANSWER = re.compile(
    r"^\s*The answer is:?\s*(?P<v>-?\d+(?:\s*;\s*-?\d+)*)?\s*\.?\s*$", re.IGNORECASE
)
_OP_ALIASES = {"x": "*", "×": "*"}

Spec = TypeVar("Spec")


@dataclass(frozen=True)
class Equation:
    """One ``a op b = c`` line and where its parts are, for in-place edits."""

    line: str
    match: re.Match[str]

    @classmethod
    def parse(cls, line: str) -> Equation | None:
        match = EQUATION.match(line)
        return None if match is None else cls(line, match)

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
class Parsed:
    """A solution read as equation lines, then the answer line (its index, or None)."""

    lines: list[str]
    equations: list[Equation]
    answer_at: int | None
    problem: str | None  # why a teacher cannot read it: unparsed_step, text_after_answer


def parse_solution(prediction: str) -> Parsed:
    """Equation lines up to the answer line. A line that is neither stops the reading with
    ``unparsed_step``: an exact teacher never guesses what such a line meant."""
    lines = split_steps(prediction)
    equations: list[Equation] = []
    for i, line in enumerate(lines):
        if ANSWER.match(line):
            after = any(rest.strip() for rest in lines[i + 1 :])
            return Parsed(lines, equations, i, "text_after_answer" if after else None)
        eq = Equation.parse(line)
        if eq is None:
            return Parsed(lines, equations, None, "unparsed_step")
        equations.append(eq)
    return Parsed(lines, equations, None, None)


def answer_line(line: str | None, value: str) -> str:
    """The policy's answer line stating ``value`` (its wording kept), or the reference's."""
    match = ANSWER.match(line) if line is not None else None
    if match is None or match["v"] is None or line is None:
        return f"The answer is: {value}"
    start, end = match.span("v")
    return line[:start] + value + line[end:]


def states(line: str, value: str) -> bool:
    """The answer line states exactly ``value``."""
    match = ANSWER.match(line)
    return bool(match and match["v"] is not None and re.sub(r"\s*;\s*", "; ", match["v"]) == value)


# --- knobs and splits -----------------------------------------------------------------------


def parse_knobs(name: str, spec_type: Callable[..., Spec], example: str) -> tuple[str, Spec]:
    """``lines_train:k=8:ops=+-`` → ``("lines_train", LinesSpec(k=8, ops="+-"))``: whole-number
    knobs, and ``ops`` as a string; a bad knob raises naming the fix."""
    base, *knobs = name.split(":")
    known = [f.name for f in fields(spec_type)]  # type: ignore[arg-type]
    values: dict[str, int | str] = {}
    for knob in knobs:
        key, sep, raw = knob.partition("=")
        if not sep or key not in known:
            raise ValueError(
                f"{base} knob {knob!r} is not KEY=VALUE with KEY one of {', '.join(known)}"
                f"; e.g. {example}"
            )
        if key == "ops":
            values[key] = raw
        elif raw.isdigit():
            values[key] = int(raw)
        else:
            raise ValueError(f"{base} knob {key} ({raw!r}) must be a whole number; e.g. {example}")
    return base, replace(spec_type(), **values)  # type: ignore[type-var]


def seeded_rows(
    make: Callable[[int], dict[str, str]], split: str, size: int | None = None
) -> tuple[dict[str, str], ...]:
    """The split's ``{"question", "solution", "answer"}`` rows, problem ``i`` from its seed."""
    if split == "test":
        return tuple(make(i) for i in range(size or TEST_SIZE))
    test = {make(i)["question"] for i in range(TEST_SIZE)}
    out: list[dict[str, str]] = []
    seed = TRAIN_SEED_BASE
    while len(out) < (size or TRAIN_SIZE):
        row = make(seed)
        seed += 1
        if row["question"] not in test:
            out.append(row)
    return tuple(out)


# --- the exact teachers' one record flow ------------------------------------------------------


@dataclass(frozen=True)
class Correction:
    """The first wrong step (0-based line index) and the minimal rewrite, or why there is none."""

    step: int | None
    rewrite: str | None
    reason: str


class ExactTeacher(Protocol):
    """A model-free teacher of one procedural task: it knows every problem's answer."""

    name: str

    def correct(self, question: str, prediction: str, reference_answer: str) -> Correction: ...


def first_change(new: list[str], old: list[str], n_lines: int) -> int:
    """The first line where the rewrite departs from the prediction, as a step of the
    prediction (an index below ``n_lines``, its line count)."""
    pairs = zip(new, old, strict=False)
    step = next((i for i, (x, y) in enumerate(pairs) if x != y), min(len(new), len(old)))
    return min(step, n_lines - 1)


def checked(step: int, rewrite: str, reference_answer: str) -> Correction:
    """A rewrite kept only if it reaches the reference (§4), as every teacher's is."""
    ok = check_prediction(rewrite, reference_answer, "math").correct
    return Correction(step, rewrite, "rewrite_reaches_reference" if ok else "rewrite_incorrect")


def teach(record: GrmRecord, teacher: ExactTeacher) -> GrmRecord:
    """A ``rlmec data distill`` record: the located step and rewrite, kept or dropped."""
    fix = teacher.correct(record.question, record.prediction, record.reference_answer)
    ok = fix.reason == "rewrite_reaches_reference"
    meta = {**record.meta, "teacher": teacher.name}
    update: dict[str, Any] = {
        "source": "teacher",
        "verdict": "accepted" if ok else "dropped",
        "reason": fix.reason,
        "meta": meta,
    }
    if ok:
        update |= {"error_step": fix.step, "rewrite": fix.rewrite}
    return record.model_copy(update=update)


def teach_many(
    records: list[GrmRecord], teacher: ExactTeacher
) -> tuple[list[GrmRecord], Counter[str]]:
    """Every wrong record taught; the outcome counts, as the model teachers report them."""
    out = [teach(r, teacher) for r in records]
    return out, Counter(f"{r.verdict}: {r.reason}" for r in out)
