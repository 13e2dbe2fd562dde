"""The RLMEC training recipe (docs/method.md §5) on DeepSpeed, read top to bottom.

``train(config)``: join the process group → tokenizer, data source (JSONL or scored stream)
→ policy on a DeepSpeed engine (ZeRO 0-3, bf16/fp32, AdamW, cosine schedule with warmup) →
resume from the newest checkpoint → per optimizer step: pre-count the step's tokens on every
rank (``normalization="step"``), then for each micro-batch fill missing reference log-probs
with the frozen reference model, one forward pass over predictions and regular sequences,
the RLMEC loss, backward; ``engine.step()`` → acknowledge what the step used → log, checkpoint
→ final ``save_pretrained`` directory.

Runs as one process on CPU, or under ``deepspeed``/``torchrun`` on several ranks.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import astuple, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from rlmec.trainer.checkpoint import load_checkpoint, save_checkpoint, save_final
from rlmec.trainer.config import RecipeConfig, TrainConfig
from rlmec.trainer.data import PolicyEncoder, RlmecBatch, TrainSample, collate, read_jsonl
from rlmec.trainer.distributed import all_reduce_sum, init_process_group
from rlmec.trainer.loss import RlmecLossOutput, kl_penalty, token_logprobs
from rlmec.trainer.objectives import Passes, get_objective, prepare_samples, prepare_step
from rlmec.trainer.packing import packed_logprobs
from rlmec.trainer.publish import PolicyPublisher
from rlmec.trainer.reporting import Reporter
from rlmec.trainer.sources import OfflineSource, StepSource, StreamSource

log = logging.getLogger("rlmec.trainer")


@dataclass(frozen=True)
class StepMetrics:
    """One optimizer step, aggregated over its micro-batches and all ranks."""

    step: int
    loss: float
    rl_loss: float
    imitation_loss: float
    mean_reward: float
    mean_ratio: float
    clip_fraction: float
    lr: float
    tokens: int
    tokens_per_s: float
    step_time_s: float
    kl: float = 0.0  # the KL term to the reference (loss.kl_coef > 0), before its coefficient
    # The online loop: time waiting for scored batches before the step, publishing after it,
    # and the step's wall time from the end of the previous one (checkpoints excluded).
    data_wait_s: float = 0.0
    publish_s: float = 0.0
    step_wall_s: float = 0.0
    time: float = 0.0  # Unix time at the end of the step
    # The newest published policy version; batches skipped as stale and batches accepted by
    # their policy lag, since this process started.
    policy_version: int = 0
    stale_batches: int = 0
    stale_samples: int = 0
    lag_0: int = 0
    lag_1: int = 0
    lag_2: int = 0
    lag_3plus: int = 0


@dataclass
class StepSums:
    """What one optimizer step adds up over its micro-batches (then over ranks); the
    ``*_x_scored`` / ``*_x_resp`` sums are weighted by their token counts so means stay exact
    however the step is split."""

    loss: float = 0.0
    rl_loss: float = 0.0
    imitation_loss: float = 0.0
    ratio_x_scored: float = 0.0
    clipped_x_scored: float = 0.0
    scored_tokens: float = 0.0
    reward_x_resp: float = 0.0
    response_tokens: float = 0.0
    tokens: float = 0.0
    kl: float = 0.0  # the KL term's share (loss.kl_coef > 0), before its coefficient

    def __add__(self, other: StepSums) -> StepSums:
        return StepSums(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    def all_reduce(self, device: torch.device) -> StepSums:
        return StepSums(*all_reduce_sum(list(astuple(self)), device))


@dataclass
class TrainResult:
    steps: int
    history: list[StepMetrics] = field(default_factory=list)
    final_dir: Path | None = None


# --- building blocks ----------------------------------------------------------------------


def deepspeed_config(cfg: RecipeConfig, accumulation: int, world: int) -> dict[str, Any]:
    micro = cfg.optim.micro_batch_size
    ds: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accumulation,
        "train_batch_size": micro * accumulation * world,
        "zero_optimization": {"stage": cfg.engine.zero_stage},
        "bf16": {"enabled": cfg.engine.precision == "bf16"},
        "torch_autocast": {"enabled": cfg.engine.precision == "autocast", "dtype": "bfloat16"},
        # AdamW from torch: DeepSpeed's own Adam JIT-compiles for 40+ s on CPU.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
    }
    if cfg.optim.max_grad_norm > 0:
        ds["gradient_clipping"] = cfg.optim.max_grad_norm
    return ds


def load_policy_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked out: any id will do
    return tokenizer


def init_deepspeed(
    cfg: RecipeConfig,
    ds_config: dict[str, Any],
    total_steps: int,
    prepare: Callable[[Any], Any] | None = None,
) -> Any:
    """The policy on a DeepSpeed engine with AdamW and the cosine schedule. ``prepare``
    rewraps the loaded model (a LoRA adapter); only parameters that train get optimizer
    state."""
    import deepspeed
    from transformers import (
        AutoModelForCausalLM,
        get_constant_schedule_with_warmup,
        get_cosine_schedule_with_warmup,
    )

    keep_alive = None
    if cfg.engine.zero_stage == 3:
        # Makes from_pretrained partition the weights as they load (zero.Init) instead of
        # materialising the whole model on every rank.
        from transformers.integrations import HfDeepSpeedConfig

        keep_alive = HfDeepSpeedConfig(ds_config)
    model = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=torch.float32)
    if cfg.engine.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if prepare is not None:
        model = prepare(model)
    o = cfg.optim
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=o.lr, betas=o.betas, weight_decay=o.weight_decay, fused=o.fused,
    )  # fmt: skip
    warmup = o.warmup(total_steps)

    def scheduler(opt: torch.optim.Optimizer) -> Any:
        if o.lr_schedule == "constant":
            return get_constant_schedule_with_warmup(opt, warmup)
        return get_cosine_schedule_with_warmup(opt, warmup, total_steps)

    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config
    )
    del keep_alive
    if cfg.engine.zero_stage == 0 and engine.dp_world_size == 1:
        # One rank: the all-reduce is an identity, but DeepSpeed would still flatten every
        # gradient into a bucket and back (0.8 s of a 5 s step, 135M parameters, 2 CPU cores).
        engine.enable_backward_allreduce = False
    return engine


class ReferencePolicy:
    """The frozen reference π_ref (§3.2) for samples without reference log-probs: the initial
    policy, loaded on first use, evaluated without gradients."""

    def __init__(
        self, path: str, device: torch.device, dtype: torch.dtype, *, packing: bool = False
    ) -> None:
        self.path, self.device, self.dtype, self.packing = path, device, dtype, packing
        self.model: Any = None

    def fill(self, batch: RlmecBatch) -> RlmecBatch:
        if bool(batch.ref_known.all()):
            return batch
        if self.model is None:
            from transformers import AutoModelForCausalLM

            log.info("loading the frozen reference model from %s", self.path)
            self.model = AutoModelForCausalLM.from_pretrained(self.path, dtype=self.dtype)
            self.model.to(self.device).eval().requires_grad_(False)
        p = batch.prediction
        with torch.no_grad():
            if self.packing:
                computed = packed_logprobs(self.model, p.input_ids, p.attention_mask,
                                           p.position_ids)  # fmt: skip
            else:
                logits = self.model(input_ids=p.input_ids, attention_mask=p.attention_mask,
                                    position_ids=p.position_ids).logits  # fmt: skip
                computed = token_logprobs(logits, p.input_ids)
        known = batch.ref_known[:, None]
        ref = torch.where(known, batch.ref_logprobs, computed.to(batch.ref_logprobs.dtype))
        return replace(batch, ref_logprobs=ref, ref_known=torch.ones_like(batch.ref_known))


def policy_logprobs(
    model: Any, batch: RlmecBatch, passes: Passes = "both", *, packing: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass over predictions and regular sequences together (§5 uses two passes of
    the same policy; stacking them is the same computation), packed into one row without
    padding when ``packing``. Returns ``[batch, seq]`` each; an objective that reads one side
    only (``passes``) skips the other, whose log-probs come back as zeros (never read)."""
    p, r = batch.prediction, batch.regular
    sides = {"both": [p, r], "prediction": [p], "regular": [r]}[passes]
    ids = torch.cat([s.input_ids for s in sides])
    mask = torch.cat([s.attention_mask for s in sides])
    pos = torch.cat([s.position_ids for s in sides])
    if packing:
        lp = packed_logprobs(model, ids, mask, pos)
    else:
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits
        lp = token_logprobs(logits, ids)
    if passes == "prediction":
        return lp, torch.zeros_like(lp)
    if passes == "regular":
        return torch.zeros_like(lp), lp
    return lp[: batch.size], lp[batch.size :]


