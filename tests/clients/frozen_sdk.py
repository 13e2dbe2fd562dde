"""The response models of the oldest supported SDK, contract 1.3 (the first tolerant reader),
frozen: a copy, not an import, so that the day the service's models change, the service's
tests still parse its responses with what an un-upgraded team runs (tests/services/reward/
test_contract.py). Do not edit to follow today's schemas; add a newer frozen copy instead
when the oldest supported version moves."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

VERSION = "1.3"


class _Read(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Span(_Read):
    start: int = Field(ge=0)
    end: int = Field(ge=0)
    value: float


class SpanValues(_Read):
    spans: list[Span]
    eos: float


class TokenValues(_Read):
    token_ids: list[int]
    tokens: list[str]
    offsets: list[tuple[int, int]]
    values: list[float]


class GrmInfo(_Read):
    model_id: str
    revision: str
    tokenizer: str | None = None


class PolicyProjection(_Read):
    tokenizer: str
    rewards: TokenValues
    imitation_weights: TokenValues


class RewardParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    threshold: float = 0.5
    floor: float = -0.1
    cap: float = 0.5
    edit_penalty: bool = False
    check_equations: bool = True


class ScoredSample(_Read):
    id: str | None = None
    status: Literal["scored", "unscored"] | str
    task: Literal["math", "qa"] = "math"
    question: str
    prompt: str | None = None
    prediction: str
    reason: str | None = None
    message: str | None = None
    correct: bool
    predicted_answer: str | None
    reference_answer: str | None
    reference_solution: str | None = None
    located_step: int | None = None
    rewrite: str | None = None
    regular_sequence: str | None = None
    rewards: TokenValues | None = None
    imitation_weights: TokenValues | None = None
    reward_spans: SpanValues | None = None
    edit_spans: SpanValues | None = None
    policy: PolicyProjection | None = None
    grm: GrmInfo | None = None
    params: RewardParams = Field(default_factory=RewardParams)
    timings: dict[str, float] = Field(default_factory=dict)
    cached: bool = False
    behaviour_logprobs: list[float] | None = None
    metadata: dict[str, Any] | None = None

    @field_validator("params", mode="before")
    @classmethod
    def _known_params(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if k in RewardParams.model_fields}
        return value


class TokenRewardsResponse(_Read):
    results: list[ScoredSample]
    grm: GrmInfo
