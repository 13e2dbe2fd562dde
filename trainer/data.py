"""Records → tokenized samples → padded typed batches for the RLMEC objective.

Two record formats (one JSON object a line in a JSONL file, or from the scored stream):

* a :class:`~rlmec.shared.schemas.ScoredSample` (detected by its ``status`` field): reward and
  edit values come as character spans (§6) and are projected onto the policy tokenizer;
* a token-level :class:`TokenRecord`: ``rewards`` per policy token of the prediction then EOS,
  ``imitation_weights`` per policy token of the regular sequence then EOS, and optionally
  ``ref_logprobs`` (per prediction token then EOS).

Tokenisation (§2.3, §5): the prompt with the tokenizer's special tokens, the response alone
without them, then EOS; the loss mask covers exactly the response tokens and EOS, whatever
the padding side.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch
from pydantic import Field, ValidationError, model_validator

from rlmec.shared.prompts import TaskType, policy_prompt
from rlmec.shared.schemas import NonEmptyText, ScoredSample, SpanValues, StrictModel, Text
from rlmec.shared.spans import project, to_spans
from rlmec.shared.tokenization import encode_output

PaddingSide = Literal["left", "right"]
T = TypeVar("T")


class DataError(ValueError):
    """A record that cannot be trained on; the message names the record and the fix."""


class TokenRecord(StrictModel):
    """A training record with values already over the policy tokenizer's tokens."""

    id: str | None = Field(None, max_length=256, description="Sample id, for messages.")
    prompt: Text | None = Field(None, description="Exact policy prompt; default from question.")
    question: NonEmptyText | None = Field(None, description="Problem, when prompt is absent.")
    task: TaskType = Field("math", description="Picks the §2.3 policy prompt template.")
    prediction: Text = Field(description="The policy's solution y.")
    regular_sequence: Text = Field(description="The imitation target ŷ (§3.3).")
    rewards: list[float] = Field(description="r_t per policy token of prediction, then EOS.")
    imitation_weights: list[float] = Field(description="c_t per token of regular seq, then EOS.")
    ref_logprobs: list[float] | None = Field(
        None, description="log π_ref per prediction token then EOS (§3.2); else computed."
    )
    correct: bool | None = Field(
        None, description="The prediction's outcome (the sequence, rft and grpo objectives)."
    )
    reference_solution: Text | None = Field(
        None, description="A correct solution (the sft objective trains on it)."
    )
    partial_credit: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="The share of the prediction's lines that are right (the partial objective).",
    )

    @model_validator(mode="after")
    def _has_prompt(self) -> TokenRecord:
        if self.prompt is None and self.question is None:
            raise ValueError("the record has neither 'prompt' nor 'question'; give one of them")
        return self


class ReferenceRecord(StrictModel):
    """A problem and a correct solution only (no prediction): a correct sample to imitate,
    what the ``sft`` objective trains on (e.g. a warm start on reference solutions)."""

    id: str | None = Field(None, max_length=256, description="Sample id, for messages.")
    prompt: Text | None = Field(None, description="Exact policy prompt; default from question.")
    question: NonEmptyText | None = Field(None, description="Problem, when prompt is absent.")
    task: TaskType = Field("math", description="Picks the §2.3 policy prompt template.")
    reference_solution: NonEmptyText = Field(description="The solution to learn.")

    @model_validator(mode="after")
    def _has_prompt(self) -> ReferenceRecord:
        if self.prompt is None and self.question is None:
            raise ValueError("the record has neither 'prompt' nor 'question'; give one of them")
        return self


@dataclass(frozen=True)
class TrainSample:
    """One tokenized sample; ``*_ids`` end with EOS and every value list matches its ids."""

    prompt_ids: tuple[int, ...]
    prediction_ids: tuple[int, ...]
    regular_ids: tuple[int, ...]
    rewards: tuple[float, ...]
    imitation_weights: tuple[float, ...]
    ref_logprobs: tuple[float, ...] | None
    sample_id: str | None = None
    correct: bool | None = None  # the outcome, when the record states it
    reference_ids: tuple[int, ...] | None = None  # the reference solution then EOS
    group: str | None = None  # samples of one prompt (grpo's groups)
    advantage: float = 0.0  # grpo: set by rlmec.trainer.objectives.prepare_samples
    partial_credit: float | None = None  # the share of right lines, when the record states it