def micro_batch_loss(
    model: Any,
    batch: RlmecBatch,
    cfg: TrainConfig,
    counts: tuple[float, float] | None,
    response_tokens: float | None = None,
) -> RlmecLossOutput:
    """The configured objective's loss (``loss.objective``; RLMEC by default), plus
    ``loss.kl_coef`` times the KL to the reference log-probs over the step's
    ``response_tokens`` (None: this micro-batch's)."""
    objective = get_objective(cfg.loss.objective)
    pred_lp, reg_lp = policy_logprobs(model, batch, objective.passes,
                                      packing=cfg.engine.packing)  # fmt: skip
    out = objective.loss(pred_lp, reg_lp, batch, cfg.loss, counts)
    if not cfg.loss.kl_coef:
        return out
    p = batch.prediction
    kl = kl_penalty(pred_lp, batch.ref_logprobs, p.loss_mask, num_tokens=response_tokens)
    return replace(out, loss=out.loss + cfg.loss.kl_coef * kl, kl=kl.detach())


# --- one optimizer step -------------------------------------------------------------------


def train_step(
    engine: Any,
    micro: list[list[TrainSample]],
    cfg: TrainConfig,
    *,
    reference: ReferencePolicy,
    pad_id: int,
    world: int,
) -> StepSums:
    """Forward/backward over this rank's micro-batches and the optimizer step; the step's sums
    over all ranks."""
    device = engine.device
    batches = [collate(m, pad_id, cfg.data.padding_side).to(device) for m in micro]
    step_mode = cfg.loss.normalization == "step"
    objective = get_objective(cfg.loss.objective)
    counts, n_resp = None, None
    if step_mode:
        # The objective's normalisers (N_r and N_c for RLMEC) of the whole step, all ranks,
        # before any loss (so any split adds up).
        per_batch = [objective.counts(b, cfg.loss) for b in batches]
        local = [sum(c[0] for c in per_batch), sum(c[1] for c in per_batch)]
        n_r, n_c, n_resp = all_reduce_sum(
            [*local, sum(float(b.prediction.loss_mask.sum()) for b in batches)], device
        )
        counts = (n_r, n_c)
    sums = StepSums()
    for batch in batches:
        if objective.needs_reference_model:
            batch = reference.fill(batch)
        out = micro_batch_loss(engine, batch, cfg, counts, n_resp)
        if step_mode:
            # Each micro-batch loss is already its share of the step's loss: no division by
            # the accumulation steps, and × world to undo DeepSpeed's gradient averaging.
            engine.backward(out.loss * world, scale_wrt_gas=False)
        else:
            engine.backward(out.loss)  # paper: mean over accumulation steps and ranks
        engine.step()
        n_s, n_resp_mb = float(out.num_reward_tokens), float(batch.prediction.loss_mask.sum())
        sums += StepSums(
            loss=out.loss.item(), rl_loss=out.rl_loss.item(),
            imitation_loss=out.imitation_loss.item(),
            ratio_x_scored=out.mean_ratio.item() * n_s,
            clipped_x_scored=out.clip_fraction.item() * n_s,
            scored_tokens=n_s, reward_x_resp=out.mean_reward.item() * n_resp_mb,
            response_tokens=n_resp_mb, tokens=float(batch.num_tokens()),
            kl=0.0 if out.kl is None else out.kl.item(),
        )  # fmt: skip
    return sums.all_reduce(device)


