"""Model files the images' non-root user can read (issue 27)."""

from __future__ import annotations

from pathlib import Path


def test_a_built_model_is_readable_by_other_users(tiny_model_dir: Path) -> None:
    # safetensors wrote model.safetensors 0600: uid 10001 in the images could not read it.
    modes = {p.name: p.stat().st_mode & 0o777 for p in tiny_model_dir.iterdir() if p.is_file()}
    assert "model.safetensors" in modes
    assert {name: mode & 0o044 for name, mode in modes.items()} == dict.fromkeys(modes, 0o044)
