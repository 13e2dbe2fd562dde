"""``arith``: seeded multi-step arithmetic chains, a task these CPUs can learn (issue 25).

A problem is a chain of ``steps`` operations on numbers from ``low..high``: ``Calculate 17 +
21 - 31.``. Its reference solution is in the §2.3 math format, one step a line, each with its
equation, then the line the checker reads::

    17 + 21 = 38
    38 - 31 = 7
    The answer is: 7

Why chains: SmolLM2-135M learns their format from a short SFT warm start, and the errors left
after it are local slips in one step (``38 - 31 = 1``), the kind token-level credit is for. The
exact teacher (:mod:`rlmec.data.arith_teacher`) reads these solutions back.

Knobs ride on the task name, so every command that takes a task takes them:
``arith`` (the frozen calibrated test set), ``arith_train`` (train problems), or with knobs
``arith:steps=3:high=999:ops=+-*``. Subtraction never goes below 0 and a multiplier is 2..9, so
numbers stay in the range a small model reads well.

Splits. Problem ``i`` of the test set is drawn from seed ``i`` (0 <= i < 1000 by default);
train problem ``i`` from seed ``TRAIN_SEED_BASE + i``, a disjoint range, and a train problem
whose question appears in the test set is skipped (never seen here with the defaults, but a
knob choice with a small number range could collide).
"""

from __future__ import annotations

import operator
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from rlmec.data.procedural.base import TEST_SIZE as TEST_SIZE  # the split sizes, re-exported
from rlmec.data.procedural.base import TRAIN_SEED_BASE as TRAIN_SEED_BASE
from rlmec.data.procedural.base import TRAIN_SIZE as TRAIN_SIZE
from rlmec.data.procedural.base import parse_knobs, seeded_rows

OPS = "+-*"
_APPLY: dict[str, Callable[[int, int], int]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
}


@dataclass(frozen=True)
class ArithSpec:
    """The difficulty knobs. The defaults are the calibrated, frozen difficulty of ``arith``:
    the warm-started SmolLM2-135M-Instruct scores 31.5% on the test set, every error local
    (BENCHMARKS.md ``learning``; the issue asked for 20-50% with mostly local errors)."""

    steps: int = 2  # operations per chain (the solution has this many equation lines)
    low: int = 10  # operands are drawn from low..high
    high: int = 99
    ops: str = "+-"  # operators to draw from: a subset of "+-*"

    def __post_init__(self) -> None:
        problems = [
            (self.steps >= 1, f"steps ({self.steps}) must be at least 1"),
            (0 <= self.low <= self.high, f"low..high ({self.low}..{self.high}) must be 0 <= low "
             "<= high"),
            (bool(self.ops) and set(self.ops) <= set(OPS),
             f"ops ({self.ops!r}) must be a non-empty subset of {OPS!r}"),
        ]  # fmt: skip
        bad = [msg for ok, msg in problems if not ok]
        if bad:
            raise ValueError(f"arith: {bad[0]}; e.g. arith:steps=3:high=999:ops=+-*")


@dataclass(frozen=True)
class Chain:
    """``numbers[0] ops[0] numbers[1] ops[1] numbers[2] ...`` evaluated left to right."""

    numbers: tuple[int, ...]
    ops: tuple[str, ...]

    def values(self) -> list[int]:
        """The running value after each step, ``[numbers[0], v1, v2, ...]``."""
        out = [self.numbers[0]]
        for op, n in zip(self.ops, self.numbers[1:], strict=True):
            out.append(_APPLY[op](out[-1], n))
        return out

    @property
    def answer(self) -> int:
        return self.values()[-1]

    def question(self) -> str:
        expr = " ".join(
            [str(self.numbers[0])]
            + [f"{op} {n}" for op, n in zip(self.ops, self.numbers[1:], strict=True)]
        )
        return f"Calculate {expr}."

    def solution(self) -> str:
        values = self.values()
        lines = [
            f"{values[i]} {op} {n} = {values[i + 1]}"
            for i, (op, n) in enumerate(zip(self.ops, self.numbers[1:], strict=True))
        ]
        return "\n".join([*lines, f"The answer is: {values[-1]}"])


def make_chain(spec: ArithSpec, seed: int) -> Chain:
    """The chain of problem seed ``seed``: the same on every machine and Python version
    (``random.Random`` with an int seed is stable)."""
    rng = random.Random(seed)
    value = rng.randint(spec.low, spec.high)
    numbers, ops = [value], []
    for _ in range(spec.steps):
        op = rng.choice(spec.ops)
        if op == "*":
            n = rng.randint(2, 9)
        elif op == "-":
            n = rng.randint(min(spec.low, value), min(spec.high, value))  # never below 0
        else:
            n = rng.randint(spec.low, spec.high)
        value = _APPLY[op](value, n)
        numbers.append(n)
        ops.append(op)
    return Chain(tuple(numbers), tuple(ops))


def parse_chain(question: str) -> Chain | None:
    """The chain a question states (``Calculate 17 + 21 - 31.``), or None for anything else."""
    body = question.strip()
    if not (body.startswith("Calculate ") and body.endswith(".")):
        return None
    tokens = body[len("Calculate ") : -1].split()
    if len(tokens) < 3 or len(tokens) % 2 == 0:
        return None
    numbers, ops = tokens[0::2], tokens[1::2]
    if not all(t.isdigit() for t in numbers) or not all(o in _APPLY for o in ops):
        return None
    return Chain(tuple(int(t) for t in numbers), tuple(ops))


def parse_name(name: str) -> tuple[str, ArithSpec]:
    """``arith_train:steps=3:ops=+-*`` → ``("arith_train", ArithSpec(steps=3, ops="+-*"))``."""
    return parse_knobs(name, ArithSpec, "arith:steps=3:high=999:ops=+-*")


@lru_cache(maxsize=8)
def rows(split: str, spec: ArithSpec, size: int | None = None) -> tuple[dict[str, str], ...]:
    """The split's problems as ``{"question", "solution", "answer"}`` rows, in seed order."""

    def make(seed: int) -> dict[str, str]:
        c = make_chain(spec, seed)
        return {"question": c.question(), "solution": c.solution(), "answer": str(c.answer)}

    return seeded_rows(make, split, size)
