"""A teacher's rewrites as a certain GRM would score them: the trainer's records with no GRM.

The reward service turns a GRM's per-token probabilities ``p_t`` into §3.1 rewards. A teacher
that is never unsure (the exact ``arith`` teacher) gives ``p_t = 1`` to every prediction token
its rewrite keeps and ``p_t = 0`` to the others, so:

- a wrong prediction with an accepted rewrite: ``r_t`` = the floor (-0.1) on the tokens the
  rewrite does not keep (§3.3's edit script, read from the prediction's side), 0 elsewhere;
- a correct prediction: ``r_t`` = the cap (0.5) on every token;
- §3.3 imitation weights over the regular sequence, as the service computes them.

The learning benchmark trains "RLMEC with the exact teacher" on these records, beside "RLMEC
with the GRM" on the reward service's, to show what the GRM costs. The records also carry the
outcome, the reference solution and the share of right lines, so every baseline objective
reads the same file.
"""

from __future__ import annotations

import math
from typing import Any

from rlmec.data.records import GrmRecord
from rlmec.shared.alignment import imitation_weights, not_kept
from rlmec.shared.prompts import policy_prompt
from rlmec.shared.rewards import token_rewards
from rlmec.shared.schemas import RewardParams
from rlmec.shared.tokenization import encode_output

CERTAIN, NEVER = 0.0, -math.inf  # log p_t of a kept / a replaced token


def oracle_record(
    record: GrmRecord, tokenizer: Any, params: RewardParams | None = None
) -> dict[str, Any] | None:
    """The ``rlmec train`` TokenRecord of one sample over the policy ``tokenizer``; None for a
    wrong sample without an accepted rewrite (unscored: the paper drops it)."""
    if not record.correct and not record.accepted:
        return None
    regular = record.prediction if record.correct else (record.rewrite or "")
    pred = encode_output(tokenizer, record.prediction).token_ids
    reg = encode_output(tokenizer, regular).token_ids
    # The same flags as the service's ``edit_penalty`` (RewardParams).
    logprobs = [NEVER if d else CERTAIN for d in not_kept(pred, reg)]
    return {
        "id": record.id,
        "prompt": policy_prompt(record.task_type, record.question),
        "task": record.task_type,
        "prediction": record.prediction,
        "regular_sequence": regular,
        "rewards": token_rewards(logprobs, correct=record.correct, params=params),
        "imitation_weights": imitation_weights(pred, reg),
        "correct": record.correct,
        "reference_solution": record.reference_solution,
        "partial_credit": partial_credit(record),
    }


def partial_credit(record: GrmRecord) -> float:
    """The share of the prediction's right lines for a task with lines (``lines``), else the
    outcome (1 or 0): the ``partial`` objective's score."""
    from rlmec.data.procedural.registry import line_check

    scores = line_check(record.task)
    got = scores(record.question, record.prediction) if scores is not None else None
    return float(record.correct) if got is None else got[0] / got[1]
