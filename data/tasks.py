"""The benchmark and training sets shipped in ``datasets/``, as typed rows per task.

Every task gives :class:`Problem` rows: the question as the policy sees it (QA: the question,
``\\nOptions:\\n`` and one option a line, as in the policy prompt of method §2.3), the reference
solution, the reference answer, and the task type (``math`` or ``qa``, which decides answer
checking, method §4). The eight evaluation sets of method §7 are :data:`EVAL_TASKS`; the
``*_train`` tasks are the training sets.

The files are read from ``RLMEC_DATA_DIR`` when set, else from ``datasets/`` of the repository
this package lives in (they are not in the wheel).
"""

from __future__ import annotations

import gzip
import json
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlmec.data import arith
from rlmec.data.procedural import registry as procedural
from rlmec.shared.answers import reference_answer
from rlmec.shared.prompts import TaskType, format_qa_problem

EVAL_TASKS = ("gsm8k", "math", "svamp", "mmlu_math", "ecqa", "qasc", "openbookqa", "arc_easy")


@dataclass(frozen=True)
class Problem:
    id: str  # "<task>/<row index>": stable across runs and machines
    task: str
    task_type: TaskType
    question: str
    reference_solution: str
    reference_answer: str


class DataFileMissing(FileNotFoundError):
    """A task's data file is not where the package looks (a client-only install from a wheel
    has no ``datasets/``): the ``rlmec`` command prints its one-line fix."""


