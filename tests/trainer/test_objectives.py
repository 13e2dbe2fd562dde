"""The baselines beside RLMEC: each loss against a hand computation, padding changes nothing,
a step's loss is the same however it is split, the registry refuses unknown names, the data
each objective needs is checked, and every objective trains the tiny model under DeepSpeed."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from rlmec.trainer.config import LossConfig
from rlmec.trainer.data import DataError, RlmecBatch, TrainSample, collate
from rlmec.trainer.loss import rlmec_loss
from rlmec.trainer.objectives import (
    OBJECTIVES,
    clipped_surrogate_loss,
    get_objective,
    group_advantages,
    outcome_rewards,
    prepare_samples,
    score_rewards,
)
from tests.trainer.test_train import make_config

NAN = float("nan")


def test_outcome_rewards_put_one_reward_on_every_response_token() -> None:
    mask = torch.tensor([[False, True, True, False], [True, True, True, True]])
    out = outcome_rewards(torch.tensor([True, False]), mask, reward_correct=0.5, reward_wrong=-0.1)
    expected = torch.tensor([[0.0, 0.5, 0.5, 0.0], [-0.1, -0.1, -0.1, -0.1]])
    torch.testing.assert_close(out, expected)


def test_group_advantages_by_hand() -> None:
    # group a: [1, 0, 0, 1] → mean .5, std .5 → [1, -1, -1, 1]; group b all agree → 0.
    adv = group_advantages([1, 0, 0, 1, 1, 1], ["a", "a", "a", "a", "b", "b"])
    assert adv == pytest.approx([1, -1, -1, 1, 0, 0], abs=1e-5)
    # [1, 0, 0]: mean 1/3, std sqrt(2)/3 → [2/sqrt(2), -1/sqrt(2), -1/sqrt(2)]
    s = math.sqrt(2)
    assert group_advantages([1, 0, 0], ["g"] * 3) == pytest.approx(
        [2 / s, -1 / s, -1 / s], abs=1e-5
    )


def test_clipped_surrogate_by_hand() -> None:
    # ρ = [2, 0.5 | 1]; A = [+1 | -1]; ε = 0.3
    # sample 0: min(2·1, 1.3·1) = 1.3; min(.5, .7) = .5; sample 1: min(-1, -1) = -1
    # L = -(1.3 + 0.5 - 1) / 3
    lp = torch.log(torch.tensor([[0.8, 0.2, NAN], [0.5, NAN, NAN]])).requires_grad_(True)
    old = torch.log(torch.tensor([[0.4, 0.4, 1.0], [0.5, 1.0, 1.0]]))
    mask = torch.tensor([[True, True, False], [True, False, False]])
    loss, ratio, clip = clipped_surrogate_loss(lp, old, torch.tensor([1.0, -1.0]), mask)
    assert loss.item() == pytest.approx(-(1.3 + 0.5 - 1) / 3, abs=1e-6)
    assert ratio.item() == pytest.approx((2 + 0.5 + 1) / 3, abs=1e-6)
    assert clip.item() == pytest.approx(1 / 3, abs=1e-6)
    loss.backward()
    assert lp.grad is not None  # the clipped token has no gradient; the others -ρ·A/N
    expected = torch.tensor([[0.0, -0.5 / 3, 0.0], [1 / 3, 0.0, 0.0]])
    torch.testing.assert_close(lp.grad, expected)


def _sample(i: int, *, correct: bool, n: int = 3) -> TrainSample:
    pred = tuple(range(10 + i, 10 + i + n))
    reg = tuple(range(20 + i, 20 + i + n + (i % 2)))
    return TrainSample(
        prompt_ids=(1, 2 + i % 3), prediction_ids=pred, regular_ids=reg,
        rewards=tuple(-0.1 if j == 1 else 0.0 for j in range(n)),
        imitation_weights=tuple(1.0 if j == 0 else 0.5 for j in range(len(reg))),
        ref_logprobs=tuple(-1.0 - 0.1 * j for j in range(n)), sample_id=f"s{i}",
        correct=correct, reference_ids=(30, 31, 32 + i), group=f"p{i // 2}",
        partial_credit=1.0 if correct else (i % 4) / 4,
    )  # fmt: skip


def _logprobs(batch: RlmecBatch, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs that depend on the token only (so padding cannot change them);
    NaN on padding, which the losses must never read."""
    table = -torch.rand(64, generator=torch.Generator().manual_seed(seed)) - 0.05

    def lp(seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.where(mask, table[seq], torch.full_like(table[seq], NAN))

    p, r = batch.prediction, batch.regular
    return lp(p.input_ids, p.attention_mask.bool()), lp(r.input_ids, r.attention_mask.bool())


def _loss(name: str, batch: RlmecBatch, counts: tuple[float, float] | None = None,
          **loss: object) -> float:  # fmt: skip
    spec, cfg = get_objective(name), LossConfig(objective=name, **loss)  # type: ignore[arg-type]
    pred_lp, reg_lp = _logprobs(batch, 0)
    return float(spec.loss(pred_lp, reg_lp, batch, cfg, counts).loss)


def test_rl_tokens_response_divides_the_rl_term_by_every_response_token() -> None:
    # Two wrong samples of 3 tokens, one penalised token each (-0.1 at j=1), ref lp -1.1 there.
    batch = collate([_sample(0, correct=False), _sample(1, correct=False)], pad_id=0)
    pred_lp, reg_lp = _logprobs(batch, 0)
    p, r = batch.prediction, batch.regular
    scored = p.loss_mask & (p.values != 0)
    assert int(scored.sum()) == 2 and int(p.loss_mask.sum()) == 6
    ratio = torch.exp(pred_lp[scored] - batch.ref_logprobs[scored])
    w = torch.minimum(ratio * -0.1, ratio.clamp(0.7, 1.3) * -0.1)
    rl_sum = float((-w * pred_lp[scored]).sum())
    im = float((-r.values * reg_lp)[r.loss_mask].sum() / (r.loss_mask & (r.values != 0)).sum())
    assert _loss("rlmec", batch) == pytest.approx(rl_sum / 2 + im, abs=1e-6)  # §5: N_r = 2
    assert _loss("rlmec", batch, rl_tokens="response") == pytest.approx(rl_sum / 6 + im, abs=1e-6)
    spec, cfg = get_objective("rlmec"), LossConfig(rl_tokens="response")
    assert spec.counts(batch, cfg) == (6, batch.counts()[1])
    # sequence rewards every response token already: the two counts agree
    seq = prepare_samples([_sample(0, correct=True), _sample(1, correct=False)], "sequence")
    both = collate(seq, pad_id=0)
    assert _loss("sequence", both) == pytest.approx(_loss("sequence", both, rl_tokens="response"))


def test_sequence_is_the_rlmec_loss_with_outcome_rewards() -> None:
    samples = prepare_samples([_sample(0, correct=True), _sample(1, correct=False)], "sequence")
    batch = collate(samples, pad_id=0)
    pred_lp, reg_lp = _logprobs(batch, 0)
    p, r = batch.prediction, batch.regular
    rewards = torch.where(p.loss_mask, torch.tensor([[0.5], [-0.1]]), 0.0)
    expected = rlmec_loss(pred_lp, batch.ref_logprobs, rewards, p.loss_mask, reg_lp, r.values,
                          r.loss_mask)  # fmt: skip
    assert _loss("sequence", batch) == pytest.approx(float(expected.loss), abs=1e-6)
    # and it differs from RLMEC, whose rewards sit on one token of the wrong sample only
    assert _loss("rlmec", batch) != pytest.approx(_loss("sequence", batch), abs=1e-3)


def test_rft_is_the_nll_of_the_correct_samples_only() -> None:
    samples = [_sample(0, correct=True), _sample(1, correct=False)]
    batch = collate(prepare_samples(samples, "rft"), pad_id=0)
    pred_lp, _ = _logprobs(batch, 0)
    mask = batch.prediction.loss_mask[0]
    expected = -float(pred_lp[0][mask].mean())  # the 3 response tokens of sample 0
    assert int(mask.sum()) == 3
    assert _loss("rft", batch) == pytest.approx(expected, abs=1e-6)


def test_sft_is_the_nll_of_the_reference_solutions() -> None:
    samples = prepare_samples([_sample(0, correct=False), _sample(1, correct=True)], "sft")
    assert samples[0].regular_ids == (30, 31, 32) and samples[0].imitation_weights == (1.0,) * 3
    batch = collate(samples, pad_id=0)
    _, reg_lp = _logprobs(batch, 0)
    mask = batch.regular.loss_mask
    assert _loss("sft", batch) == pytest.approx(-float(reg_lp[mask].mean()), abs=1e-6)


def test_grpo_sets_group_advantages_from_the_outcomes() -> None:
    samples = [_sample(i, correct=c) for i, c in enumerate([True, False, True, True])]
    prepared = prepare_samples(samples, "grpo")
    # groups p0 = {0, 1} → [+1, -1], p1 = {2, 3} all right → [0, 0]
    assert [s.advantage for s in prepared] == pytest.approx([1, -1, 0, 0], abs=1e-5)
    batch = collate(prepared, pad_id=0)
    pred_lp, _ = _logprobs(batch, 0)
    p = batch.prediction
    expected, _, _ = clipped_surrogate_loss(
        pred_lp, batch.ref_logprobs, batch.advantages, p.loss_mask
    )  # type: ignore[arg-type]
    assert _loss("grpo", batch) == pytest.approx(float(expected), abs=1e-6)


def test_partial_puts_the_share_of_right_lines_between_the_outcome_rewards() -> None:
    # sample 1 is wrong with 1 of 4 lines right: -0.1 + 0.25 * (0.5 - -0.1) = 0.05 a token
    samples = [_sample(0, correct=True), _sample(1, correct=False)]
    batch = collate(prepare_samples(samples, "partial"), pad_id=0)
    pred_lp, reg_lp = _logprobs(batch, 0)
    p, r = batch.prediction, batch.regular
    rewards = torch.where(p.loss_mask, torch.tensor([[0.5], [0.05]]), 0.0)
    expected = rlmec_loss(pred_lp, batch.ref_logprobs, rewards, p.loss_mask, reg_lp, r.values,
                          r.loss_mask)  # fmt: skip
    assert _loss("partial", batch) == pytest.approx(float(expected.loss), abs=1e-6)
    # all-or-nothing shares make it sequence
    whole = [replace(s, partial_credit=float(bool(s.correct))) for s in samples]
    batch = collate(prepare_samples(whole, "partial"), pad_id=0)
    assert _loss("partial", batch) == pytest.approx(_loss("sequence", batch), abs=1e-6)
    assert score_rewards(torch.tensor([0.0, 1.0]), torch.ones(2, 1, dtype=torch.bool),
                         reward_correct=0.5, reward_wrong=-0.1).flatten().tolist() == (
        pytest.approx([-0.1, 0.5])
    )  # fmt: skip


def test_sequence_ref_imitates_the_reference_weighted_against_the_prediction() -> None:
    wrong = replace(_sample(1, correct=False), prediction_ids=(30, 31, 40))
    right = _sample(0, correct=True)
    prepared = prepare_samples([right, wrong], "sequence_ref")
    assert prepared[0] == right  # a correct sample keeps its regular slot
    # the reference (30, 31, 33) keeps 30 and 31 of the prediction (0.5) and edits 33 (1.0)
    assert prepared[1].regular_ids == (30, 31, 33)
    assert prepared[1].imitation_weights == (0.5, 0.5, 1.0)
    batch = collate(prepared, pad_id=0)
    seq = collate(prepare_samples([right, wrong], "sequence"), pad_id=0)
    assert _loss("sequence_ref", batch) == pytest.approx(_loss("sequence", batch), abs=1e-6)
    assert _loss("sequence_ref", batch) != pytest.approx(_loss("sequence", seq), abs=1e-4)


@pytest.mark.parametrize("rl_tokens", ["rewarded", "response"])
@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_padding_changes_nothing_and_any_split_adds_up(name: str, rl_tokens: str) -> None:
    samples = prepare_samples([_sample(i, correct=i % 3 == 0, n=2 + i % 4) for i in range(8)], name)
    spec = get_objective(name)
    cfg = LossConfig(objective=name, rl_tokens=rl_tokens)  # type: ignore[arg-type]
    whole = collate(samples, pad_id=0)
    left = collate(samples, pad_id=0, side="left")
    assert _loss(name, whole, rl_tokens=rl_tokens) == pytest.approx(
        _loss(name, left, rl_tokens=rl_tokens), abs=1e-6
    )
    # 1 batch of 8 == 8 micro-batches of 1 with the step's counts (normalization="step")
    parts = [collate([s], pad_id=0) for s in samples]
    per = [spec.counts(b, cfg) for b in parts]
    counts = (sum(c[0] for c in per), sum(c[1] for c in per))
    assert counts == pytest.approx(spec.counts(whole, cfg))
    split = sum(_loss(name, b, counts, rl_tokens=rl_tokens) for b in parts)
    assert split == pytest.approx(_loss(name, whole, counts, rl_tokens=rl_tokens), abs=1e-5)


def test_unknown_objectives_and_missing_data_are_named() -> None:
    with pytest.raises(ValueError, match="objective 'ppo' is unknown; choose from rlmec, seq"):
        get_objective("ppo")
    with pytest.raises(ValidationError, match="'grpo', 'partial' or 'sequence_ref'"):
        LossConfig(objective="ppo")  # type: ignore[arg-type]
    unknown = TrainSample((1,), (2,), (2,), (0.0,), (1.0,), None, sample_id="x")
    with pytest.raises(DataError, match="needs each sample's outcome, and sample 'x' has none"):
        prepare_samples([unknown], "rft")
    with pytest.raises(DataError, match="trains on reference solutions, and sample 'x'"):
        prepare_samples([unknown], "sft")
    with pytest.raises(DataError, match="share of right lines, and sample 'x' has none"):
        prepare_samples([unknown], "partial")
    assert prepare_samples([unknown], "rlmec") == [unknown]


@pytest.mark.parametrize("name", ["sequence", "rft", "sft", "grpo", "sequence_ref"])
def test_every_objective_trains_the_tiny_model(
    name: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    from rlmec.trainer.train import train
    from tests.trainer.records import scored_sample, write_jsonl

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = []
    for i in range(16):  # groups of 4 samples per question (grpo), correct ones among them
        question = scored_sample(tok, i - i % 4).question
        s = scored_sample(tok, i).model_copy(
            update={"question": question, "reference_solution": f"{i} + 1 = {i + 1}"}
        )
        rows.append(s.model_dump(mode="json"))
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    cfg = make_config(tiny_model_dir, tmp_path / "run", data, loss={"objective": name},
                      optim={"epochs": 2})  # fmt: skip
    result = train(cfg)
    losses = [m.loss for m in result.history]
    assert result.steps == 4 and all(math.isfinite(x) for x in losses)
    assert losses[-1] != losses[0]
    if name in ("rft", "sft"):  # plain NLL on fixed targets: it goes down
        assert losses[-1] < losses[0]
    assert result.final_dir is not None and (result.final_dir / "config.json").is_file()


def test_kl_coef_needs_an_objective_that_reads_predictions(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"loss.kl_coef \(0.1\) needs an objective .* 'sft'"):
        make_config(tmp_path, tmp_path, tmp_path / "x", loss={"objective": "sft", "kl_coef": 0.1})
    ok = make_config(
        tmp_path, tmp_path, tmp_path / "x", loss={"objective": "partial", "kl_coef": 1}
    )
    assert ok.loss.kl_coef == 1


def test_the_kl_term_trains_the_tiny_model_and_is_reported(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    from rlmec.trainer.train import train
    from tests.trainer.records import scored_sample, write_jsonl

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = [scored_sample(tok, i).model_dump(mode="json") for i in range(16)]
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    loss = {"imitation_coef": 0.1, "kl_coef": 0.5}
    cfg = make_config(tiny_model_dir, tmp_path / "run", data, loss=loss, optim={"epochs": 2})
    history = train(cfg).history
    # the first step starts at the reference policy (KL 0); once it moved, the KL is positive
    assert history[0].kl == pytest.approx(0.0, abs=1e-6)
    assert all(m.kl > 0 for m in history[1:]) and all(math.isfinite(m.loss) for m in history)
