"""The procedural tasks by name: their problems, knobs, exact teacher and per-line check.

``data.tasks`` lists their splits (``lines``, ``lines_train``, ...); ``rlmec data distill
--teacher <name>`` picks the exact teacher here; the learning benchmark reads the per-line
check for its per-line accuracy and the ``partial`` objective's score.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rlmec.data import arith, arith_teacher
from rlmec.data.procedural import lines, paths
from rlmec.data.procedural.base import ExactTeacher


@dataclass(frozen=True)
class ProceduralTask:
    parse_name: Callable[[str], tuple[str, Any]]  # "lines_train:k=2" -> (base, spec)
    rows: Callable[[str, Any], Sequence[dict[str, str]]]  # (split, spec) -> rows
    teacher: ExactTeacher
    # (question, prediction) -> (lines right, lines), for per-line accuracy; None: no lines
    line_scores: Callable[[str, str], tuple[int, int] | None] | None = None


TASKS: dict[str, ProceduralTask] = {
    "arith": ProceduralTask(arith.parse_name, arith.rows, arith_teacher.TEACHER),
    "lines": ProceduralTask(lines.parse_name, lines.rows, lines.TEACHER, lines.line_scores),
    "paths": ProceduralTask(paths.parse_name, paths.rows, paths.TEACHER),
}


def family(name: str) -> str:
    """``lines_train:k=2`` -> ``lines``."""
    return name.split(":", 1)[0].removesuffix("_train")


def get(name: str) -> ProceduralTask:
    if family(name) not in TASKS:
        raise ValueError(f"{name!r} is not a procedural task; choose from {', '.join(TASKS)}")
    return TASKS[family(name)]


def line_check(task: str) -> Callable[[str, str], tuple[int, int] | None] | None:
    """The per-line check of a task with lines (``lines``, any split or knobs), else None."""
    return TASKS[family(task)].line_scores if family(task) in TASKS else None


def rows_of(name: str) -> Sequence[dict[str, str]]:
    """The rows of a task name with its knobs: ``lines:k=2`` (test) or ``lines_train:k=2``."""
    base, spec = get(name).parse_name(name)
    return get(name).rows("train" if base.endswith("_train") else "test", spec)
