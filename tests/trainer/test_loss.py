"""The RLMEC objective (§5): a hand-computed case, masking, split invariance, zero rewards."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from rlmec.trainer.data import RlmecBatch, TrainSample, collate
from rlmec.trainer.loss import imitation_loss, kl_penalty, rl_loss, rlmec_loss, token_logprobs

NAN = float("nan")


def test_hand_computed_case() -> None:
    # ρ = [1, 0.5, 2, 1]; r = [-0.1, 0.2, 0.3, 0]; ε = 0.3
    # w = [min(-0.1, -0.1), min(0.1, 0.14), min(0.6, 0.39), 0] = [-0.1, 0.1, 0.39, 0]
    # L_RL = -(-0.1·ln.5 + 0.1·ln.25 + 0.39·ln.8) / 3   (N_r = 3: the 0 reward does not count)
    lp = torch.tensor([[math.log(0.5), math.log(0.25), math.log(0.8), math.log(0.9), NAN]])
    lp.requires_grad_(True)
    ref = torch.log(torch.tensor([[0.5, 0.5, 0.4, 0.9, 1.0]]))
    rewards = torch.tensor([[-0.1, 0.2, 0.3, 0.0, 5.0]])
    mask = torch.tensor([[True, True, True, True, False]])
    # L_IM = (1.0·ln(1/.5) + 0.5·ln(1/.1)) / 2
    reg_lp = torch.tensor([[math.log(0.5), math.log(0.1), NAN]])
    c = torch.tensor([[1.0, 0.5, 1.0]])
    reg_mask = torch.tensor([[True, True, False]])

    out = rlmec_loss(lp, ref, rewards, mask, reg_lp, c, reg_mask)

    expected_rl = -(-0.1 * math.log(0.5) + 0.1 * math.log(0.25) + 0.39 * math.log(0.8)) / 3
    expected_im = (math.log(2.0) + 0.5 * math.log(10.0)) / 2
    assert out.rl_loss.item() == pytest.approx(expected_rl, abs=1e-6)
    assert out.imitation_loss.item() == pytest.approx(expected_im, abs=1e-6)
    assert out.loss.item() == pytest.approx(expected_rl + expected_im, abs=1e-6)
    assert out.mean_ratio.item() == pytest.approx((1 + 0.5 + 2) / 3, abs=1e-6)
    assert out.clip_fraction.item() == pytest.approx(1 / 3, abs=1e-6)  # only t=2 is clipped
    assert out.mean_reward.item() == pytest.approx(0.4 / 4, abs=1e-6)
    assert (out.num_reward_tokens.item(), out.num_imitation_tokens.item()) == (3, 2)
    # The weight is detached: dL_RL/dlp_t = -w_t / N_r, even outside the clip range.
    out.rl_loss.backward()
    assert lp.grad is not None
    expected_grad = torch.tensor([[0.1, -0.1, -0.39, 0.0, 0.0]]) / 3
    torch.testing.assert_close(lp.grad, expected_grad)


def test_loss_options_epsilon_lambda_and_given_counts() -> None:
    lp = torch.log(torch.tensor([[0.8]]))
    ref = torch.log(torch.tensor([[0.4]]))  # ρ = 2
    r = torch.tensor([[0.3]])
    m = torch.tensor([[True]])
    assert rl_loss(lp, ref, r, m, epsilon=0.5).item() == pytest.approx(-0.45 * math.log(0.8))
    assert rl_loss(lp, ref, r, m, num_reward_tokens=4).item() == pytest.approx(
        -0.39 * math.log(0.8) / 4
    )
    reg = torch.log(torch.tensor([[0.5]]))
    c = torch.tensor([[1.0]])
    out = rlmec_loss(lp, ref, r, m, reg, c, m, imitation_coef=0.25)
    assert out.loss.item() == pytest.approx(out.rl_loss.item() + 0.25 * math.log(2.0), abs=1e-6)


def test_zero_reward_micro_batch_gives_zero_rl_loss_and_no_nan() -> None:
    lp = torch.tensor([[-1.0, -2.0, NAN]], requires_grad=True)
    zeros = torch.zeros(1, 3)
    mask = torch.tensor([[True, True, False]])
    loss = rl_loss(lp, zeros, zeros, mask)
    assert loss.item() == 0.0
    loss.backward()
    assert lp.grad is not None and torch.isfinite(lp.grad).all()
    assert imitation_loss(lp, zeros, mask).item() == 0.0


# --- with a real (tiny) model: tokenized batches, padding sides, accumulation -------------


@pytest.fixture(scope="module")
def model_and_samples(tiny_model_dir: Path) -> tuple[torch.nn.Module, list[TrainSample], int]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlmec.trainer.data import PolicyEncoder

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    tok = PolicyEncoder(AutoTokenizer.from_pretrained(tiny_model_dir), max_length=256)
    samples = []
    for i in range(8):
        prompt = tok.prompt(f"Problem {i}: Natalia sold {i * 7} clips." + " More." * (i % 3))
        pred, _ = tok.response(f"She sold {48 + i} clips. The answer is: {i}" + "!" * i)
        reg, _ = tok.response(f"She sold {72 + i} clips. The answer is: {i + 1}")
        g = torch.Generator().manual_seed(i)
        rewards = (torch.rand(len(pred), generator=g) * 0.6 - 0.1).clamp(max=0.5)
        rewards[torch.rand(len(pred), generator=g) < 0.3] = 0.0
        ref = (-torch.rand(len(pred), generator=g) * 5).tolist()
        weights = [1.0 if j % 3 == 0 else 0.5 for j in range(len(reg))]
        samples.append(
            TrainSample(
                tuple(prompt),
                tuple(pred),
                tuple(reg),
                tuple(rewards.tolist()),
                tuple(weights),
                tuple(ref),
            )
        )
    return model, samples, int(tok.tokenizer.pad_token_id)


def _batch_loss(
    model: torch.nn.Module, batch: RlmecBatch, counts: tuple[int, int] | None = None
) -> torch.Tensor:
    p, r = batch.prediction, batch.regular
    ids = torch.cat([p.input_ids, r.input_ids])
    logits = model(
        input_ids=ids,
        attention_mask=torch.cat([p.attention_mask, r.attention_mask]),
        position_ids=torch.cat([p.position_ids, r.position_ids]),
    ).logits
    lp = token_logprobs(logits, ids)
    n = batch.size
    kw = (
        {}
        if counts is None
        else {"num_reward_tokens": counts[0], "num_imitation_tokens": counts[1]}
    )
    out = rlmec_loss(
        lp[:n], batch.ref_logprobs, p.values, p.loss_mask, lp[n:], r.values, r.loss_mask, **kw
    )
    return out.loss


def test_left_and_right_padding_give_identical_loss(model_and_samples) -> None:  # type: ignore[no-untyped-def]
    model, samples, pad = model_and_samples
    right = collate(samples, pad, "right")
    left = collate(samples, pad, "left")
    assert not torch.equal(right.prediction.input_ids, left.prediction.input_ids)
    # The mask covers exactly the response tokens + EOS of each sample, on both sides.
    for b in (right, left):
        for i, s in enumerate(samples):
            kept = b.prediction.input_ids[i][b.prediction.loss_mask[i]].tolist()
            assert kept == list(s.prediction_ids)
            assert b.prediction.values[i][b.prediction.loss_mask[i]].tolist() == pytest.approx(
                s.rewards
            )
    with torch.no_grad():
        l_right, l_left = _batch_loss(model, right), _batch_loss(model, left)
    torch.testing.assert_close(l_left, l_right, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(l_left)
    # Padding a sample next to longer ones changes none of its response log-probs.
    with torch.no_grad():
        alone = collate(samples[:1], pad, "left").prediction
        lp_alone = token_logprobs(model(input_ids=alone.input_ids).logits, alone.input_ids)
        p = left.prediction
        lp_padded = token_logprobs(
            model(
                input_ids=p.input_ids, attention_mask=p.attention_mask, position_ids=p.position_ids
            ).logits,
            p.input_ids,
        )
    assert p.input_ids[0].numel() > alone.input_ids[0].numel()
    torch.testing.assert_close(
        lp_padded[0][p.loss_mask[0]], lp_alone[0][alone.loss_mask[0]], atol=1e-5, rtol=1e-5
    )


def _grads(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]


def test_step_normalisation_is_invariant_to_the_split(model_and_samples) -> None:  # type: ignore[no-untyped-def]
    model, samples, pad = model_and_samples
    whole = collate(samples, pad, "right")
    model.zero_grad()
    loss_whole = _batch_loss(model, whole)
    loss_whole.backward()
    g_whole = _grads(model)

    parts = [collate([s], pad, "left") for s in samples]
    counts = (sum(b.counts()[0] for b in parts), sum(b.counts()[1] for b in parts))
    assert counts == whole.counts()
    model.zero_grad()
    total = torch.zeros(())
    for b in parts:
        loss = _batch_loss(model, b, counts)
        loss.backward()
        total += loss.detach()
    torch.testing.assert_close(total, loss_whole.detach(), atol=1e-5, rtol=1e-5)
    for a, b in zip(_grads(model), g_whole, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)

    # The paper's per-micro-batch mode is not invariant: the mean of per-sample losses differs.
    with torch.no_grad():
        paper = sum(_batch_loss(model, b) for b in parts) / len(parts)
    assert abs(float(paper) - float(loss_whole.detach())) > 1e-4


def test_kl_penalty_by_hand_is_zero_at_the_reference_and_ignores_padding() -> None:
    lp = torch.tensor([[-1.0, -2.0, float("nan")], [-0.5, -0.5, -0.5]], requires_grad=True)
    ref = torch.tensor([[-1.5, -2.0, 7.0], [-0.5, -0.5, -0.5]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    d = -0.5  # ref - lp of the one token that differs; k3 = e^d - d - 1
    expected = (math.exp(d) - d - 1) / 3
    kl = kl_penalty(lp, ref, mask)
    assert float(kl.detach()) == pytest.approx(expected, abs=1e-7)
    assert float(kl_penalty(lp, ref, mask, num_tokens=6).detach()) == pytest.approx(expected / 2)
    kl.backward()
    assert lp.grad is not None and torch.isfinite(lp.grad).all()
    # d k3 / d lp = 1 - e^d at that token, over N; 0 where the policy equals the reference
    assert float(lp.grad[0, 0]) == pytest.approx((1 - math.exp(d)) / 3, abs=1e-7)
    assert float(lp.grad[0, 1]) == 0.0 and float(lp.grad[0, 2]) == 0.0
    same = kl_penalty(ref, ref, torch.ones_like(mask))
    assert float(same) == 0.0
