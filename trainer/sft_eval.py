"""Held-out evaluation during GRM fine-tuning (``data.eval_file`` of ``rlmec grm train``).

Per example kind (locate, rewrite, identity): the mean target NLL, and the share of examples
whose every target token is the argmax given the ones before it. That share is exactly the
share greedy decoding would reproduce verbatim (greedy decoding emits the argmax, so it follows
the target for as long as the argmax agrees), so for locate examples it is the locate accuracy
of the GRM at that step, without generating. Each rank scores its share of the examples.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import torch

from rlmec.trainer.distributed import all_reduce_sum
from rlmec.trainer.loss import token_logprobs
from rlmec.trainer.sft import SftSample, collate_sft, target_logits

KindScores = dict[str, dict[str, float]]


def score_batch(
    logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example: the mean NLL of its target tokens, and whether each one is the argmax.

    Args:
        logits: ``[batch, seq, vocab]``; position ``j`` predicts token ``j+1``.
        input_ids: ``[batch, seq]``.
        loss_mask: ``[batch, seq]``, True on target tokens (every example has one).

    Returns:
        ``([batch] mean NLL, [batch] bool exact match)``.
    """
    nll = -token_logprobs(logits, input_ids)
    hit = torch.nn.functional.pad(logits[:, :-1].argmax(-1) == input_ids[:, 1:], (1, 0))
    mask = loss_mask.bool()
    count = mask.sum(-1).clamp(min=1)
    return (nll * mask).sum(-1) / count, (hit | ~mask).all(-1)


def _shard(samples: list[SftSample], rank: int, world: int) -> tuple[list[SftSample], int]:
    """This rank's examples, padded with repeats to the same count on every rank (a ZeRO-3
    forward needs every rank), and how many of them count."""
    mine = samples[rank::world]
    per_rank = math.ceil(len(samples) / world)
    return mine + [samples[0]] * (per_rank - len(mine)), len(mine)


def evaluate_sft(
    engine: Any, samples: list[SftSample], micro_batch_size: int, pad_id: int, rank: int, world: int
) -> KindScores:
    """``{kind: {"n", "loss", "exact_match"}}`` over every rank's examples."""
    mine, counted = _shard(samples, rank, world)
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    engine.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(mine), micro_batch_size):
                chunk = mine[start : start + micro_batch_size]
                b = collate_sft(chunk, pad_id).to(engine.device)
                logits, first = target_logits(engine, b)
                loss, exact = score_batch(logits, b.input_ids[:, first:], b.loss_mask[:, first:])
                for i, s in enumerate(chunk):
                    if start + i < counted:
                        row = sums[s.kind]
                        row[0] += 1
                        row[1] += float(loss[i])
                        row[2] += float(exact[i])
    finally:
        engine.train()
    kinds = sorted({s.kind for s in samples})
    flat = all_reduce_sum([v for k in kinds for v in sums[k]], engine.device)
    scores: KindScores = {}
    for i, kind in enumerate(kinds):
        n, loss_sum, exact_sum = flat[3 * i : 3 * i + 3]
        if n:
            scores[kind] = {"n": n, "loss": loss_sum / n, "exact_match": exact_sum / n}
    return scores


def summary_line(step: int, scores: KindScores) -> str:
    parts = [
        f"{kind} exact {s['exact_match']:.1%} loss {s['loss']:.3f} (n={s['n']:.0f})"
        for kind, s in scores.items()
    ]
    return f"eval step {step}: " + "; ".join(parts)