def _metrics(
    step: int, sums: StepSums, cfg: TrainConfig, n_micro: int, lr: float, dt: float,
    online: dict[str, Any],
) -> StepMetrics:  # fmt: skip
    scale = 1.0 if cfg.loss.normalization == "step" else 1.0 / n_micro
    scored = max(sums.scored_tokens, 1.0)
    return StepMetrics(
        step=step,
        loss=sums.loss * scale,
        rl_loss=sums.rl_loss * scale,
        imitation_loss=sums.imitation_loss * scale,
        kl=sums.kl * scale,
        mean_ratio=sums.ratio_x_scored / scored,
        clip_fraction=sums.clipped_x_scored / scored,
        mean_reward=sums.reward_x_resp / max(sums.response_tokens, 1.0),
        lr=lr,
        tokens=int(sums.tokens),
        tokens_per_s=sums.tokens / dt if dt > 0 else 0.0,
        step_time_s=dt,
        **online,
    )


def _summary(m: StepMetrics) -> str:
    line = (
        f"step {m.step} loss {m.loss:.4f} (rl {m.rl_loss:.4f} im {m.imitation_loss:.4f}) "
        f"reward {m.mean_reward:.4f} ratio {m.mean_ratio:.4f} clip {m.clip_fraction:.3f} "
        f"lr {m.lr:.2e} tok/s {m.tokens_per_s:.0f}"
    )
    if m.policy_version or m.stale_batches:
        line += f" policy v{m.policy_version} stale batches {m.stale_batches}"
    return line


