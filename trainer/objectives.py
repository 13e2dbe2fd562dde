"""What the trainer optimises: RLMEC and the paper's baselines, one registry (issue 25).

A user evaluating RLMEC asks first what it beats on the same data. Every objective here runs
in the same recipe (DeepSpeed, checkpoints, online reader, metrics); only the per-micro-batch
loss differs. Like veRL's ``core_algos`` policy-loss registry, an objective is a name bound to
a function, and an unknown name fails with the supported list.

- ``rlmec``: §5, ``L_RL`` over the GRM's token rewards plus ``λ·L_IM``.
- ``sequence``: the same loss with every token's reward replaced by one sample-level reward
  (the sample's outcome): instance-level RL, the ablation that isolates token-level credit.
- ``rft``: NLL on the policy's own correct samples (rejection-sampling fine-tuning).
- ``sft``: NLL on the reference solutions (the data layer puts each sample's reference in its
  regular-sequence slot, weight 1 per token).
- ``grpo``: group-normalised outcome advantages (the samples of one prompt form a group) with
  the clipped ratio of PPO's surrogate against the behaviour log-probs.
- ``partial``: ``sequence`` with a denser number, the share of the sample's right lines
  (``partial_credit``), mapped between the two outcome rewards and put on every token. It
  separates "a denser number" from "credit in the right place" (issue 42).
- ``sequence_ref``: ``sequence`` imitating the reference solution instead of the rewrite (the
  §3.3 weights taken against the prediction), to show what the minimal edit adds.

``loss.kl_coef`` adds a KL term to the reference policy to any objective that reads the
predictions (:func:`rlmec.trainer.loss.kl_penalty`).

The λ = 0 ablation is ``rlmec`` with ``loss.imitation_coef: 0``.

Each loss is a pure function of tensors; ``counts`` gives the normalisers an optimizer step adds
up over its micro-batches (``normalization="step"``), as :mod:`rlmec.trainer.loss` does for
``N_r``/``N_c``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

import torch

from rlmec.shared.alignment import imitation_weights
from rlmec.trainer.loss import (
    DEFAULT_EPSILON,
    RlmecLossOutput,
    _masked,
    _normalise,
    rlmec_loss,
    sft_loss,
)

if TYPE_CHECKING:
    from rlmec.trainer.config import LossConfig
    from rlmec.trainer.data import RlmecBatch, TrainSample

ObjectiveName = Literal["rlmec", "sequence", "rft", "sft", "grpo", "partial", "sequence_ref"]
Passes = Literal["both", "prediction", "regular"]  # the sides an objective's loss reads
Counts = tuple[float, float] | None  # the step's normalisers, or None: per micro-batch
GRPO_STD_EPS = 1e-6


# --- the losses (pure) --------------------------------------------------------------------


def outcome_rewards(
    correct: torch.Tensor, loss_mask: torch.Tensor, *, reward_correct: float, reward_wrong: float
) -> torch.Tensor:
    """Every response token gets its sample's outcome reward (the ``sequence`` objective).

    Args:
        correct: ``[batch]`` bool, the sample's final answer is right (§4).
        loss_mask: ``[batch, seq]`` bool, True on response tokens (EOS included).
    Returns:
        ``[batch, seq]``: ``reward_correct`` or ``reward_wrong`` on the masked tokens, 0 elsewhere.
    """
    return score_rewards(
        correct.bool().float(), loss_mask, reward_correct=reward_correct, reward_wrong=reward_wrong
    )


def score_rewards(
    scores: torch.Tensor, loss_mask: torch.Tensor, *, reward_correct: float, reward_wrong: float
) -> torch.Tensor:
    """Every response token gets ``reward_wrong + s·(reward_correct - reward_wrong)`` for its
    sample's score ``s`` in [0, 1] (``partial``: the share of right lines; ``sequence``: 0 or 1).

    Args:
        scores: ``[batch]`` float in [0, 1].
        loss_mask: ``[batch, seq]`` bool, True on response tokens (EOS included).
    Returns:
        ``[batch, seq]``: the sample's reward on the masked tokens, 0 elsewhere.
    """
    per_sample = reward_wrong + scores.float() * (reward_correct - reward_wrong)
    return torch.where(loss_mask.bool(), per_sample[:, None], torch.zeros_like(loss_mask).float())


def group_advantages(rewards: Sequence[float], groups: Sequence[str]) -> list[float]:
    """GRPO's advantage ``(r_i - mean_g) / (std_g + eps)`` within each group ``g`` of samples
    of one prompt (population std, as in DeepSeekMath; a group that all agree gets 0).

    Args: ``rewards`` and ``groups`` of equal length (one entry per sample).
    """
    members: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    out = [0.0] * len(rewards)
    for idx in members.values():
        values = torch.tensor([float(rewards[i]) for i in idx], dtype=torch.float64)
        adv = (values - values.mean()) / (values.std(unbiased=False) + GRPO_STD_EPS)
        for i, a in zip(idx, adv.tolist(), strict=True):
            out[i] = a
    return out


def clipped_surrogate_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,
    *,
    epsilon: float = DEFAULT_EPSILON,
    num_tokens: torch.Tensor | float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GRPO/PPO: ``-Σ_t min(ρ_t·A, clip(ρ_t, 1-ε, 1+ε)·A) / N`` over the response tokens.

    Args:
        logprobs: ``[batch, seq]`` policy log-probs (with grad).
        old_logprobs: ``[batch, seq]`` behaviour log-probs (the policy that sampled).
        advantages: ``[batch]`` one advantage per sample.
        loss_mask: ``[batch, seq]`` bool.
        num_tokens: normaliser ``N``; ``None`` = this call's masked tokens.
    Returns:
        ``(loss, mean_ratio, clip_fraction)``: scalars; the statistics detached, over the
        masked tokens.
    """
    mask = loss_mask.bool()
    lp, old = _masked(logprobs, mask), _masked(old_logprobs, mask)
    ratio = torch.exp(lp - old.detach())
    adv = advantages.float()[:, None]
    unclipped, clipped = ratio * adv, ratio.clamp(1.0 - epsilon, 1.0 + epsilon) * adv
    per_token = -torch.minimum(unclipped, clipped)
    total = torch.where(mask, per_token, torch.zeros_like(per_token)).sum()
    n = mask.sum() if num_tokens is None else num_tokens
    with torch.no_grad():
        n_mask = mask.sum()
        mean_ratio = _normalise(torch.where(mask, ratio, 0.0).sum(), n_mask)
        frac = _normalise(torch.where(mask, (clipped < unclipped).float(), 0.0).sum(), n_mask)
    return _normalise(total, n), mean_ratio, frac


