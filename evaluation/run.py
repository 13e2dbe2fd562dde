"""Zero-shot greedy evaluation of a policy on the shipped test sets (method §7).

Per task: the policy prompt of §2.3 for every problem, greedy decoding with at most 1024 new
tokens (math) or 512 (QA), the platform's bounded answer checking (§4), accuracy. Prompts go to
the engine in large chunks (one ``generate`` call each, which vLLM batches continuously); each
finished chunk is appended to ``<output>/<task>/samples.jsonl`` and flushed, so an interrupted
run continues from the rows already written. ``results.json`` is written at the end.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rlmec.data.procedural.registry import line_check
from rlmec.data.tasks import Problem, load_task
from rlmec.inference.engine import Engine, generate_in_context
from rlmec.shared.answers import AnswerCheck
from rlmec.shared.checking import AnswerChecker, CheckFailure
from rlmec.shared.jsonl import append_rows, open_output
from rlmec.shared.prompts import POLICY_STOP, TaskType, policy_prompt

MAX_NEW_TOKENS: dict[TaskType, int] = {"math": 1024, "qa": 512}
STOP = POLICY_STOP
SAMPLES_FILE = "samples.jsonl"
RESULTS_FILE = "results.json"


@dataclass(frozen=True)
class EvalConfig:
    tasks: list[str]
    limit: int | None = None
    seed: int = 0
    chunk_size: int = 512
    max_new_tokens: dict[TaskType, int] = field(default_factory=lambda: dict(MAX_NEW_TOKENS))


@dataclass
class TaskResult:
    task: str
    task_type: TaskType
    correct: int = 0
    total: int = 0
    unchecked: int = 0  # answer check over budget: counted wrong, listed here
    lines_right: int = 0  # tasks with lines (``lines``): lines right, of ``lines``
    lines: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    @property
    def line_accuracy(self) -> float | None:
        """The share of right lines, for a task whose problems have lines (else None)."""
        return self.lines_right / self.lines if self.lines else None

    @property
    def stderr(self) -> float:
        """Standard error of the accuracy (binomial), as lm-evaluation-harness reports it."""
        n, p = self.total, self.accuracy
        return math.sqrt(p * (1 - p) / (n - 1)) if n > 1 else 0.0


def _chunks(items: list[Problem], size: int) -> Iterator[list[Problem]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


async def evaluate_task(
    engine: Engine,
    checker: AnswerChecker,
    task: str,
    config: EvalConfig,
    out_dir: Path,
    progress: Any = None,
) -> TaskResult:
    """Evaluate one task, resuming from ``out_dir/<task>/samples.jsonl``."""
    problems = load_task(task, limit=config.limit, seed=config.seed)
    task_dir = out_dir / task
    task_dir.mkdir(parents=True, exist_ok=True)
    samples_path = task_dir / SAMPLES_FILE
    written = open_output(samples_path)
    wanted = {p.id for p in problems}  # rows of another --limit/--seed stay, uncounted
    done = [row for row in written if row["id"] in wanted]
    seen = {row["id"] for row in done}
    todo = [p for p in problems if p.id not in seen]
    result = TaskResult(task, problems[0].task_type)
    for row in done:
        _count(result, row)
    if progress is not None:
        progress.reset(total=len(problems))
        progress.update(len(done))
    started = time.perf_counter()
    for chunk in _chunks(todo, config.chunk_size):
        rows = await _generate_and_check(engine, checker, chunk, config)
        append_rows(samples_path, rows)
        for row in rows:
            _count(result, row)
        if progress is not None:
            progress.update(len(rows))
    result.seconds = time.perf_counter() - started
    return result


def _count(result: TaskResult, row: dict[str, Any]) -> None:
    result.total += 1
    result.correct += bool(row["correct"])
    result.unchecked += row.get("check_error") is not None
    result.generated_tokens += int(row.get("num_tokens", 0))
    result.lines_right += int(row.get("lines_right") or 0)
    result.lines += int(row.get("lines") or 0)


async def _generate_and_check(
    engine: Engine, checker: AnswerChecker, chunk: list[Problem], config: EvalConfig
) -> list[dict[str, Any]]:
    tokenizer = engine.tokenizer
    prompts = [policy_prompt(p.task_type, p.question) for p in chunk]
    ids = [list(tokenizer(text)["input_ids"]) for text in prompts]
    outputs = await generate_in_context(
        engine, ids, config.max_new_tokens[chunk[0].task_type], STOP,
        names=[p.id for p in chunk],
    )  # fmt: skip
    checks = await checker.check_many(
        [(g.text, p.reference_answer, p.task_type) for g, p in zip(outputs, chunk, strict=True)]
    )
    rows = []
    scores = line_check(chunk[0].task)
    for p, prompt, gen, check in zip(chunk, prompts, outputs, checks, strict=True):
        judged = check if isinstance(check, AnswerCheck) else None
        right, total = (scores(p.question, gen.text.strip()) if scores else None) or (None, None)
        rows.append({
            "id": p.id, "task": p.task, "prompt": prompt, "output": gen.text,
            "predicted_answer": judged.predicted_answer if judged else None,
            "reference_answer": p.reference_answer, "correct": bool(judged and judged.correct),
            "check_error": check.message if isinstance(check, CheckFailure) else None,
            "num_tokens": gen.num_tokens, "finish_reason": gen.finish_reason,
            "lines_right": right, "lines": total,
        })  # fmt: skip
    return rows


def results_document(
    results: list[TaskResult], *, model: str, engine: str, config: EvalConfig, seconds: float
) -> dict[str, Any]:
    """``results.json``: ``tasks[task]["accuracy"]`` plus the lm-evaluation-harness layout
    (``results[task]["exact_match,rlmec"]``) so existing dashboards read it."""
    return {
        "model": model,
        "engine": engine,
        "settings": {**asdict(config), "stop": list(STOP), "decoding": "greedy"},
        "seconds": seconds,
        "tasks": {r.task: _task_summary(r) for r in results},
        "results": {
            r.task: {
                "alias": r.task,
                "exact_match,rlmec": r.accuracy,
                "exact_match_stderr,rlmec": r.stderr,
            }
            for r in results
        },
        "n-samples": {r.task: {"original": r.total, "effective": r.total} for r in results},
    }


def _task_summary(r: TaskResult) -> dict[str, Any]:
    return {
        "accuracy": r.accuracy, "correct": r.correct, "total": r.total,
        "unchecked": r.unchecked, "generated_tokens": r.generated_tokens,
        "seconds": r.seconds, "task_type": r.task_type,
    } | ({"line_accuracy": r.line_accuracy, "lines": r.lines} if r.lines else {})  # fmt: skip


def write_results(out_dir: Path, document: dict[str, Any]) -> Path:
    path = out_dir / RESULTS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