# --- the loop -----------------------------------------------------------------------------


def _online_counters(source: StepSource, version: int, device: torch.device) -> dict[str, int]:
    """The policy version and the source's counters summed over ranks (collective)."""
    counters = source.counters()
    if not counters:
        return {"policy_version": version}
    totals = all_reduce_sum([float(v) for v in counters.values()], device)
    return {"policy_version": version, **{k: int(v) for k, v in zip(counters, totals, strict=True)}}


def build_source(
    cfg: TrainConfig, tok: PolicyEncoder, rank: int, world: int, acc: int, device: torch.device
) -> StepSource:
    if cfg.data.mode == "offline":
        assert cfg.data.train_file is not None  # the config validator guarantees it
        return OfflineSource(
            prepare_samples(read_jsonl(cfg.data.train_file, tok), cfg.loss.objective),
            global_batch=cfg.optim.global_batch_size, micro_batch=cfg.optim.micro_batch_size,
            epochs=cfg.optim.epochs, max_steps=cfg.optim.max_steps, seed=cfg.seed,
            rank=rank, world=world,
        )  # fmt: skip
    assert cfg.data.online is not None
    return StreamSource(
        cfg.data.online, tok, per_rank=cfg.optim.micro_batch_size * acc,
        micro_batch=cfg.optim.micro_batch_size, rank=rank, device=device,
    )  # fmt: skip


def _checkpoint(engine: Any, cfg: TrainConfig, step: int, source: StepSource) -> None:
    """Save, then tell the source (which acknowledges what the checkpoint holds)."""
    state = {"step": step, "data": source.state()}
    save_checkpoint(engine, cfg.output_dir, step, state, keep=cfg.keep_checkpoints)
    failpoint("before_ack", step)
    source.after_checkpoint()
    failpoint("after_ack", step)


