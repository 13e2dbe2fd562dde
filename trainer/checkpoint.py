"""Checkpoints (DeepSpeed engine state + the trainer's own position) and the final
``save_pretrained`` directory that transformers and vLLM load."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger("rlmec.trainer")

TAG_PREFIX = "step-"


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def save_checkpoint(
    engine: Any, output_dir: str | Path, step: int, trainer_state: dict[str, Any], *, keep: int
) -> Path:
    """Model, optimizer and scheduler (DeepSpeed, every rank writes its shards), plus
    ``trainer_state`` (step, data/stream position) as DeepSpeed client state; keeps the
    newest ``keep`` checkpoints."""
    root = checkpoint_root(output_dir)
    tag = f"{TAG_PREFIX}{step}"
    # ``latest`` is written by us, atomically and only once every rank's shards are on disk:
    # a kill mid-save leaves the previous checkpoint as the one to resume from.
    engine.save_checkpoint(
        str(root), tag=tag, client_state={"rlmec": trainer_state}, save_latest=False
    )
    dist.barrier()
    if dist.get_rank() == 0:
        (root / tag / "rlmec_state.json").write_text(json.dumps(trainer_state, indent=1))
        tmp = root / "latest.tmp"
        tmp.write_text(tag)
        os.replace(tmp, root / "latest")
        tags = sorted(
            (p for p in root.glob(f"{TAG_PREFIX}*") if p.is_dir()),
            key=lambda p: int(p.name[len(TAG_PREFIX) :]),
        )
        for old in tags[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return root / tag


def load_checkpoint(engine: Any, output_dir: str | Path) -> dict[str, Any] | None:
    """Restore the newest checkpoint of ``output_dir``; returns the trainer state or ``None``
    when there is none."""
    root = checkpoint_root(output_dir)
    if not (root / "latest").is_file():
        return None
    path, client_state = engine.load_checkpoint(str(root))
    if path is None:
        raise RuntimeError(
            f"{root}/latest names a checkpoint that could not be loaded; delete {root} to start "
            "over or set resume: false"
        )
    state: dict[str, Any] = client_state["rlmec"]
    log.info("resumed from %s at step %d", path, state["step"])
    return state


def _full_state_dict(engine: Any, zero_stage: int) -> dict[str, torch.Tensor] | None:
    """The whole model's weights on rank 0 (``None`` elsewhere); ZeRO-3 shards are gathered."""
    module = engine.module
    if zero_stage < 3:
        return (
            {k: v.detach().cpu() for k, v in module.state_dict().items()}
            if dist.get_rank() == 0
            else None
        )
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
        if dist.get_rank() == 0:
            return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    return None


def save_final(engine: Any, tokenizer: Any, out_dir: str | Path, *, zero_stage: int) -> Path:
    """A plain HF directory (safetensors + config + tokenizer) of the trained policy."""
    out = Path(out_dir)
    state = _full_state_dict(engine, zero_stage)
    if dist.get_rank() == 0:
        module = engine.module
        module.config.use_cache = True  # gradient checkpointing turned it off for training
        module.save_pretrained(out, state_dict=state, safe_serialization=True)
        tokenizer.save_pretrained(out)
    dist.barrier()
    return out
