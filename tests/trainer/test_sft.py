"""GRM fine-tuning (``rlmec grm train``) on the tiny model: the loss covers exactly the target
tokens, training raises the target's likelihood, resume continues, and ``final/`` serves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from rlmec.trainer.loss import sft_loss, token_logprobs
from rlmec.trainer.sft import (
    SftConfig,
    SftExampleRow,
    SftSample,
    collate_sft,
    encode_example,
    read_examples,
    train_grm,
)


def _examples(path: Path, n: int = 16) -> Path:
    rows = [
        {"id": f"e{i}", "kind": "locate", "prompt": f"Which step of {i} + {i} is wrong?\n",
         "target": f"The first error step is [{i % 3}]"}
        for i in range(n)
    ]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _config(model: Path, out: Path, train_file: Path, **optim: Any) -> SftConfig:
    return SftConfig.model_validate({
        "model": str(model), "output_dir": str(out), "seed": 0,
        "data": {"train_file": str(train_file), "max_length": 128},
        "optim": {"lr": 3e-3, "warmup_ratio": 0.0, "epochs": 1, "global_batch_size": 4,
                  "micro_batch_size": 2, **optim},
        "engine": {"zero_stage": 0, "precision": "fp32"},
    })  # fmt: skip


def test_the_loss_mask_covers_the_target_and_eos_only(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    row = SftExampleRow(id="a", kind="rewrite", prompt="Problem: 2+3?\n", target="2+3 = 5")
    sample = encode_example(tok, row, max_length=128)
    assert sample is not None
    assert list(sample.prompt_ids) == tok(row.prompt)["input_ids"]
    assert sample.target_ids[-1] == tok.eos_token_id
    other = SftSample((1, 2, 3, 4, 5, 6), (7, 8))
    batch = collate_sft([sample, other], pad_id=0)
    assert batch.loss_mask.sum(-1).tolist() == [len(sample.target_ids), 2]
    n = len(sample.prompt_ids)
    assert (
        not batch.loss_mask[0, :n].any()
        and batch.loss_mask[0, n : n + len(sample.target_ids)].all()
    )
    # a prompt that leaves no room is skipped; a long target is cut to fit
    assert encode_example(tok, row, max_length=len(sample.prompt_ids)) is None
    cut = encode_example(tok, row, max_length=len(sample.prompt_ids) + 2)
    assert cut is not None and len(cut.target_ids) == 2


def test_sft_loss_is_the_mean_nll_of_the_step_tokens() -> None:
    logprobs = torch.tensor([[0.0, -1.0, -2.0], [0.0, -3.0, float("nan")]])
    mask = torch.tensor([[False, True, True], [False, True, False]])
    assert sft_loss(logprobs, mask, 3).item() == pytest.approx(2.0)
    assert sft_loss(logprobs, mask, 6).item() == pytest.approx(1.0)  # a share of a larger step
    assert sft_loss(logprobs, torch.zeros_like(mask), 0).item() == 0.0


def test_per_example_weighting_gives_every_example_the_same_weight() -> None:
    long, short = SftSample((1, 2), (3, 4, 5, 6)), SftSample((1,), (7,))
    batch = collate_sft([long, short], pad_id=0, per_example=True)
    assert batch.values.sum(-1).tolist() == pytest.approx([1.0, 1.0])
    assert batch.values[0, 2:6].tolist() == pytest.approx([0.25] * 4)
    # example means 1.0 and 3.0 → 2.0; the per-token mean would be (4 * 1 + 3) / 5 = 1.4
    logprobs = torch.where(batch.loss_mask, -1.0, 0.0)
    logprobs[1, 1] = -3.0
    assert sft_loss(logprobs, batch.loss_mask, 2, batch.values).item() == pytest.approx(2.0)
    plain = collate_sft([long, short], pad_id=0)
    assert sft_loss(logprobs, plain.loss_mask, 5, plain.values).item() == pytest.approx(1.4)


def _target_logprob(model_dir: Path, train_file: Path) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    samples, _ = read_examples(str(train_file), tok, 128)
    batch = collate_sft(samples, int(tok.pad_token_id or 0))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        logits = model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
        ).logits
    lp = token_logprobs(logits, batch.input_ids)
    return float(lp[batch.loss_mask].mean())


class _Engine:
    """The model with the two calls of a DeepSpeed engine that ``sft_step`` makes."""

    def __init__(self, model: Any) -> None:
        self.model, self.device = model, torch.device("cpu")

    def __call__(self, **kwargs: Any) -> Any:
        return self.model(**kwargs)

    def backward(self, loss: torch.Tensor, scale_wrt_gas: bool) -> None:
        loss.backward()

    def step(self) -> None:
        pass


def test_the_step_loss_equals_the_loss_over_full_logits(tiny_model_dir: Path) -> None:
    """Logits are computed only from the first target position; the loss must not change."""
    from transformers import AutoModelForCausalLM

    from rlmec.trainer.sft import sft_step

    long = SftSample(tuple(range(5, 40)), (7, 8, 9))
    short = SftSample((3, 4, 5, 6), (10, 11, 12, 13, 14))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    loss, n_tokens = sft_step(_Engine(model), [[long, short]], 0, world=1)
    batch = collate_sft([long, short], 0)
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       position_ids=batch.position_ids).logits  # fmt: skip
    full = sft_loss(token_logprobs(logits, batch.input_ids), batch.loss_mask, 8)
    assert n_tokens == 8 and loss == pytest.approx(float(full), rel=1e-5)


def test_training_raises_the_target_likelihood_and_resumes(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    train_file = _examples(tmp_path / "sft.jsonl")
    cfg = _config(tiny_model_dir, tmp_path / "run", train_file, epochs=3, max_steps=6)
    first = train_grm(
        cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"max_steps": 3})})
    )
    assert first.steps == 3 and len(first.history) == 3
    second = train_grm(cfg)  # resumes at step 3 from the checkpoint written at the end
    assert second.steps == 6 and [m.step for m in second.history] == [4, 5, 6]
    assert second.final_dir is not None and (second.final_dir / "config.json").is_file()
    before = _target_logprob(tiny_model_dir, train_file)
    after = _target_logprob(second.final_dir, train_file)
    assert after > before + 0.5, (before, after)
    assert (tmp_path / "run" / "curves.png").is_file()  # redrawn when the resumed run ends


def test_a_file_without_usable_lines_is_a_clear_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from rlmec.trainer.data import DataError

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x"}\nnot json\n\n')
    with pytest.raises(DataError, match="no trainable example"):
        read_examples(str(bad), AutoTokenizer.from_pretrained(tiny_model_dir), 128)


def test_autocast_and_a_constant_schedule_train(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``precision: autocast`` (fp32 weights, bf16 matmuls) and ``lr_schedule: constant``."""
    from rlmec.trainer import config

    monkeypatch.setattr(config, "bf16_is_fast", lambda: True)  # else autocast means fp32
    train_file = _examples(tmp_path / "sft.jsonl")
    cfg = _config(tiny_model_dir, tmp_path / "run", train_file, epochs=2, lr_schedule="constant")
    cfg = cfg.model_copy(update={"engine": config.EngineConfig(zero_stage=0, precision="autocast")})
    result = train_grm(cfg)
    assert [m.lr for m in result.history] == [3e-3] * 8  # no warmup, no decay
    assert result.final_dir is not None
    before = _target_logprob(tiny_model_dir, train_file)
    assert _target_logprob(result.final_dir, train_file) > before + 0.5
