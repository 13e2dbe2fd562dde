"""A GRM adapter's provenance: what it was trained on and from, checked before it is served.

A LoRA adapter only means something on the base model it was trained on: served on another it
gives rewards nobody trained. ``rlmec grm train`` with a ``lora`` section writes
``rlmec-adapter.json`` beside ``adapter_model.safetensors``: the base model's name and a hash of
its weights, the training data's hash, the recipe and the commit. :func:`check_base` refuses
an adapter whose base hash is not the served model's, naming both.

No heavy imports: the GRM service and the CLI read this without torch.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

from pydantic import Field

from rlmec.shared.schemas import StrictModel

PROVENANCE_FILE = "rlmec-adapter.json"
# What identifies a base model's weights: its config and every weight file, not the tokenizer
# files (re-saving a tokenizer changes them, not the model).
_WEIGHT_GLOBS = ("config.json", "*.safetensors", "*.bin")


class AdapterProvenance(StrictModel):
    base_model: str = Field(description="The base model directory's name when trained.")
    base_sha256: str = Field(description="model_fingerprint() of the base model.")
    data_file: str = Field(description="The training examples (rlmec data grm-sft output).")
    data_sha256: str
    recipe: dict[str, Any] = Field(description="The training config as it ran.")
    commit: str | None = Field(None, description="The rlmec commit that trained it, if known.")
    steps: int = Field(ge=0, description="Optimizer steps trained.")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_fingerprint(model_dir: str | Path) -> str:
    """A sha256 over the base model's config and weight files (names and contents)."""
    root = Path(model_dir).expanduser()
    files = sorted({p for pattern in _WEIGHT_GLOBS for p in root.glob(pattern) if p.is_file()})
    if not any(p.name != "config.json" for p in files):
        raise ValueError(f"{root} holds no model weights (*.safetensors or *.bin)")
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}:{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def current_commit(cwd: str | Path | None = None) -> str | None:
    """The git commit of the checkout ``cwd`` is in, or None outside one."""
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                              text=True, timeout=10, check=True)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def write_provenance(adapter_dir: str | Path, provenance: AdapterProvenance) -> Path:
    path = Path(adapter_dir) / PROVENANCE_FILE
    path.write_text(json.dumps(provenance.model_dump(), indent=1) + "\n")
    return path


def read_provenance(adapter_dir: str | Path) -> AdapterProvenance:
    path = Path(adapter_dir) / PROVENANCE_FILE
    try:
        return AdapterProvenance.model_validate_json(path.read_text())
    except OSError as exc:
        raise ValueError(
            f"{path} cannot be read ({exc.strerror or exc}): an adapter without its provenance "
            "cannot be checked against the base model; train it with `rlmec grm train`"
        ) from None
    except ValueError as exc:
        raise ValueError(f"{path} is not an adapter provenance: {exc}") from None


def check_base(adapter_dir: str | Path, base_sha256: str) -> AdapterProvenance:
    """The adapter's provenance; ValueError when it was trained on another base model."""
    provenance = read_provenance(adapter_dir)
    if provenance.base_sha256 != base_sha256:
        raise ValueError(
            f"adapter {str(adapter_dir)!r} was trained on base model {provenance.base_model!r} "
            f"(weights sha256 {provenance.base_sha256[:12]}...), not on the served one "
            f"({base_sha256[:12]}...): serve its own base model, or train it on this one"
        )
    return provenance
