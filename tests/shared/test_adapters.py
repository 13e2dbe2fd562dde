"""Adapter provenance: a fingerprint of the base weights, read back and checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlmec.shared.adapters import (
    AdapterProvenance,
    check_base,
    model_fingerprint,
    read_provenance,
    write_provenance,
)


def test_the_fingerprint_follows_the_weights_not_the_tokenizer(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "tokenizer.json").write_text("a")
    first = model_fingerprint(tmp_path)
    (tmp_path / "tokenizer.json").write_text("b")
    assert model_fingerprint(tmp_path) == first
    (tmp_path / "model.safetensors").write_bytes(b"other weights")
    assert model_fingerprint(tmp_path) != first


def test_a_directory_without_weights_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="holds no model weights"):
        model_fingerprint(tmp_path)


def test_provenance_round_trip_and_check(tmp_path: Path) -> None:
    made = AdapterProvenance(
        base_model="m", base_sha256="a" * 64, data_file="d.jsonl", data_sha256="b" * 64,
        recipe={"lr": 1e-4}, commit=None, steps=3,
    )  # fmt: skip
    write_provenance(tmp_path, made)
    assert read_provenance(tmp_path) == made
    assert check_base(tmp_path, "a" * 64) == made
    with pytest.raises(ValueError, match="trained on base model 'm'"):
        check_base(tmp_path, "c" * 64)
    with pytest.raises(ValueError, match="cannot be read"):
        read_provenance(tmp_path / "missing")
