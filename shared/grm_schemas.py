"""Wire schemas of the GRM service (``/v1/locate``, ``/v1/rewrite``, ``/v1/score``,
``/v1/tokenize``, ``/v1/models``). Shared so the reward service and the SDK speak it without
importing the service."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from rlmec.shared.prompts import LocateStatus
from rlmec.shared.schemas import MAX_BATCH, NonEmptyText, RequestModel, ResponseModel, Text

# Who a call is for (the reward service's team) and that team's weight: the GRM orders its
# engine's work between tenants by them (rlmec.inference.tenants). They grant nothing.
TENANT_HEADER = "x-rlmec-tenant"
TENANT_WEIGHT_HEADER = "x-rlmec-tenant-weight"


# Which GRM a call is for: the base model's id or a LoRA adapter's (GET /v1/models lists them);
# absent: the base model. OpenAI-style, as vLLM's own server names LoRA adapters.
ModelName = Annotated[str, Field(max_length=64, description="The base model or an adapter.")]


class GrmSampleInput(RequestModel):
    question: NonEmptyText
    reference_solution: NonEmptyText
    prediction: Text


class LocateRequest(RequestModel):
    model: ModelName | None = None
    samples: list[GrmSampleInput] = Field(min_length=1, max_length=MAX_BATCH)
    max_new_tokens: int = Field(32, ge=1, le=256, description="Budget of the locate reply.")


class LocateResult(ResponseModel):
    status: LocateStatus
    step: int | None = Field(description="First wrong step (0-based) when status=located.")
    raw: str = Field(description="The GRM's reply, verbatim.")
    message: str = ""
    prompt_tokens: int
    completion_tokens: int


class LocateResponse(ResponseModel):
    model: str
    results: list[LocateResult]


class RewriteInput(GrmSampleInput):
    step: int | None = Field(
        None, ge=0, description="First wrong step, if known: skips the locate subtask."
    )


class RewriteRequest(RequestModel):
    model: ModelName | None = None
    samples: list[RewriteInput] = Field(min_length=1, max_length=MAX_BATCH)
    max_new_tokens: int = Field(512, ge=1, le=8192, description="Budget of the rewrite.")
    locate_max_new_tokens: int = Field(32, ge=1, le=256)


RewriteStatus = Literal["rewritten", "out_of_range"]


class RewriteResult(ResponseModel):
    """``located_step`` is the step the rewrite starts from; when locating gave no step
    (``no_error``/``unparsed``) the GRM rewrites from step 0. ``out_of_range`` carries no
    rewrite: the GRM named a step the prediction does not have."""

    status: RewriteStatus
    located_step: int | None
    locate: LocateResult | None = Field(description="Absent when the caller gave the step.")
    prefix: str | None = None
    continuation: str | None = Field(None, description="The GRM's raw continuation.")
    rewrite: str | None = None
    message: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0


class RewriteResponse(ResponseModel):
    model: str
    results: list[RewriteResult]


class ScoreItem(RequestModel):
    prompt: Text
    output: Text


class ScoreRequest(RequestModel):
    """``mode=raw``: log-probs of each ``output`` after its ``prompt``. ``mode=rlmec``: the
    service builds the §3.1 scoring prompt from each sample and scores the prediction."""

    mode: Literal["raw", "rlmec"] = "raw"
    model: ModelName | None = None
    items: list[ScoreItem] | None = Field(None, max_length=MAX_BATCH)
    samples: list[GrmSampleInput] | None = Field(None, max_length=MAX_BATCH)
    add_eos: bool = Field(True, description="Append EOS to the output and score it too.")

    @model_validator(mode="after")
    def _inputs_match_mode(self) -> ScoreRequest:
        want, other = ("items", "samples") if self.mode == "raw" else ("samples", "items")
        if not getattr(self, want):
            raise ValueError(f"mode={self.mode!r} needs a non-empty '{want}' list")
        if getattr(self, other):
            raise ValueError(f"mode={self.mode!r} takes '{want}', not '{other}'")
        return self


class ScoreResult(ResponseModel):
    """Per output token (EOS last when added): id, string, character offsets in the output,
    teacher-forced log-prob."""

    token_ids: list[int]
    tokens: list[str]
    offsets: list[tuple[int, int]]
    logprobs: list[float]
    prompt_tokens: int


class ScoreResponse(ResponseModel):
    model: str
    results: list[ScoreResult]


class TokenizeRequest(RequestModel):
    """Output tokenization only, as ``/v1/score`` does it; no engine work."""

    texts: list[Text] = Field(
        min_length=1,
        max_length=MAX_BATCH,
        description="Texts to tokenize as /v1/score tokenizes an output (no prompt needed).",
    )
    add_eos: bool = Field(True, description="Append EOS, as /v1/score does with add_eos.")


class TokenizeResult(ResponseModel):
    """Per token (EOS last when added): id, string, character offsets in the text; the same
    values ``/v1/score`` returns for this text as an output."""

    token_ids: list[int]
    tokens: list[str]
    offsets: list[tuple[int, int]]


class TokenizeResponse(ResponseModel):
    model: str
    results: list[TokenizeResult]


class ModelCard(ResponseModel):
    id: str
    object: Literal["model"] = "model"
    revision: str = Field(description="Hash of the model directory's weights and config.")
    tokenizer: str
    max_model_len: int
    engine: str
    eos_token: str
    eos_token_id: int
    parent: str | None = Field(None, description="For a LoRA adapter: the base model's id.")


class ModelList(ResponseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# An adapter's name: the model id it is served as (the service and the SDK check the same).
ADAPTER_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"


class LoadAdapterRequest(RequestModel):
    """``POST /admin/adapters``: load a LoRA adapter at runtime (issue 28)."""

    name: str = Field(pattern=ADAPTER_NAME_PATTERN, description="The model id it is served as.")
    path: str = Field(max_length=4096, description="Its directory on the GRM's machine.")


class AdapterResponse(ResponseModel):
    name: str
    revision: str | None = None
    status: str
