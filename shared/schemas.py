"""Wire schemas shared by the services, workers, trainer and clients (pydantic v2).

Glossary (used everywhere): ``rewards`` are per-token RLMEC rewards (§3.1) of the prediction,
``imitation_weights`` per-token weights (§3.3) of the regular sequence. Token value lists always
cover the text's tokens followed by EOS, whose offsets are ``(len(text), len(text))``.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from rlmec.shared.prompts import TaskType

MAX_TEXT_CHARS = 100_000
MAX_BATCH = 1024
MAX_METADATA_BYTES = 65_536

# C0 controls other than tab, newline and carriage return, and lone UTF-16 surrogates (which
# JSON can carry but UTF-8 cannot encode) would break tokenizers far from the caller.
_BAD_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")


def check_text(value: str) -> str:
    bad = _BAD_CHARS.search(value)
    if bad is not None:
        raise ValueError(
            f"text contains the control or surrogate character U+{ord(bad.group()):04X} at "
            f"index {bad.start()}; remove it or send valid UTF-8 text"
        )
    return value


def replace_bad_chars(value: str) -> tuple[str, int]:
    """``value`` with every character :func:`check_text` refuses replaced by U+FFFD, and how
    many there were (a policy's own output, which must still be scored, not refused)."""
    return _BAD_CHARS.subn("\ufffd", value)


def _check_raw_text(value: Any) -> Any:
    """Runs before pydantic's own str validation, which rejects a lone surrogate with a
    message that names neither the character nor its index."""
    return check_text(value) if isinstance(value, str) else value


Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS), BeforeValidator(_check_raw_text)]
NonEmptyText = Annotated[
    str, Field(min_length=1, max_length=MAX_TEXT_CHARS), BeforeValidator(_check_raw_text)
]

# A log-probability: finite and at most 0 (NaN, ±Infinity or a positive value is a client bug
# that would otherwise surface only when the trainer reads the scored batch).
LogProb = Annotated[float, Field(le=0.0, allow_inf_nan=False)]


class StrictModel(BaseModel):
    """Request/response base: unknown fields are errors, so typos never pass silently."""

    model_config = ConfigDict(extra="forbid")


class ResponseModel(BaseModel):
    """What a service answers, as a client or a trainer reads it: unknown fields are ignored,
    because the service may be a minor version ahead, and the contract makes every change
    within a major version additive (docs/token-rewards-contract.md). Tolerant readers,
    strict writers: requests stay :class:`RequestModel`."""

    model_config = ConfigDict(extra="ignore")


class RequestModel(StrictModel):
    """What callers send: also no lax coercion, so ``false`` is not a 0 threshold, ``"0.3"``
    not a number and ``1`` not ``true`` (422 naming the field instead)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class RewardParams(RequestModel):
    """§3.1 reward shaping; defaults are the paper's."""

    threshold: float = Field(0.5, ge=0.0, le=1.0, description="p_t is compared with this.")
    floor: float = Field(-0.1, ge=-1.0, le=0.0, description="Lowest reward of a wrong answer.")
    cap: float = Field(0.5, ge=0.0, le=1.0, description="Highest reward of a correct answer.")
    edit_penalty: bool = Field(
        False,
        description="Wrong answers: also give the floor to every prediction token the GRM's "
        "own rewrite does not keep (its §3.3 edit script), not only to the tokens the GRM "
        "finds unlikely after the prediction's own prefix, which misses later tokens that "
        "repeat a slip (docs/method.md §3.1).",
    )
    check_equations: bool = Field(
        True,
        description="Math: a rewrite that reaches the answer through a false equation (a "
        "pure arithmetic left side that is not its right side, `62 - 47 = 25`) is unscored with "
        "the reason rewrite_false_equation, so a trainer never imitates that line.",
    )