@dataclass(frozen=True)
class SequenceBatch:
    """Padded sequences (prompt + response + EOS), all ``[rows, seq]``.

    ``loss_mask`` is True on the response tokens and EOS only; ``values`` holds the per-token
    rewards (predictions) or imitation weights (regular sequences), 0 elsewhere.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    loss_mask: torch.Tensor
    values: torch.Tensor

    def to(self, device: torch.device | str) -> SequenceBatch:
        return SequenceBatch(*(t.to(device) for t in _fields(self)))


@dataclass(frozen=True)
class RlmecBatch:
    """A micro-batch: predictions and regular sequences padded to one common length so that
    both go through the policy in one forward pass.

    ``ref_logprobs`` is ``[batch, seq]`` aligned with ``prediction``; rows where ``ref_known``
    (``[batch]`` bool) is False must be filled by a reference model before the loss.
    ``correct`` (``[batch]`` bool, False where unknown) and ``advantages`` (``[batch]``) are
    the sample-level values the baseline objectives read.
    """

    prediction: SequenceBatch
    regular: SequenceBatch
    ref_logprobs: torch.Tensor
    ref_known: torch.Tensor
    correct: torch.Tensor | None = None
    advantages: torch.Tensor | None = None
    partial_credit: torch.Tensor | None = None  # [batch], 0 where unknown

    @property
    def size(self) -> int:
        return int(self.prediction.input_ids.size(0))

    def num_tokens(self) -> int:
        """Non-padding tokens in both passes (for tokens/s)."""
        return int(self.prediction.attention_mask.sum() + self.regular.attention_mask.sum())

    def counts(self) -> tuple[int, int]:
        """``(N_r, N_c)`` of this micro-batch: response tokens with a non-zero reward / weight."""
        p, r = self.prediction, self.regular
        n_r = (p.loss_mask & (p.values != 0)).sum()
        n_c = (r.loss_mask & (r.values != 0)).sum()
        return int(n_r), int(n_c)

    def to(self, device: torch.device | str) -> RlmecBatch:
        return RlmecBatch(
            self.prediction.to(device),
            self.regular.to(device),
            self.ref_logprobs.to(device),
            self.ref_known.to(device),
            None if self.correct is None else self.correct.to(device),
            None if self.advantages is None else self.advantages.to(device),
            None if self.partial_credit is None else self.partial_credit.to(device),
        )


def _fields(s: SequenceBatch) -> tuple[torch.Tensor, ...]:
    return (s.input_ids, s.attention_mask, s.position_ids, s.loss_mask, s.values)


# --- tokenisation -------------------------------------------------------------------------


class PolicyEncoder:
    """Tokenizes prompts and responses the one way the trainer and the loss expect: prompts
    with the tokenizer's special tokens, responses by the platform's one output tokenization
    (:func:`rlmec.shared.tokenization.encode_output`)."""

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        if tokenizer.eos_token_id is None:
            raise DataError("the policy tokenizer has no eos_token; set one in its config")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.eos_id = int(tokenizer.eos_token_id)

    def prompt(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def response(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids of ``text`` then EOS, and the offsets of the text tokens (EOS excluded)."""
        out = encode_output(self.tokenizer, text)
        return out.token_ids, out.text_offsets


def _truncate(sample: TrainSample, max_length: int) -> TrainSample:
    """Cut responses so that prompt + response fits ``max_length`` (paper: max length 2048);
    the values are cut with their tokens."""
    room = max_length - len(sample.prompt_ids)
    if room < 1:
        raise DataError(
            f"sample {sample.sample_id!r}: the prompt alone has {len(sample.prompt_ids)} tokens, "
            f"max_length is {max_length}; raise max_length or shorten the prompt"
        )
    refs = sample.reference_ids or ()
    if max(len(sample.prediction_ids), len(sample.regular_ids), len(refs)) <= room:
        return sample
    ref = sample.ref_logprobs[:room] if sample.ref_logprobs is not None else None
    return replace(
        sample,
        reference_ids=sample.reference_ids[:room] if sample.reference_ids is not None else None,
        prediction_ids=sample.prediction_ids[:room],
        regular_ids=sample.regular_ids[:room],
        rewards=sample.rewards[:room],
        imitation_weights=sample.imitation_weights[:room],
        ref_logprobs=ref,
    )