# --- the registry -------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectiveSpec:
    """One objective: its micro-batch loss and the normalisers a step adds up.

    ``loss(pred_lp, reg_lp, batch, cfg, counts)``: ``pred_lp``/``reg_lp`` ``[batch, seq]``
    policy log-probs of predictions and regular sequences; ``counts`` the step's totals of
    ``counts(batch, cfg)`` (or None for per-micro-batch normalisation).
    """

    loss: Callable[..., RlmecLossOutput]
    counts: Callable[[RlmecBatch, LossConfig], tuple[float, float]]
    passes: Passes = "both"  # which sequences go through the policy
    needs_reference_model: bool = True  # samples without ref log-probs get the frozen policy's
    needs_outcome: bool = False  # records must say whether the sample is correct
    needs_reference_solution: bool = False  # records must carry the reference solution
    needs_partial_credit: bool = False  # records must carry the share of right lines
    # The samples as this objective trains on them (e.g. sft's reference swap), or None.
    prepare: Callable[[list[TrainSample]], list[TrainSample]] | None = None


OBJECTIVES: dict[str, ObjectiveSpec] = {}


def register(name: str, spec: ObjectiveSpec) -> None:
    OBJECTIVES[name] = spec


def get_objective(name: str) -> ObjectiveSpec:
    if name not in OBJECTIVES:
        raise ValueError(f"objective {name!r} is unknown; choose from {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]


def _output(loss: torch.Tensor, *, rl: torch.Tensor, im: torch.Tensor,
            n_scored: torch.Tensor, n_im: torch.Tensor, batch: RlmecBatch,
            ratio: torch.Tensor | None = None, clip: torch.Tensor | None = None,
            ) -> RlmecLossOutput:  # fmt: skip
    """The objective's output in the metrics' shape; an NLL objective has no ratio (0)."""
    zero = torch.zeros((), device=loss.device)
    p = batch.prediction
    mean_reward = _normalise(_masked(p.values, p.loss_mask).sum(), p.loss_mask.sum())
    return RlmecLossOutput(loss, rl, im, zero if ratio is None else ratio,
                           zero if clip is None else clip, mean_reward.detach(), n_scored,
                           n_im)  # fmt: skip


def _counts_of(n: torch.Tensor, m: torch.Tensor) -> tuple[float, float]:
    return float(n), float(m)


def _rlmec(
    pred_lp: torch.Tensor,
    reg_lp: torch.Tensor,
    batch: RlmecBatch,
    cfg: LossConfig,
    counts: Counts,
    rewards: torch.Tensor | None = None,
) -> RlmecLossOutput:
    p, r = batch.prediction, batch.regular
    rewards = p.values if rewards is None else rewards
    # Per micro-batch (no step counts): this micro-batch's own N_r and N_c.
    n_r, n_c = counts or (_num_reward_tokens(batch, cfg, rewards), batch.counts()[1])
    return rlmec_loss(
        pred_lp, batch.ref_logprobs, rewards, p.loss_mask,
        reg_lp, r.values, r.loss_mask, epsilon=cfg.epsilon, imitation_coef=cfg.imitation_coef,
        num_reward_tokens=n_r, num_imitation_tokens=n_c,
    )  # fmt: skip


def _sequence_rewards(batch: RlmecBatch, cfg: LossConfig) -> torch.Tensor:
    assert batch.correct is not None
    return outcome_rewards(batch.correct, batch.prediction.loss_mask,
                           reward_correct=cfg.outcome_reward_correct,
                           reward_wrong=cfg.outcome_reward_wrong)  # fmt: skip


def _sequence(
    pred_lp: torch.Tensor, reg_lp: torch.Tensor, batch: RlmecBatch, cfg: LossConfig, counts: Counts
) -> RlmecLossOutput:
    return _rlmec(pred_lp, reg_lp, batch, cfg, counts, _sequence_rewards(batch, cfg))


def _num_reward_tokens(batch: RlmecBatch, cfg: LossConfig, rewards: torch.Tensor) -> float:
    """``N_r`` of ``cfg.rl_tokens``: response tokens with a non-zero reward (§5), or all."""
    mask = batch.prediction.loss_mask.bool()
    return float((mask if cfg.rl_tokens == "response" else mask & (rewards != 0)).sum())


def _rlmec_counts(batch: RlmecBatch, cfg: LossConfig) -> tuple[float, float]:
    return _num_reward_tokens(batch, cfg, batch.prediction.values), batch.counts()[1]


def _sequence_counts(batch: RlmecBatch, cfg: LossConfig) -> tuple[float, float]:
    return _num_reward_tokens(batch, cfg, _sequence_rewards(batch, cfg)), batch.counts()[1]


def _partial_rewards(batch: RlmecBatch, cfg: LossConfig) -> torch.Tensor:
    assert batch.partial_credit is not None
    return score_rewards(
        batch.partial_credit,
        batch.prediction.loss_mask,
        reward_correct=cfg.outcome_reward_correct,
        reward_wrong=cfg.outcome_reward_wrong,
    )


def _partial(
    pred_lp: torch.Tensor, reg_lp: torch.Tensor, batch: RlmecBatch, cfg: LossConfig, counts: Counts
) -> RlmecLossOutput:
    return _rlmec(pred_lp, reg_lp, batch, cfg, counts, _partial_rewards(batch, cfg))


def _partial_counts(batch: RlmecBatch, cfg: LossConfig) -> tuple[float, float]:
    return _num_reward_tokens(batch, cfg, _partial_rewards(batch, cfg)), batch.counts()[1]


def _nll_on_prediction(
    pred_lp: torch.Tensor, reg_lp: torch.Tensor, batch: RlmecBatch, cfg: LossConfig, counts: Counts
) -> RlmecLossOutput:
    """``rft``: NLL over the prediction tokens of the correct samples only."""
    mask = _correct_mask(batch)
    n = mask.sum()
    loss = sft_loss(pred_lp, mask, n if counts is None else counts[0])
    zero = loss.detach() * 0
    return _output(loss, rl=zero, im=loss, n_scored=n, n_im=n, batch=batch)


def _correct_mask(batch: RlmecBatch) -> torch.Tensor:
    assert batch.correct is not None
    return batch.prediction.loss_mask & batch.correct.bool()[:, None]


def _rft_counts(batch: RlmecBatch, cfg: LossConfig) -> tuple[float, float]:
    n = _correct_mask(batch).sum()
    return _counts_of(n, n)


def _nll_on_regular(
    pred_lp: torch.Tensor, reg_lp: torch.Tensor, batch: RlmecBatch, cfg: LossConfig, counts: Counts
) -> RlmecLossOutput:
    """``sft``: NLL over the regular-sequence slot, which holds the reference solution."""
    r = batch.regular
    n = r.loss_mask.sum()
    loss = sft_loss(reg_lp, r.loss_mask, n if counts is None else counts[1])
    zero = loss.detach() * 0
    return _output(loss, rl=zero, im=loss, n_scored=zero.long(), n_im=n, batch=batch)


def _sft_counts(batch: RlmecBatch, cfg: LossConfig) -> tuple[float, float]:
    return 0.0, float(batch.regular.loss_mask.sum())


def _grpo(
    pred_lp: torch.Tensor, reg_lp: torch.Tensor, batch: RlmecBatch, cfg: LossConfig, counts: Counts
) -> RlmecLossOutput:
    assert batch.advantages is not None
    p = batch.prediction
    loss, ratio, clip = clipped_surrogate_loss(
        pred_lp, batch.ref_logprobs, batch.advantages, p.loss_mask, epsilon=cfg.epsilon,
        num_tokens=None if counts is None else counts[0],
    )  # fmt: skip
    n = p.loss_mask.sum()
    return _output(loss, rl=loss, im=loss.detach() * 0, n_scored=n, n_im=n * 0, batch=batch,
                   ratio=ratio, clip=clip)  # fmt: skip


def _grpo_counts(batch: RlmecBatch, cfg: LossConfig) -> tuple[float, float]:
    return float(batch.prediction.loss_mask.sum()), 0.0


# --- what each objective needs of the samples ---------------------------------------------


def prepare_samples(samples: list[TrainSample], name: str) -> list[TrainSample]:
    """The samples as objective ``name`` trains on them, or a :class:`DataError` naming the
    sample and the fix: the outcome or reference the objective reads is checked, then its
    ``prepare`` runs (sft: references in the regular slot; grpo: the group advantages, a
    group being the samples of one prompt among ``samples``)."""
    from rlmec.trainer.data import DataError

    spec = get_objective(name)
    for s in samples:
        if spec.needs_outcome and s.correct is None:
            raise DataError(
                f"objective {name!r} needs each sample's outcome, and sample {s.sample_id!r} "
                "has none; give records with 'correct' (ScoredSample or TokenRecord)"
            )
        if spec.needs_partial_credit and s.partial_credit is None:
            raise DataError(
                f"objective {name!r} needs each sample's share of right lines, and sample "
                f"{s.sample_id!r} has none; give TokenRecords with 'partial_credit'"
            )
        if spec.needs_reference_solution and s.reference_ids is None:
            raise DataError(
                f"objective {name!r} trains on reference solutions, and sample "
                f"{s.sample_id!r} has none; give records with 'reference_solution'"
            )
    return spec.prepare(samples) if spec.prepare is not None else samples


def _with_references(samples: list[TrainSample]) -> list[TrainSample]:
    """sft: each sample's reference solution in its regular slot, weight 1 per token."""
    out = []
    for s in samples:
        assert s.reference_ids is not None
        ids = s.reference_ids
        out.append(replace(s, regular_ids=ids, imitation_weights=(1.0,) * len(ids)))
    return out


def _with_reference_for_wrong(samples: list[TrainSample]) -> list[TrainSample]:
    """sequence_ref: a wrong sample imitates its reference solution, weighted by §3.3 against
    the prediction (1.0 where the reference departs from it, 0.5 where it keeps it), as the
    rewrite would be; a correct sample keeps its regular slot."""
    out = []
    for s in samples:
        if s.correct:
            out.append(s)
            continue
        assert s.reference_ids is not None
        ids = s.reference_ids
        weights = tuple(imitation_weights(s.prediction_ids, ids))
        out.append(replace(s, regular_ids=ids, imitation_weights=weights))
    return out


def _with_group_advantages(samples: list[TrainSample]) -> list[TrainSample]:
    """grpo: each sample's advantage within its group (the samples of its prompt)."""
    advantages = group_advantages(
        [float(bool(s.correct)) for s in samples], [s.group or str(s.prompt_ids) for s in samples]
    )
    return [replace(s, advantage=a) for s, a in zip(samples, advantages, strict=True)]


register("rlmec", ObjectiveSpec(_rlmec, _rlmec_counts))
register("sequence", ObjectiveSpec(_sequence, _sequence_counts, needs_outcome=True))
register("rft", ObjectiveSpec(_nll_on_prediction, _rft_counts, "prediction",
                              needs_reference_model=False, needs_outcome=True))  # fmt: skip
register("sft", ObjectiveSpec(_nll_on_regular, _sft_counts, "regular",
                              needs_reference_model=False, needs_reference_solution=True,
                              prepare=_with_references))  # fmt: skip
register("grpo", ObjectiveSpec(_grpo, _grpo_counts, "prediction", needs_outcome=True,
                               prepare=_with_group_advantages))  # fmt: skip
register("partial", ObjectiveSpec(_partial, _partial_counts, needs_partial_credit=True))
register(
    "sequence_ref",
    ObjectiveSpec(
        _sequence,
        _sequence_counts,
        needs_outcome=True,
        needs_reference_solution=True,
        prepare=_with_reference_for_wrong,
    ),
)


def prepare_step(micro: list[list[TrainSample]], name: str) -> list[list[TrainSample]]:
    """:func:`prepare_samples` over one step's micro-batches (online: grpo's groups are the
    samples of a prompt within the step, as a rollout actor pushes a prompt's n together)."""
    flat = prepare_samples([s for m in micro for s in m], name)
    out, i = [], 0
    for m in micro:
        out.append(flat[i : i + len(m)])
        i += len(m)
    return out