class Sample(RequestModel):
    """One policy prediction to score."""

    id: str | None = Field(None, max_length=256, description="Caller's sample id, echoed back.")
    question: NonEmptyText = Field(description="The problem (QA: with its options).")
    reference_solution: NonEmptyText = Field(description="A correct worked solution.")
    reference_answer: str | None = Field(
        None,
        max_length=10_000,
        description="Final answer; extracted from reference_solution when absent.",
    )
    prediction: Text = Field(description="The policy's solution. Empty means wrong.")
    task: TaskType = Field("math", description="'math' or 'qa' (decides answer checking).")
    rewrite: Text | None = Field(
        None,
        description="A rewrite from elsewhere (e.g. a teacher). When given, the GRM does not "
        "rewrite; the rewrite must still reach the reference answer.",
    )
    prompt: Text | None = Field(
        None,
        description="The exact policy prompt the prediction came from (online training); "
        "default: the §2.3 policy prompt built from question and task.",
    )
    behaviour_logprobs: list[LogProb] | None = Field(
        None,
        max_length=65_536,
        description="Log-probs of the prediction's policy tokens (then EOS) under the policy "
        "that generated it; the online trainer's reference log-probs (§3.2).",
    )
    metadata: dict[str, Any] | None = Field(
        None, description=f"Opaque, echoed back; at most {MAX_METADATA_BYTES} bytes as JSON."
    )

    @field_validator("metadata")
    @classmethod
    def _small_metadata(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        # Metadata travels through the queue and the cache: unbounded, one team could fill the
        # Redis every team shares with it.
        if value is not None:
            size = len(json.dumps(value, ensure_ascii=False, default=str).encode())
            if size > MAX_METADATA_BYTES:
                raise ValueError(
                    f"metadata is {size} bytes as JSON, over {MAX_METADATA_BYTES}; keep ids and "
                    "small tags there, not payloads"
                )
        return value


class Span(ResponseModel):
    start: int = Field(ge=0, description="Character offset, inclusive.")
    end: int = Field(ge=0, description="Character offset, exclusive.")
    value: float


class SpanValues(ResponseModel):
    """Values over character spans of one text, tokenizer-free (§6); ``eos`` is the value of
    the end-of-sequence token, which has no characters."""

    spans: list[Span]
    eos: float


class TokenValues(ResponseModel):
    """Per-token values over one tokenizer; the last entry is EOS."""

    token_ids: list[int]
    tokens: list[str]
    offsets: list[tuple[int, int]]
    values: list[float]

    @model_validator(mode="after")
    def _same_lengths(self) -> TokenValues:
        n = len(self.token_ids)
        if not len(self.tokens) == len(self.offsets) == len(self.values) == n:
            raise ValueError("token_ids, tokens, offsets and values must have the same length")
        return self


class GrmInfo(ResponseModel):
    model_id: str
    revision: str
    tokenizer: str | None = None


class PolicyProjection(ResponseModel):
    """Token values projected onto a registered policy tokenizer (ready for training)."""

    tokenizer: str
    rewards: TokenValues
    imitation_weights: TokenValues


UnscoredReason = Literal[
    "rewrite_incorrect",
    "rewrite_false_equation",
    "grm_out_of_range",
    "grm_error",
    "no_reference_answer",
    "answer_check_over_budget",
    "grm_input_too_long",
    "chat_markup",
]


class ScoredSample(ResponseModel):
    """RLMEC signals for one sample (§3). ``status == "unscored"`` carries a ``reason`` and no
    token values: the paper drops such samples; we report them."""

    id: str | None = None
    # A newer service's new status or reason is kept as a string (known values first), and a
    # consumer treats anything but "scored" as a sample to drop (the contract's rule).
    status: Literal["scored", "unscored"] | str
    task: TaskType = "math"
    question: str
    prompt: str | None = Field(None, description="Policy prompt, echoed from the sample.")
    prediction: str
    reason: UnscoredReason | str | None = None
    message: str | None = Field(None, description="Human-readable detail of the reason.")
    correct: bool
    predicted_answer: str | None
    reference_answer: str | None
    reference_solution: str | None = Field(
        None, description="Echoed from the sample (the `sft` baseline trains on it)."
    )
    located_step: int | None = None
    rewrite: str | None = None
    regular_sequence: str | None = Field(
        None, description="Imitation target: the rewrite (wrong) or the prediction (correct)."
    )
    rewards: TokenValues | None = Field(None, description="§3.1 over GRM tokens + EOS.")
    imitation_weights: TokenValues | None = Field(None, description="§3.3 over GRM tokens + EOS.")
    reward_spans: SpanValues | None = None
    edit_spans: SpanValues | None = None
    policy: PolicyProjection | None = None
    grm: GrmInfo | None = None
    params: RewardParams = Field(default_factory=RewardParams)
    timings: dict[str, float] = Field(default_factory=dict, description="Seconds by stage.")
    cached: bool = False
    behaviour_logprobs: list[float] | None = None
    metadata: dict[str, Any] | None = None

    @field_validator("params", mode="before")
    @classmethod
    def _known_params(cls, value: Any) -> Any:
        """The echoed params as this version knows them: a newer service echoes params this
        reader has no field for (RewardParams itself stays strict for requests)."""
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if k in RewardParams.model_fields}
        return value


class TokenRewardsRequest(RequestModel):
    samples: list[Sample] = Field(min_length=1, max_length=MAX_BATCH)
    params: RewardParams = Field(default_factory=RewardParams)
    policy_tokenizer: str | None = Field(
        None, max_length=256, description="Name of a policy tokenizer registered by the operator."
    )


class TokenRewardsResponse(ResponseModel):
    results: list[ScoredSample]
    grm: GrmInfo


class UsageResponse(ResponseModel):
    """A team's usage counters (``GET /v1/usage``): requests, samples, scored, unscored,
    cache hits, GRM errors, rate-limited requests."""

    team: str
    grm_adapter: str | None = Field(
        None,
        description="The GRM adapter every call of the team runs on (null: the base model), so "
        "these counters are that adapter's use by the team.",
    )
    usage: dict[str, int]
