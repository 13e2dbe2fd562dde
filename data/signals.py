"""The paper's step 6 offline (``rlmec data signals``, method §1, §3): the RLMEC signals of a
file of policy samples, as the trainer's JSONL records.

Each sample goes through the reward service (``/v1/token-rewards``, batched, with the team's
key): the GRM's token rewards (§3.1) and imitation weights (§3.3) as character spans. With
``--policy``, the initial policy's log-probabilities of the prediction's tokens (then EOS) are
added as the reference of §3.2 (teacher-forced on the policy prompt, the one output
tokenization), so training needs no reference model. Every result is written as a
:class:`ScoredSample` line, the record ``rlmec train`` reads; unscored ones are kept with their
reason (the trainer skips them, as the paper drops them). Resumable by sample id.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from rlmec.clients.async_ import AsyncClient
from rlmec.data.records import GrmRecord
from rlmec.inference.engine import Engine
from rlmec.shared.jsonl import append_rows
from rlmec.shared.prompts import policy_prompt
from rlmec.shared.schemas import RewardParams, Sample, ScoredSample
from rlmec.shared.tokenization import encode_output


def to_sample(record: GrmRecord, *, use_rewrite: bool) -> Sample:
    """The reward service's input; an accepted teacher/synthetic rewrite is sent along when
    ``use_rewrite`` (the GRM then only scores, §3.1)."""
    rewrite = record.rewrite if use_rewrite and record.accepted else None
    return Sample(
        id=record.id, question=record.question, reference_solution=record.reference_solution,
        reference_answer=record.reference_answer, prediction=record.prediction,
        task=record.task_type, rewrite=rewrite,
        prompt=policy_prompt(record.task_type, record.question),
    )  # fmt: skip


async def reference_logprobs(engine: Engine, scored: Sequence[ScoredSample]) -> list[list[float]]:
    """log π_ref of each prediction's policy tokens then EOS, given its policy prompt."""
    tok = engine.tokenizer
    prompts = [
        list(tok(s.prompt or policy_prompt(s.task, s.question))["input_ids"]) for s in scored
    ]
    outputs = [encode_output(tok, s.prediction).token_ids for s in scored]
    return await engine.score(prompts, outputs)


async def score_batch(
    client: AsyncClient, records: list[GrmRecord], *, engine: Engine | None, use_rewrite: bool,
    output: Path, params: RewardParams | None = None,
) -> Counter[str]:  # fmt: skip
    """One batch: reward service, then the reference log-probs, then append (durable)."""
    samples = [to_sample(r, use_rewrite=use_rewrite) for r in records]
    response = await client.token_rewards(samples, params=params)
    results = list(response.results)
    scored = [i for i, r in enumerate(results) if r.status == "scored"]
    if engine is not None and scored:
        refs = await reference_logprobs(engine, [results[i] for i in scored])
        for i, ref in zip(scored, refs, strict=True):
            results[i] = results[i].model_copy(update={"behaviour_logprobs": ref})
    append_rows(output, results)
    return Counter(r.status if r.status == "scored" else f"unscored: {r.reason}" for r in results)
