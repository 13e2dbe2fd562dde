"""Wire schemas of the reward service beyond ``shared/schemas.py``: the OpenRLHF remote
reward-model protocol (``/get_reward``, see ``docs/interop.md``) and usage."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rlmec.shared.schemas import MAX_BATCH, MAX_TEXT_CHARS, StrictModel, check_text


def _check_texts(values: list[str] | None, name: str) -> None:
    for i, value in enumerate(values or []):
        if len(value) > MAX_TEXT_CHARS:
            raise ValueError(
                f"{name}[{i}] has {len(value)} characters, over {MAX_TEXT_CHARS}; shorten it"
            )
        try:
            check_text(value)
        except ValueError as exc:
            raise ValueError(f"{name}[{i}]: {exc}") from None


class GetRewardRequest(BaseModel):
    """OpenRLHF's body. Unknown fields are ignored, unlike our own API: OpenRLHF versions add
    fields (and a team cannot change what its framework sends)."""

    model_config = ConfigDict(extra="ignore")

    query: list[str] = Field(
        max_length=MAX_BATCH, description="Prompt + response as the policy rendered them."
    )
    prompts: list[str] | None = Field(
        None, max_length=MAX_BATCH, description="The prompts; response = query[len(prompt):]."
    )
    labels: list[str] | None = Field(
        None, max_length=MAX_BATCH, description="Reference answers (--data.label_key)."
    )

    @model_validator(mode="after")
    def _lengths(self) -> GetRewardRequest:
        for name in ("prompts", "labels"):
            values = getattr(self, name)
            if values is not None and len(values) != len(self.query):
                raise ValueError(
                    f"{name} has {len(values)} entries but query has {len(self.query)}; send "
                    "one per query"
                )
            _check_texts(values, name)
        _check_texts(self.query, "query")
        for i, (query, prompt) in enumerate(zip(self.query, self.prompts or [], strict=False)):
            if not query.startswith(prompt):
                raise ValueError(
                    f"query[{i}] does not start with prompts[{i}]; the response is "
                    "query[len(prompt):], so send the prompt exactly as rendered in the query"
                )
        return self


class GetRewardResponse(StrictModel):
    rewards: list[float] = Field(description="1.0 when the final answer is correct, else 0.0.")
    scores: list[float] = Field(description="Same as rewards, in [0, 1].")
    extra_logs: dict[str, list[float]] = Field(description="RLMEC summaries, one per query.")


class UsageResponse(StrictModel):
    team: str
    usage: dict[str, int]


class ReadyResponse(StrictModel):
    status: str
    checks: dict[str, str]
