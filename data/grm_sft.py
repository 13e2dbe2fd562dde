"""GRM training examples from pipeline records (``rlmec data grm-sft``, method §1 step 3, §2.1).

- Every accepted wrong record (a located step and a rewrite that reaches the reference) gives
  two examples: *locate* (prompt: the locate prompt; target: ``The first error step is [k]``)
  and *rewrite* (prompt: the scoring prompt, which ends in ``Correct prediction:``; target: the
  rewrite, stripped).
- Correct predictions become *identity* rewrites (target: the prediction itself), sampled with
  a seed at the paper's rate: accepted / all records, correct ones included (the released
  ``gen_grm_data_math.py``: ``threshold = num_data / len(data)``; 200 accepted of 200 wrong
  beside 100 correct samples the correct ones at 2/3).
- ``rewrite_share`` < 1 keeps the rewrite example of only that seeded share of the accepted
  records (every locate example stays): a small GRM learns to copy-and-fix in a few dozen
  steps but needs many more locate examples, and each example costs the same compute.

The trainer appends EOS and puts the loss on the target tokens only.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from rlmec.data.records import GrmRecord
from rlmec.shared.prompts import LOCATE_TARGET, locate_prompt, scoring_prompt
from rlmec.shared.schemas import StrictModel

ExampleKind = Literal["locate", "rewrite", "identity"]


class SftExample(StrictModel):
    """One causal-LM example: the loss covers ``target`` (+ EOS), never ``prompt``."""

    id: str
    kind: ExampleKind
    prompt: str
    target: str


@dataclass
class SftStats:
    records: int = 0
    wrong: int = 0
    accepted: int = 0
    correct: int = 0
    identity: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    @property
    def identity_rate(self) -> float:
        return self.accepted / self.records if self.records else 0.0


def locate_example(r: GrmRecord) -> SftExample:
    assert r.error_step is not None
    return SftExample(
        id=f"{r.id}:locate",
        kind="locate",
        prompt=locate_prompt(r.question, r.reference_solution, r.prediction),
        target=LOCATE_TARGET.format(step=r.error_step),
    )


def rewrite_example(r: GrmRecord, *, identity: bool = False) -> SftExample:
    target = r.prediction if identity else r.rewrite
    assert target is not None
    return SftExample(
        id=f"{r.id}:{'identity' if identity else 'rewrite'}",
        kind="identity" if identity else "rewrite",
        prompt=scoring_prompt(r.question, r.reference_solution, r.prediction),
        target=target.strip(),
    )


def build_examples(
    records: Iterable[GrmRecord],
    *,
    seed: int = 0,
    identity_rate: float | None = None,
    rewrite_share: float = 1.0,
) -> tuple[list[SftExample], SftStats]:
    """Examples in a seeded shuffled order, and what was used or skipped."""
    stats = SftStats()
    keep_rewrite = random.Random(f"{seed}:rewrite")
    examples: list[SftExample] = []
    correct: list[GrmRecord] = []
    for r in records:
        stats.records += 1
        if r.correct:
            stats.correct += 1
            correct.append(r)
            continue
        stats.wrong += 1
        if not r.accepted:
            stats.skipped[r.reason or "no located step or rewrite"] += 1
            continue
        if r.error_step is not None and r.error_step >= len(r.prediction.split("\n")):
            stats.skipped["error_step out of range"] += 1
            continue
        stats.accepted += 1
        examples.append(locate_example(r))
        if keep_rewrite.random() < rewrite_share:
            examples.append(rewrite_example(r))
    # The paper's rate follows the rewrites kept, so identities stay the same share of them.
    rate = stats.identity_rate * rewrite_share if identity_rate is None else identity_rate
    rng = random.Random(seed)
    for r in correct:
        if rng.random() < rate:
            examples.append(rewrite_example(r, identity=True))
            stats.identity += 1
    rng.shuffle(examples)
    return examples, stats
