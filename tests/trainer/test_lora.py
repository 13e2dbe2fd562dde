"""LoRA GRMs (issue 28, item 1): ``rlmec grm train`` with a ``lora`` section trains an adapter
on the tiny model through the same recipe, resumes, and ``final/`` holds only the adapter and
its provenance; the adapter on its base equals the merged export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rlmec.shared.adapters import check_base, model_fingerprint, read_provenance
from rlmec.trainer.sft import SftConfig, train_grm
from tests.trainer.test_sft import _config, _examples, _target_logprob

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "merged_export": True}


def _lora_config(model: Path, out: Path, train_file: Path, **optim: object) -> SftConfig:
    cfg = _config(model, out, train_file, **optim)
    return SftConfig.model_validate({**cfg.model_dump(), "lora": LORA})


def test_an_adapter_trains_resumes_and_is_saved_alone(tiny_model_dir: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    train_file = _examples(tmp_path / "sft.jsonl")
    cfg = _lora_config(tiny_model_dir, tmp_path / "run", train_file, epochs=3, max_steps=6)
    first = train_grm(
        cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"max_steps": 3})})
    )
    assert first.steps == 3
    result = train_grm(cfg)  # resumes from the checkpoint at step 3
    assert result.steps == 6 and [m.step for m in result.history] == [4, 5, 6]
    final = result.final_dir
    assert final is not None
    names = {p.name for p in final.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "rlmec-adapter.json"} <= names
    assert "model.safetensors" not in names  # the base is not copied
    base_bytes = (tiny_model_dir / "model.safetensors").stat().st_size
    assert (final / "adapter_model.safetensors").stat().st_size < base_bytes / 4

    made = read_provenance(final)
    assert made.base_sha256 == model_fingerprint(tiny_model_dir) and made.steps == 6
    assert made.recipe["lora"]["r"] == 4 and len(made.data_sha256) == 64
    check_base(final, model_fingerprint(tiny_model_dir))

    # The adapter learnt (the merged export is the base with it merged in) ...
    merged = final.with_name("final-merged")
    assert _target_logprob(merged, train_file) > _target_logprob(tiny_model_dir, train_file) + 0.3
    # ... and the adapter on its base computes what the merged model computes.
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    adapted = PeftModel.from_pretrained(base, final).eval()
    plain = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    ids = torch.tensor([[5, 17, 42, 99, 3]])
    with torch.no_grad():
        torch.testing.assert_close(adapted(ids).logits, plain(ids).logits, atol=1e-4, rtol=1e-4)


def test_an_adapter_of_another_base_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    train_file = _examples(tmp_path / "sft.jsonl", n=4)
    result = train_grm(_lora_config(tiny_model_dir, tmp_path / "run", train_file, max_steps=1))
    assert result.final_dir is not None
    with pytest.raises(ValueError, match=r"was trained on base model .* not on the served one"):
        check_base(result.final_dir, "0" * 64)


def test_lora_with_zero3_is_a_clear_config_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg = _lora_config(tiny_model_dir, tmp_path / "run", tmp_path / "x.jsonl")
    with pytest.raises(ValueError, match=r"lora with engine\.zero_stage 3 is not supported"):
        SftConfig.model_validate({**cfg.model_dump(), "engine": {"zero_stage": 3}})