class _StopRequest:
    """SIGTERM (a scheduler's preemption, ``rlmec demo`` at its time limit) ends training
    after the step in flight, with the final checkpoint and ``final/`` written as at a normal
    end. All ranks stop at the same step (the flag is reduced with a max)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        log.warning("SIGTERM: stopping after this step, with a checkpoint and final/")
        self.requested = True

    def agreed(self, device: torch.device) -> bool:
        (total,) = all_reduce_sum([float(self.requested)], device)
        return total > 0

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def failpoint(name: str, step: int) -> None:
    """Crash-test hook: ``RLMEC_TRAINER_FAILPOINT=after_step:3`` kills the process with
    SIGKILL at that point (tests of exactly-once delivery across ``kill -9``)."""
    if os.environ.get("RLMEC_TRAINER_FAILPOINT") == f"{name}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


def train(cfg: TrainConfig) -> TrainResult:
    """Run the whole recipe; returns the metrics of the steps this call ran."""
    stop = _StopRequest()  # from the start: a SIGTERM during start-up must not kill mid-load
    rank, world, device = init_process_group()
    acc = cfg.accumulation_steps(world)
    torch.manual_seed(cfg.seed)
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    tokenizer = load_policy_tokenizer(cfg.model)
    encoder = PolicyEncoder(tokenizer, cfg.data.max_length)
    source = build_source(cfg, encoder, rank, world, acc, device)
    total = source.total_steps or cfg.optim.max_steps or 0
    engine = init_deepspeed(cfg, deepspeed_config(cfg, acc, world), total)
    dtype = torch.bfloat16 if cfg.engine.precision == "bf16" else torch.float32
    reference = ReferencePolicy(cfg.engine.reference_model or cfg.model, device, dtype,
                                packing=cfg.engine.packing)  # fmt: skip
    step = 0
    if cfg.resume and (state := load_checkpoint(engine, cfg.output_dir)) is not None:
        step = int(state["step"])
        source.load_state(state["data"])
    result, saved = TrainResult(steps=step), step
    publisher = PolicyPublisher(cfg, tokenizer, rank)
    version = publisher.start(step)
    if isinstance(source, StreamSource):
        source.policy_version = version
    reporter = Reporter(cfg.output_dir, cfg.log_every_steps, rank, step, total, "rlmec train")
    if isinstance(source, StreamSource):
        source.stop_requested = lambda: stop.requested  # don't wait out idle_timeout_s
    try:
        t_prev = time.perf_counter()
        while (
            step < total
            and not stop.agreed(device)
            and (micro := source.next_step(step)) is not None
        ):
            t0 = time.perf_counter()
            lr = float(engine.get_lr()[0])
            failpoint("before_step", step + 1)
            if isinstance(source, StreamSource):  # offline: prepared once, over the whole file
                micro = prepare_step(micro, cfg.loss.objective)
            sums = train_step(
                engine, micro, cfg, reference=reference, pad_id=tokenizer.pad_token_id, world=world
            )
            source.after_step()
            step += 1
            failpoint("after_step", step)
            t1 = time.perf_counter()
            if (published := publisher.after_step(engine, step)) is not None:
                version = published
                if isinstance(source, StreamSource):
                    source.policy_version = version
            t2 = time.perf_counter()
            online = {
                **_online_counters(source, version, device), "data_wait_s": t0 - t_prev,
                "publish_s": t2 - t1, "step_wall_s": t2 - t_prev, "time": time.time(),
            }  # fmt: skip
            m = _metrics(step, sums, cfg, acc * world, lr, t1 - t0, online)
            result.history.append(m)
            reporter.report(m, _summary(m), loss=f"{m.loss:.4f}", reward=f"{m.mean_reward:.3f}")
            if cfg.save_every_steps and step % cfg.save_every_steps == 0:
                _checkpoint(engine, cfg, step, source)
                saved = step
            t_prev = time.perf_counter()
    finally:
        reporter.close()
        publisher.close()
        stop.restore()
    if step > saved:
        _checkpoint(engine, cfg, step, source)
    result.steps = step
    result.final_dir = save_final(
        engine, tokenizer, Path(cfg.output_dir) / "final", zero_stage=cfg.engine.zero_stage
    )
    return result