def data_dir() -> Path:
    """Where the data files are: ``RLMEC_DATA_DIR``, else the repository's ``datasets/``."""
    configured = os.environ.get("RLMEC_DATA_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path(__file__).resolve().parents[1] / "datasets"


def raw_rows(file_stem: str) -> list[dict[str, Any]]:
    """The rows of one data file as published (``gsm8k_test``, ``svamp``, ...)."""
    root = data_dir()
    for suffix in (".jsonl.gz", ".json.gz", ".jsonl", ".json"):
        path = root / f"{file_stem}{suffix}"
        if path.is_file():
            opener = gzip.open if suffix.endswith(".gz") else open
            with opener(path, "rt", encoding="utf-8") as f:
                if ".jsonl" in suffix:
                    return [json.loads(line) for line in f if line.strip()]
                rows = json.load(f)
                assert isinstance(rows, list), f"{path} must hold a JSON array"
                return rows
    raise DataFileMissing(
        f"data file {file_stem!r} not found in {root}; the data ships in the repository's "
        "datasets/ folder: run from a clone, or set RLMEC_DATA_DIR to a copy of that folder"
    )


# --- one converter per source format ------------------------------------------------------


def _gsm8k(row: dict[str, Any]) -> tuple[str, str, str | None]:
    return row["question"], row["answer"], reference_answer(row["answer"], "math")


def _math(row: dict[str, Any]) -> tuple[str, str, str | None]:
    return row["problem"], row["solution"], reference_answer(row["solution"], "math")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _svamp(row: dict[str, Any]) -> tuple[str, str, str | None]:
    body = row["Body"].strip()
    body = body if body.endswith((".", "?", "!")) else body + "."
    answer = _number(row["Answer"])
    solution = f"{row['Equation'].strip()} = {answer}\n#### {answer}"
    return f"{body} {row['Question'].strip()}", solution, answer


def _mmlu(row: dict[str, Any]) -> tuple[str, str, str | None]:
    options = [str(c) for c in row["choices"]]
    answer = options[int(row["answer"])]
    return format_qa_problem(row["question"], options), f"The answer is {answer}", answer


def _qa(row: dict[str, Any]) -> tuple[str, str, str | None]:
    return row["problem"], row["solution"], row["answer"]


def _qa_math(row: dict[str, Any]) -> tuple[str, str, str | None]:
    return row["question"], row["solution"], row["answer"]


Converter = Callable[[dict[str, Any]], tuple[str, str, str | None]]


@dataclass(frozen=True)
class TaskSpec:
    file_stem: str | None  # None: a procedural task, its rows made by ``generate``
    task_type: TaskType
    convert: Converter
    rows: int  # as published (datasets/README.md) or as generated; checked by the tests
    generate: Callable[[str], Sequence[dict[str, Any]]] | None = None  # full name → rows


def _procedural(test: bool) -> TaskSpec:
    size = arith.TEST_SIZE if test else arith.TRAIN_SIZE
    return TaskSpec(None, "math", _qa_math, size, procedural.rows_of)


TASKS: dict[str, TaskSpec] = {
    "gsm8k": TaskSpec("gsm8k_test", "math", _gsm8k, 1319),
    "math": TaskSpec("math_test", "math", _math, 5000),
    "svamp": TaskSpec("svamp", "math", _svamp, 1000),
    "mmlu_math": TaskSpec("mmlu_mathematics", "qa", _mmlu, 974),
    "ecqa": TaskSpec("ecqa_test", "qa", _qa, 2194),
    "qasc": TaskSpec("qasc_test", "qa", _qa, 926),
    "openbookqa": TaskSpec("openbookqa_test", "qa", _qa, 500),
    "arc_easy": TaskSpec("arc_easy_test", "qa", _qa, 2376),
    "gsm8k_train": TaskSpec("gsm8k_train", "math", _gsm8k, 7473),
    "ecqa_train": TaskSpec("ecqa_train", "qa", _qa, 7598),
    "qasc_train": TaskSpec("qasc_train", "qa", _qa, 7747),
    # Procedural (rlmec.data.arith, rlmec.data.procedural): knobs ride on the name,
    # "arith:steps=3:ops=+-*", "lines:k=2", "paths:n=6".
    **{
        f"{name}{split}": _procedural(split == "")
        for name in procedural.TASKS
        for split in ("", "_train")
    },
}


def base_name(name: str) -> str:
    """The registered task of a name: ``arith:steps=3`` → ``arith``."""
    return name.split(":", 1)[0]


def resolve_tasks(names: str) -> list[str]:
    """``"all"`` (the eight evaluation sets) or a comma-separated list of task names."""
    wanted = list(EVAL_TASKS) if names.strip() == "all" else [n.strip() for n in names.split(",")]
    unknown = [n for n in wanted if base_name(n) not in TASKS]
    if unknown or not wanted:
        raise ValueError(
            f"unknown task(s) {unknown or [names]}; choose from {', '.join(TASKS)} or 'all'"
        )
    for name in wanted:
        if ":" in name:
            if TASKS[base_name(name)].generate is None:
                known = ", ".join(procedural.TASKS)
                raise ValueError(f"task {name!r}: only procedural tasks ({known}) take knobs")
            procedural.get(name).parse_name(name)  # a bad knob fails here, with its fix
    return wanted


def _rows(name: str, spec: TaskSpec) -> Sequence[dict[str, Any]]:
    if spec.generate is not None:
        return spec.generate(name)
    assert spec.file_stem is not None
    return raw_rows(spec.file_stem)


def load_task(name: str, *, limit: int | None = None, seed: int = 0) -> list[Problem]:
    """The rows of task ``name``; with ``limit``, a fixed seeded subset in file order (the
    same rows for every model, so two evaluations compare on the same problems)."""
    (name,) = resolve_tasks(name)
    spec = TASKS[base_name(name)]
    problems = []
    for i, row in enumerate(_rows(name, spec)):
        question, solution, answer = spec.convert(row)
        if not answer:  # never seen in the shipped data; guards a foreign RLMEC_DATA_DIR
            raise ValueError(f"{spec.file_stem} row {i} states no reference answer")
        problems.append(Problem(f"{name}/{i}", name, spec.task_type, question, solution, answer))
    if limit is not None and limit < len(problems):
        keep = sorted(random.Random(f"{seed}:{name}").sample(range(len(problems)), limit))
        problems = [problems[i] for i in keep]
    return problems
