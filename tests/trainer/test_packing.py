"""Packing changes nothing but the padding: the tiny model's log-probs and gradients over a
packed micro-batch equal those over the padded one, on either padding side, and the loss
under bf16 autocast stays within bf16 tolerance of fp32 on a frozen batch (issue 32)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rlmec.trainer.config import LossConfig
from rlmec.trainer.data import TrainSample, collate
from rlmec.trainer.objectives import get_objective
from rlmec.trainer.packing import bins
from rlmec.trainer.train import policy_logprobs


def _samples() -> list[TrainSample]:
    """Three samples of different lengths (so padding differs per row and per pass)."""
    out = []
    for i, (n_prompt, n_pred, n_reg) in enumerate([(5, 9, 7), (3, 4, 12), (8, 2, 2)]):
        pred = tuple(30 + (7 * i + j) % 50 for j in range(n_pred))
        reg = tuple(40 + (3 * i + j) % 50 for j in range(n_reg))
        out.append(TrainSample(
            prompt_ids=tuple(10 + i + j for j in range(n_prompt)), prediction_ids=pred,
            regular_ids=reg, rewards=tuple(-0.1 if j == 1 else 0.2 for j in range(n_pred)),
            imitation_weights=tuple(1.0 if j % 3 == 0 else 0.5 for j in range(n_reg)),
            ref_logprobs=tuple(-2.0 - 0.1 * j for j in range(n_pred)), sample_id=f"s{i}",
        ))  # fmt: skip
    return out


def _model(tiny_model_dir: Path) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)


def test_bins_keep_the_rows_in_order_within_the_width() -> None:
    assert bins([5, 5, 5, 12, 3, 3], 10) == [[0, 1], [2], [3], [4, 5]]
    assert bins([4, 4], 100) == [[0, 1]]


@pytest.mark.parametrize("pack_tokens", [2048, 1])  # one packed row; as many as rows allow
@pytest.mark.parametrize("side", ["right", "left"])
def test_packed_log_probs_and_gradients_equal_padded(
    tiny_model_dir: Path, side: str, pack_tokens: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rlmec.trainer import packing as packing_module

    model = _model(tiny_model_dir)
    batch = collate(_samples(), pad_id=0, side=side)  # type: ignore[arg-type]
    spec, cfg = get_objective("rlmec"), LossConfig()
    monkeypatch.setattr(packing_module, "PACK_TOKENS", pack_tokens)
    results = []
    for packing in (False, True):
        model.zero_grad()
        pred_lp, reg_lp = policy_logprobs(model, batch, packing=packing)
        loss = spec.loss(pred_lp, reg_lp, batch, cfg, None).loss
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        results.append((pred_lp.detach(), reg_lp.detach(), loss.item(), grads))
    (p0, r0, l0, g0), (p1, r1, l1, g1) = results
    pm, rm = batch.prediction.loss_mask, batch.regular.loss_mask
    torch.testing.assert_close(p1[pm], p0[pm], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(r1[rm], r0[rm], atol=1e-5, rtol=1e-5)
    assert l1 == pytest.approx(l0, abs=1e-5)
    assert len(g0) == len(g1) > 0
    for a, b in zip(g0, g1, strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)


def test_packing_keeps_sequences_apart(tiny_model_dir: Path) -> None:
    """A sequence's log-probs do not depend on the sequences packed before it."""
    model = _model(tiny_model_dir)
    samples = _samples()
    with torch.no_grad():
        alone, _ = policy_logprobs(model, collate(samples[2:], pad_id=0), "prediction",
                                   packing=True)  # fmt: skip
        after, _ = policy_logprobs(model, collate(samples, pad_id=0), "prediction",
                                   packing=True)  # fmt: skip
    mask = collate(samples[2:], pad_id=0).prediction.loss_mask[0]
    width = mask.size(0)
    torch.testing.assert_close(after[2, :width][mask], alone[0][mask], atol=1e-5, rtol=1e-5)


def test_bf16_autocast_loss_is_within_bf16_tolerance_of_fp32(tiny_model_dir: Path) -> None:
    model = _model(tiny_model_dir)
    batch = collate(_samples(), pad_id=0)
    spec, cfg = get_objective("rlmec"), LossConfig()
    with torch.no_grad():
        fp32 = spec.loss(*policy_logprobs(model, batch, packing=True), batch, cfg, None).loss
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lp = policy_logprobs(model, batch, packing=True)
        bf16 = spec.loss(*lp, batch, cfg, None).loss
    # bf16 keeps 8 bits of mantissa (relative error 2^-8 per rounding); a few roundings deep
    assert float(bf16) == pytest.approx(float(fp32), rel=2e-2, abs=2e-2)
    assert float(bf16) != float(fp32)  # autocast did run in bf16
