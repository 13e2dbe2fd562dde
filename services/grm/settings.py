"""Settings of the GRM service: environment variables ``RLMEC_GRM_*`` (or CLI flags)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from rlmec.inference.settings import DType, EngineName, EngineSettings
from rlmec.services.http_settings import HttpBounds

__all__ = ["DType", "EngineName", "GrmSettings", "get_settings"]

# Measured on real wrong samples with the trained GRM, greedy, float32, 2 CPU cores: vllm 2.78x
# rewrite tokens/s at batch 1, 1.53x at 8, 1.15x at 32; hf 1.79x at batch 1 (it speculates
# for a batch of one sequence only). remote: whatever the upstream server runs.
SPECULATIVE_DEFAULTS = {"vllm": 8, "hf": 8}


class GrmSettings(EngineSettings, HttpBounds):
    """Every knob of ``rlmec grm serve``: the engine's (``EngineSettings``) plus the HTTP
    service's; ``model`` is required and always a local directory."""

    model_config = SettingsConfigDict(env_prefix="RLMEC_GRM_", extra="forbid")

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
    admin_token_file: Path | None = Field(
        None,
        description="A secret file; with it, POST /admin/adapters and DELETE "
        "/admin/adapters/NAME load and unload LoRA adapters at runtime (Authorization: Bearer "
        "the token). Without it the admin routes answer 404.",
    )
    host: str = Field("127.0.0.1", description="Bind address.")
    port: int = Field(8001, ge=1, le=65535, description="Bind port.")

    @model_validator(mode="after")
    def _speculate_by_default(self) -> GrmSettings:
        """Rewrites copy most of the prediction, which is in the GRM's prompt: prompt-lookup
        speculation is on by default where BENCHMARKS.md (section ``speculative``) measured it
        faster. A value given by flag or environment, 0 included, wins."""
        if "speculative_tokens" not in self.model_fields_set:
            self.speculative_tokens = SPECULATIVE_DEFAULTS.get(self.engine, 0)
        return self


def get_settings(**overrides: Any) -> GrmSettings:
    """Settings from ``RLMEC_GRM_*``; keyword overrides (CLI flags) win."""
    return GrmSettings(**{k: v for k, v in overrides.items() if v is not None})