def _check_len(name: str, values: Sequence[float], n_tokens: int, what: str) -> None:
    if len(values) != n_tokens:
        raise DataError(
            f"{name} has {len(values)} values but the {what} has {n_tokens} policy tokens "
            "(EOS included); give one value per policy token plus one for EOS, or send "
            "span values in a ScoredSample record"
        )


def from_token_record(record: TokenRecord, tok: PolicyEncoder) -> TrainSample:
    prompt = record.prompt or policy_prompt(record.task, record.question or "")
    pred_ids, _ = tok.response(record.prediction)
    reg_ids, _ = tok.response(record.regular_sequence)
    _check_len("rewards", record.rewards, len(pred_ids), "prediction")
    _check_len("imitation_weights", record.imitation_weights, len(reg_ids), "regular_sequence")
    if record.ref_logprobs is not None:
        _check_len("ref_logprobs", record.ref_logprobs, len(pred_ids), "prediction")
    sample = TrainSample(
        prompt_ids=tuple(tok.prompt(prompt)),
        prediction_ids=tuple(pred_ids),
        regular_ids=tuple(reg_ids),
        rewards=tuple(record.rewards),
        imitation_weights=tuple(record.imitation_weights),
        ref_logprobs=tuple(record.ref_logprobs) if record.ref_logprobs is not None else None,
        sample_id=record.id,
        correct=record.correct,
        reference_ids=_reference_ids(record.reference_solution, tok),
        group=prompt,
        partial_credit=record.partial_credit,
    )
    return _truncate(sample, tok.max_length)


def _reference_ids(reference: str | None, tok: PolicyEncoder) -> tuple[int, ...] | None:
    return None if reference is None else tuple(tok.response(reference.strip())[0])


def _spans(spans: SpanValues | None, token_values: Any, name: str, sid: str | None) -> SpanValues:
    if spans is not None:
        return spans
    if token_values is not None:
        return to_spans(token_values.offsets, token_values.values)
    raise DataError(
        f"scored sample {sid!r} has neither {name}_spans nor token {name} values; "
        "score it again with the reward service"
    )


def from_scored_sample(sample: ScoredSample, tok: PolicyEncoder) -> TrainSample | None:
    """Project a scored sample's span values (§6) onto the policy tokens; ``None`` when the
    sample is unscored (the paper drops those)."""
    if sample.status != "scored":
        return None
    if sample.regular_sequence is None:
        raise DataError(f"scored sample {sample.id!r} has no regular_sequence; score it again")
    reward_spans = _spans(sample.reward_spans, sample.rewards, "reward", sample.id)
    edit_spans = _spans(sample.edit_spans, sample.imitation_weights, "edit", sample.id)
    prompt = sample.prompt or policy_prompt(sample.task, sample.question)
    pred_ids, pred_offsets = tok.response(sample.prediction)
    reg_ids, reg_offsets = tok.response(sample.regular_sequence)
    ref = sample.behaviour_logprobs
    if ref is not None:
        _check_len("behaviour_logprobs", ref, len(pred_ids), "prediction")
    out = TrainSample(
        prompt_ids=tuple(tok.prompt(prompt)),
        prediction_ids=tuple(pred_ids),
        regular_ids=tuple(reg_ids),
        rewards=tuple(project(reward_spans, pred_offsets)),
        imitation_weights=tuple(project(edit_spans, reg_offsets)),
        ref_logprobs=tuple(ref) if ref is not None else None,
        sample_id=sample.id,
        correct=sample.correct,
        reference_ids=_reference_ids(sample.reference_solution, tok),
        group=prompt,
    )
    return _truncate(out, tok.max_length)


def from_reference_record(record: ReferenceRecord, tok: PolicyEncoder) -> TrainSample:
    """The reference as a correct sample: prediction and regular sequence are the reference
    (rewards 0, imitation weight 1), ``correct`` True."""
    prompt = record.prompt or policy_prompt(record.task, record.question or "")
    ids = tuple(tok.response(record.reference_solution.strip())[0])
    sample = TrainSample(
        prompt_ids=tuple(tok.prompt(prompt)), prediction_ids=ids, regular_ids=ids,
        rewards=(0.0,) * len(ids), imitation_weights=(1.0,) * len(ids), ref_logprobs=None,
        sample_id=record.id, correct=True, reference_ids=ids, group=prompt,
    )  # fmt: skip
    return _truncate(sample, tok.max_length)


