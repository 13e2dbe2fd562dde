"""Which term carries the learning: the gradient norm of the RL term against the imitation
term's (λ included), at the start policy, on an arm's first batches (issue 42's diagnostic).

At λ = 1 the imitation of a fix that is the reference swamps the RL term; the ``*_kl`` arms
run at a small λ so the RL term carries the learning. This measures that ratio with the
trainer's own data path and objective (``rlmec train``'s records, ``prepare_samples``,
``collate``, the frozen reference, the objective's loss), in fp32 on the CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def grad_ratio(
    model_dir: Path, train_file: Path, overrides: list[str], *, batches: int = 4, batch: int = 4
) -> float:
    """‖∇ L_RL‖ / ‖∇ λ·L_IM‖ summed over the first ``batches`` micro-batches of ``batch``
    samples (0 when the arm has no imitation term, inf when it has no RL term)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlmec.trainer.config import TrainConfig, apply_overrides
    from rlmec.trainer.data import PolicyEncoder, collate, read_jsonl
    from rlmec.trainer.objectives import get_objective, prepare_samples
    from rlmec.trainer.train import ReferencePolicy, policy_logprobs

    raw: dict[str, Any] = {
        "model": str(model_dir),
        "output_dir": "/tmp/unused",
        "data": {"train_file": str(train_file), "max_length": 448},
    }
    cfg = TrainConfig.model_validate(apply_overrides(raw, overrides))
    spec = get_objective(cfg.loss.objective)
    tok = AutoTokenizer.from_pretrained(model_dir)
    samples = read_jsonl(train_file, PolicyEncoder(tok, cfg.data.max_length))[: batches * batch]
    samples = prepare_samples(samples, cfg.loss.objective)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    reference = ReferencePolicy(str(model_dir), torch.device("cpu"), torch.float32)
    params = [p for p in model.parameters() if p.requires_grad]
    norms = {"rl": 0.0, "im": 0.0}
    for i in range(0, len(samples), batch):
        b = collate(samples[i : i + batch], int(tok.pad_token_id or 0))
        if spec.needs_reference_model:
            b = reference.fill(b)
        for term in norms:
            pred_lp, reg_lp = policy_logprobs(model, b, spec.passes)
            out = spec.loss(pred_lp, reg_lp, b, cfg.loss, None)
            loss = out.rl_loss if term == "rl" else cfg.loss.imitation_coef * out.imitation_loss
            if not loss.requires_grad:
                continue
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            norms[term] += float(
                torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None))
            )
    if norms["im"] == 0:
        return float("inf") if norms["rl"] else 0.0
    return norms["rl"] / norms["im"]
