"""Wire schemas of the reward service beyond ``shared/schemas.py``: the OpenRLHF remote
reward-model protocol (``/get_reward``, see ``docs/interop.md``) and usage."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rlmec.shared.schemas import MAX_BATCH, StrictModel, UsageResponse

__all__ = ["GetRewardRequest", "GetRewardResponse", "Label", "ReadyResponse", "UsageResponse"]


# OpenRLHF posts whole rollout batches in its 2025 protocol (one request per reward server);
# bigger than our own API's batches, they are scored in chunks of MAX_BATCH.
MAX_OPENRLHF_BATCH = 16 * MAX_BATCH

Label = str | int | float | None


class GetRewardRequest(BaseModel):
    """OpenRLHF's body. Unknown fields are ignored, unlike our own API: OpenRLHF versions add
    fields (and a team cannot change what its framework sends). Only the shape is checked here;
    each query's own problems (control characters, a prompt it does not contain, a missing or
    odd label, an oversized text) make that query unscored, not the request a 422."""

    model_config = ConfigDict(extra="ignore")

    query: list[str] = Field(
        max_length=MAX_OPENRLHF_BATCH, description="Prompt + response as the policy rendered them."
    )
    prompts: list[str] | None = Field(
        None,
        max_length=MAX_OPENRLHF_BATCH,
        description="The prompts; response = what follows the prompt in the query.",
    )
    labels: list[Label] | None = Field(
        None,
        max_length=MAX_OPENRLHF_BATCH,
        description="Reference answers (--data.label_key); numbers are read as text.",
    )

    @model_validator(mode="after")
    def _lengths(self) -> GetRewardRequest:
        if self.query and self.labels is None:
            raise ValueError(
                "labels is missing: RLMEC judges each response against its reference answer; "
                "send it with OpenRLHF's --data.label_key (the dataset column holding the answer)"
            )
        for name in ("prompts", "labels"):
            values = getattr(self, name)
            if values is not None and len(values) != len(self.query):
                raise ValueError(
                    f"{name} has {len(values)} entries but query has {len(self.query)}; send "
                    "one per query"
                )
        return self


class GetRewardResponse(StrictModel):
    rewards: list[float] = Field(description="1.0 when the final answer is correct, else 0.0.")
    scores: list[float] = Field(description="Same as rewards, in [0, 1].")
    extra_logs: dict[str, list[float]] = Field(description="RLMEC summaries, one per query.")


class ReadyResponse(StrictModel):
    status: str
    checks: dict[str, str]
