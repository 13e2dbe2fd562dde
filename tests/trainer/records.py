"""Small synthetic RLMEC records for trainer tests: wrong predictions with a rewrite (edited
tokens imitated with weight 1.0, penalised prediction tokens) and correct ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlmec.shared.alignment import edit_flags, imitation_weights
from rlmec.shared.schemas import ScoredSample
from rlmec.shared.spans import to_spans


def _ids_offsets(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [(int(a), int(b)) for a, b in enc["offset_mapping"]]


def sample_texts(i: int) -> tuple[str, str, str, bool]:
    a, b = 10 + i, 3 + (i % 5)
    question = f"Natalia sold {a} clips in April and {b} in May. How many clips altogether?"
    right = f"Natalia sold {a}+{b} = {a + b} clips.\nThe answer is: {a + b}"
    if i % 4 == 3:  # a correct prediction: its own regular sequence
        return question, right, right, True
    wrong = a + b + 1 + (i % 3)
    return question, f"Natalia sold {a}+{b} = {wrong} clips.\nThe answer is: {wrong}", right, False


def token_record(tokenizer: Any, i: int, *, with_ref: list[float] | None = None) -> dict[str, Any]:
    """A token-level record (format b) over ``tokenizer``."""
    question, pred, reg, correct = sample_texts(i)
    pred_ids, _ = _ids_offsets(tokenizer, pred)
    reg_ids, _ = _ids_offsets(tokenizer, reg)
    if correct:
        rewards = [0.2] * (len(pred_ids) + 1)
    else:
        # Prediction tokens the rewrite does not keep are the key (penalised) tokens.
        rewards = [-0.1 if f else 0.0 for f in edit_flags(reg_ids, pred_ids)] + [0.0]
    weights = [*imitation_weights(pred_ids, reg_ids), 0.5]
    record: dict[str, Any] = {
        "id": f"s{i}",
        "question": question,
        "prediction": pred,
        "regular_sequence": reg,
        "rewards": rewards,
        "imitation_weights": weights,
    }
    if with_ref is not None:
        record["ref_logprobs"] = with_ref
    return record


def scored_sample(tokenizer: Any, i: int) -> ScoredSample:
    """The same sample as a ScoredSample with span values (format a / the stream)."""
    rec = token_record(tokenizer, i)
    _, pred_off = _ids_offsets(tokenizer, rec["prediction"])
    _, reg_off = _ids_offsets(tokenizer, rec["regular_sequence"])
    n = len(rec["prediction"])
    m = len(rec["regular_sequence"])
    return ScoredSample(
        id=rec["id"],
        status="scored",
        question=rec["question"],
        prediction=rec["prediction"],
        correct=rec["prediction"] == rec["regular_sequence"],
        predicted_answer=None,
        reference_answer=None,
        regular_sequence=rec["regular_sequence"],
        reward_spans=to_spans([*pred_off, (n, n)], rec["rewards"]),
        edit_spans=to_spans([*reg_off, (m, m)], rec["imitation_weights"]),
    )


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path
