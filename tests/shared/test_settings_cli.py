"""Flags generated from a settings model: one name, one default, the field's own help and
choices; and old spellings that keep working with a deprecation message."""

from __future__ import annotations

import argparse
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from rlmec.shared.settings_cli import add_setting_flags, deprecated_alias, deprecated_flags


class Knobs(BaseModel):
    model: str = Field(description="Model directory.")
    engine: Literal["hf", "vllm"] = Field("hf", description="The engine.")
    max_model_len: int | None = Field(None, description="Context limit.")
    kv_cache_gib: float = Field(1.0, description="KV cache.")
    upstreams: list[str] = Field(default_factory=list, description="Base URLs.")
    allow_anonymous: bool = Field(False, description="No key needed.")


def parser(**kwargs: object) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rlmec x")
    add_setting_flags(p, Knobs, list(Knobs.model_fields), **kwargs)  # type: ignore[arg-type]
    return p


def test_flags_take_the_fields_names_types_choices_and_defaults() -> None:
    p = parser(defaults={"engine": "vllm"})
    args = p.parse_args(["--model", "m", "--max-model-len", "2048", "--upstream", "a",
                         "--upstream", "b", "--allow-anonymous"])  # fmt: skip
    assert vars(args) == {"model": "m", "engine": "vllm", "max_model_len": 2048,
                          "kv_cache_gib": 1.0, "upstreams": ["a", "b"],
                          "allow_anonymous": True}  # fmt: skip
    text = p.format_help()
    assert "The engine (default: vllm)" in text and "KV cache (default: 1.0)" in text
    assert "Model directory (required)" in text and "repeat the flag for several" in text
    with pytest.raises(SystemExit):
        p.parse_args(["--engine", "tpu"])


def test_with_an_env_prefix_unset_flags_are_none_and_help_names_the_variable() -> None:
    p = parser(env_prefix="RLMEC_X_")
    assert vars(p.parse_args([])) == dict.fromkeys(Knobs.model_fields)
    assert "RLMEC_X_KV_CACHE_GIB" in p.format_help()


def test_an_old_spelling_works_and_says_what_replaced_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    p = parser()
    deprecated_alias(p, "--base-url", "--upstream", append=True)
    args = p.parse_args(["--base-url", "a", "--upstream", "b"])
    assert args.upstreams == ["a", "b"]
    assert "--base-url is deprecated" in capsys.readouterr().err
    assert deprecated_flags(p) == {"--base-url"}
    assert "--base-url" not in p.format_help()
    assert "--base-url" not in vars(p.parse_args([]))