def parse_record(obj: Any, tok: PolicyEncoder) -> TrainSample | None:
    """One JSON object → a sample (``None`` for an unscored ScoredSample). Three formats: a
    ScoredSample (has ``status``), a :class:`ReferenceRecord` (no ``prediction``), else a
    :class:`TokenRecord`."""
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object, got {type(obj).__name__}")
    if "status" in obj:
        return from_scored_sample(ScoredSample.model_validate(obj), tok)
    if "prediction" not in obj and "reference_solution" in obj:
        return from_reference_record(ReferenceRecord.model_validate(obj), tok)
    return from_token_record(TokenRecord.model_validate(obj), tok)


def read_jsonl(path: str | Path, tok: PolicyEncoder) -> list[TrainSample]:
    """All trainable samples of a JSONL file; errors name the file, the line and the fix."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"train_file {str(path)!r} does not exist; give a JSONL file path")
    samples: list[TrainSample] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                sample = parse_record(json.loads(line), tok)
            except (json.JSONDecodeError, ValidationError, DataError) as exc:
                raise DataError(f"{path}:{lineno}: {exc}") from exc
            if sample is not None:
                samples.append(sample)
    if not samples:
        raise DataError(f"{path} holds no trainable (scored) record; check the file")
    return samples


# --- collation ----------------------------------------------------------------------------


def pad_rows(
    rows: Sequence[tuple[Sequence[int], Sequence[int], Sequence[float]]],
    length: int,
    pad_id: int,
    side: PaddingSide,
) -> SequenceBatch:
    """rows: (prompt ids, response ids, response values) → a padded :class:`SequenceBatch`."""
    n = len(rows)
    ids = torch.full((n, length), pad_id, dtype=torch.long)
    attn = torch.zeros((n, length), dtype=torch.long)
    mask = torch.zeros((n, length), dtype=torch.bool)
    values = torch.zeros((n, length), dtype=torch.float32)
    for i, (prompt, resp, vals) in enumerate(rows):
        total = len(prompt) + len(resp)
        start = length - total if side == "left" else 0
        p_end = start + len(prompt)
        ids[i, start:p_end] = torch.tensor(prompt, dtype=torch.long)
        ids[i, p_end : p_end + len(resp)] = torch.tensor(resp, dtype=torch.long)
        attn[i, start : start + total] = 1
        mask[i, p_end : p_end + len(resp)] = True
        values[i, p_end : p_end + len(resp)] = torch.tensor(vals, dtype=torch.float32)
    # Positions count real tokens only, so left padding gives the same logits as right.
    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
    return SequenceBatch(ids, attn, position_ids, mask, values)


def collate(samples: Sequence[TrainSample], pad_id: int, side: PaddingSide = "right") -> RlmecBatch:
    """Pad predictions and regular sequences to one common length (one forward pass)."""
    if not samples:
        raise DataError("cannot collate an empty micro-batch")
    length = max(
        len(s.prompt_ids) + max(len(s.prediction_ids), len(s.regular_ids)) for s in samples
    )
    pred = pad_rows(
        [(s.prompt_ids, s.prediction_ids, s.rewards) for s in samples], length, pad_id, side
    )
    reg = [(s.prompt_ids, s.regular_ids, s.imitation_weights) for s in samples]
    regular = pad_rows(reg, length, pad_id, side)
    ref = torch.zeros((len(samples), length), dtype=torch.float32)
    known = torch.tensor([s.ref_logprobs is not None for s in samples], dtype=torch.bool)
    for i, s in enumerate(samples):
        if s.ref_logprobs is not None:
            cols = pred.loss_mask[i].nonzero().squeeze(-1)
            ref[i, cols] = torch.tensor(s.ref_logprobs, dtype=torch.float32)
    correct = torch.tensor([bool(s.correct) for s in samples], dtype=torch.bool)
    advantages = torch.tensor([s.advantage for s in samples], dtype=torch.float32)
    credit = torch.tensor([s.partial_credit or 0.0 for s in samples], dtype=torch.float32)
    return RlmecBatch(pred, regular, ref, known, correct, advantages, credit)


def micro_batches(samples: Sequence[TrainSample], size: int) -> Iterator[list[TrainSample]]:
    for i in range(0, len(samples), size):
        yield list(samples[i : i + size])


def shuffled(samples: Sequence[T], seed: int, epoch: int) -> list[T]:
    """The epoch's order: the same on every rank and after a resume."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(samples), generator=g).tolist()
    return [samples[i] for i in order]
