"""LoRA GRMs: ``rlmec grm train`` with a ``lora`` section trains an adapter, not the model.

One GRM server can then serve a base model and an adapter per team (issue 28): an adapter of
SmolLM2-135M is a few MB where a fine-tuned copy is 540 MB. The adapter goes through the same
DeepSpeed recipe and checkpoints as full fine-tuning (only its parameters train, and only they
are in the optimizer); ``final/`` holds ``adapter_model.safetensors``, ``adapter_config.json``,
the tokenizer and ``rlmec-adapter.json`` (:mod:`rlmec.shared.adapters`: base model hash, data,
recipe, commit). ``merged_export`` also writes ``final-merged/``, a plain model directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.distributed as dist
from pydantic import Field

from rlmec.shared.adapters import (
    AdapterProvenance,
    current_commit,
    file_sha256,
    model_fingerprint,
    write_provenance,
)
from rlmec.trainer.config import _Section

# Every projection of a Llama-style block: attention and MLP (names as in transformers).
LLAMA_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class LoraConfig(_Section):
    r: int = Field(16, ge=1, le=1024, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA alpha (the update is scaled by alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] = Field(
        default_factory=lambda: list(LLAMA_PROJECTIONS),
        min_length=1,
        description="Module names that get an adapter (Llama-style projections by default).",
    )
    merged_export: bool = Field(
        False, description="Also write final-merged/: the base with the adapter merged in."
    )


def add_adapter(model: Any, cfg: LoraConfig) -> Any:
    """``model`` with a trainable LoRA adapter; its own weights frozen (peft)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    peft_config = PeftLoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
        target_modules=cfg.target_modules, task_type="CAUSAL_LM",
    )  # fmt: skip
    model = get_peft_model(model, peft_config)
    # With gradient checkpointing and frozen embeddings, nothing before the first adapter
    # would need a gradient, and checkpointed blocks would then get none.
    model.enable_input_require_grads()
    return model


def save_adapter(
    engine: Any, tokenizer: Any, out_dir: str | Path, cfg: LoraConfig, provenance: AdapterProvenance
) -> Path:
    """The adapter (only its weights), the tokenizer and its provenance; the merged model too
    with ``merged_export``. Rank 0 writes; every rank waits for it."""
    out = Path(out_dir)
    if dist.get_rank() == 0:
        module = engine.module
        module.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        write_provenance(out, provenance)
        if cfg.merged_export:
            merged = out.with_name(out.name + "-merged")
            module.merge_and_unload().save_pretrained(merged, safe_serialization=True)
            tokenizer.save_pretrained(merged)
    dist.barrier()
    return out


def provenance(
    model_dir: str, data_file: str, recipe: dict[str, Any], steps: int
) -> AdapterProvenance:
    """What an adapter trained on ``model_dir`` with ``data_file`` was made from."""
    return AdapterProvenance(
        base_model=Path(model_dir).name, base_sha256=model_fingerprint(model_dir),
        data_file=str(data_file), data_sha256=file_sha256(data_file), recipe=recipe,
        commit=current_commit(Path(__file__).parent), steps=steps,
    )  # fmt: skip
