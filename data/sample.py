"""The policy writes ``n`` solutions per problem (``rlmec data sample``, method §1 step 1).

The task's policy prompt (§2.3), sampling at the paper's defaults (n=5, temperature 0.7,
top-p 0.95, 512 new tokens), each solution judged by the bounded answer checking of §4. Every
sample gets its own seed, derived from the run's seed, the problem id and the sample index, so a
resumed run draws exactly what an uninterrupted one would. Problems go to the engine in chunks
(one batched ``generate`` call each); a finished chunk is appended and fsynced, and a rerun skips
the problems whose ``n`` samples are all written.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlmec.data.records import GrmRecord
from rlmec.data.tasks import Problem
from rlmec.inference.engine import Engine, Sampling, generate_in_context
from rlmec.shared.answers import AnswerCheck
from rlmec.shared.checking import AnswerChecker
from rlmec.shared.jsonl import append_rows, open_output
from rlmec.shared.prompts import POLICY_STOP, policy_prompt


@dataclass(frozen=True)
class SampleConfig:
    n: int = 5
    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 512
    seed: int = 0
    chunk_size: int = 64  # problems per engine call (n prompts each)


def sample_seed(seed: int, problem_id: str, index: int) -> int:
    """A stable 31-bit seed per (run seed, problem, sample)."""
    digest = hashlib.sha256(f"{seed}:{problem_id}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def sample_id(problem: Problem, index: int) -> str:
    return f"{problem.id}#{index}"


def todo(problems: list[Problem], output: Path, n: int) -> tuple[list[Problem], Counter[str]]:
    """Problems still missing samples, and the per-problem count of samples already written."""
    written: Counter[str] = Counter(str(r["meta"]["problem_id"]) for r in open_output(output))
    return [p for p in problems if written[p.id] < n], written


async def sample_problems(
    engine: Engine,
    checker: AnswerChecker,
    problems: list[Problem],
    output: Path,
    config: SampleConfig,
    progress: Any = None,
) -> Counter[str]:
    """Sample every problem not yet done; returns counts (``correct``, ``wrong``, ...)."""
    remaining, written = todo(problems, output, config.n)
    counts: Counter[str] = Counter()
    if progress is not None:
        progress.reset(total=len(problems))
        progress.update(len(problems) - len(remaining))
    for chunk in _chunks(remaining, config.chunk_size):
        rows = await _sample_chunk(engine, checker, chunk, written, config)
        append_rows(output, rows)
        counts.update("correct" if r.correct else "wrong" for r in rows)
        if progress is not None:
            progress.update(len(chunk))
    return counts


async def _sample_chunk(
    engine: Engine,
    checker: AnswerChecker,
    chunk: list[Problem],
    written: Counter[str],
    config: SampleConfig,
) -> list[GrmRecord]:
    # A problem interrupted mid-chunk cannot be half-written (chunks are appended whole), so
    # its samples are all missing or all present; ``written`` guards a changed --n.
    jobs = [(p, j) for p in chunk for j in range(written[p.id], config.n)]
    tokenizer = engine.tokenizer
    texts = [policy_prompt(p.task_type, p.question) for p, _ in jobs]
    prompt_ids = [list(tokenizer(text)["input_ids"]) for text in texts]
    seeds = tuple(sample_seed(config.seed, p.id, j) for p, j in jobs)
    sampling = Sampling(config.temperature, config.top_p, seeds)
    gens = await generate_in_context(
        engine, prompt_ids, config.max_new_tokens, POLICY_STOP, sampling,
        names=[p.id for p, _ in jobs],
    )  # fmt: skip
    checks = await checker.check_many(
        [(g.text, p.reference_answer, p.task_type) for g, (p, _) in zip(gens, jobs, strict=True)]
    )
    rows = []
    for (p, j), gen, check in zip(jobs, gens, checks, strict=True):
        judged = check if isinstance(check, AnswerCheck) else None
        rows.append(GrmRecord(
            id=sample_id(p, j), task=p.task, task_type=p.task_type, question=p.question,
            reference_solution=p.reference_solution, reference_answer=p.reference_answer,
            prediction=gen.text.strip(), correct=bool(judged and judged.correct),
            source="policy",
            meta={"problem_id": p.id, "sample": j,
                  "predicted_answer": judged.predicted_answer if judged else None,
                  "check_error": None if judged else str(getattr(check, "message", check)),
                  "num_tokens": gen.num_tokens, "finish_reason": gen.finish_reason},
        ))  # fmt: skip
    return rows


def _chunks(items: list[Problem], size: int) -> Iterator[list[Problem]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
