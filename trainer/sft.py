"""GRM supervised fine-tuning (docs/method.md §1 step 4), read top to bottom: ``rlmec grm train``.

``train_grm(config)``: join the process group → tokenizer and the ``rlmec data grm-sft``
examples (prompt ids with the tokenizer's special tokens, target ids by the platform's one
output tokenization, EOS appended) → the model on a DeepSpeed engine (the RLMEC recipe's
building blocks: ZeRO 0-3, bf16/fp32, AdamW, cosine with warmup) → resume from the newest
checkpoint → per optimizer step: count the step's target tokens (or examples, with
``data.loss_per: example``) on every rank, then per micro-batch the weighted negative
log-likelihood of the target tokens over that count, backward;
``engine.step()`` → log, checkpoint, held-out scores (``data.eval_file``) → ``final/`` as a
``save_pretrained`` directory that ``rlmec grm serve --model`` loads unchanged.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from rlmec.shared.jsonl import BadLine, read_input
from rlmec.shared.schemas import StrictModel
from rlmec.shared.tokenization import encode_output
from rlmec.trainer.checkpoint import load_checkpoint, save_checkpoint, save_final
from rlmec.trainer.config import EngineConfig, OptimConfig, PathStr, _Section
from rlmec.trainer.data import DataError, SequenceBatch, pad_rows, shuffled
from rlmec.trainer.distributed import all_reduce_sum, init_process_group
from rlmec.trainer.lora import LoraConfig, add_adapter, provenance, save_adapter
from rlmec.trainer.loss import sft_loss, token_logprobs
from rlmec.trainer.reporting import Reporter
from rlmec.trainer.train import deepspeed_config, init_deepspeed, load_policy_tokenizer

log = logging.getLogger("rlmec.trainer")


class SftDataConfig(_Section):
    train_file: PathStr = Field(description="JSONL of examples from `rlmec data grm-sft`.")
    max_length: int = Field(2048, ge=8, le=1_000_000, description="Prompt + target tokens.")
    loss_per: Literal["token", "example"] = Field(
        "token",
        description=(
            "token: the step's loss is the mean over its target tokens (the paper's). example: "
            "the mean over its examples, each the mean over its own target tokens, so a locate "
            "example's one decisive token is not drowned out by the long rewrites beside it."
        ),
    )
    eval_file: PathStr | None = Field(
        None,
        description=(
            "Held-out examples from `rlmec data grm-sft`: per kind, the target NLL and the "
            "share greedy decoding reproduces exactly (for locate: the locate accuracy)."
        ),
    )
    eval_examples: int = Field(128, ge=1, description="The first N examples of eval_file.")


class SftConfig(_Section):
    model: PathStr = Field(description="Local HF model directory of the base model.")
    output_dir: PathStr = Field(description="Checkpoints, TensorBoard logs and final/ go here.")
    seed: int = Field(42, description="Shuffling seed.")
    data: SftDataConfig
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=2e-5))
    engine: EngineConfig = Field(default_factory=EngineConfig)
    save_every_steps: int = Field(0, ge=0, description="Checkpoint period; 0 = at the end.")
    keep_checkpoints: int = Field(2, ge=1, description="Newest checkpoints kept on disk.")
    resume: bool = Field(True, description="Continue from the newest checkpoint in output_dir.")
    log_every_steps: int = Field(1, ge=1, description="Console/TensorBoard period.")
    eval_every_steps: int = Field(
        0, ge=0, description="Held-out evaluation period (data.eval_file); 0 = before and after."
    )
    lora: LoraConfig | None = Field(
        None,
        description="Train a LoRA adapter instead of the whole model (final/ holds only the "
        "adapter and its provenance; rlmec.trainer.lora).",
    )

    @model_validator(mode="after")
    def _lora_needs_whole_parameters(self) -> SftConfig:
        if self.lora is not None and self.engine.zero_stage == 3:
            raise ValueError(
                "lora with engine.zero_stage 3 is not supported (the adapter is small: ZeRO "
                "0-2 hold it whole); set engine.zero_stage to 0, 1 or 2"
            )
        return self


class SftExampleRow(StrictModel):
    """One line of ``rlmec data grm-sft`` output (only the fields training reads)."""

    id: str
    kind: str
    prompt: str
    target: str


@dataclass(frozen=True)
class SftSample:
    prompt_ids: tuple[int, ...]
    target_ids: tuple[int, ...]  # the loss covers these (EOS last)
    kind: str = "example"  # locate, rewrite or identity (held-out scores are per kind)


@dataclass(frozen=True)
class SftMetrics:
    step: int
    loss: float
    target_tokens: int
    lr: float
    tokens_per_s: float
    step_time_s: float


@dataclass
class SftResult:
    steps: int
    history: list[SftMetrics] = field(default_factory=list)
    final_dir: Path | None = None
    skipped: int = 0


def encode_example(tokenizer: Any, row: SftExampleRow, max_length: int) -> SftSample | None:
    """Token ids of one example; the target is cut to fit ``max_length`` (None if nothing of
    it fits)."""
    prompt = tuple(int(i) for i in tokenizer(row.prompt)["input_ids"])
    target = tuple(encode_output(tokenizer, row.target).token_ids)
    room = max_length - len(prompt)
    if room < 1:
        return None
    return SftSample(prompt, target[:room], row.kind)


def read_examples(path: str, tokenizer: Any, max_length: int) -> tuple[list[SftSample], int]:
    """The trainable examples of a file, and how many lines were skipped (each reported with
    its file and line)."""
    samples, skipped = [], 0
    for number, row in read_input(Path(path), SftExampleRow):
        sample = None if isinstance(row, BadLine) else encode_example(tokenizer, row, max_length)
        if sample is None:
            skipped += 1
            why = row if isinstance(row, BadLine) else f"{path} line {number}: prompt too long"
            log.warning("skipped %s", why)
            continue
        samples.append(sample)
    if not samples:
        raise DataError(f"{path} holds no trainable example; make one with `rlmec data grm-sft`")
    return samples, skipped


def collate_sft(samples: list[SftSample], pad_id: int, per_example: bool = False) -> SequenceBatch:
    """Right-padded ``[batch, seq]`` ids, attention, positions, the target mask and each
    target token's loss weight (``values``): 1, or ``1 / len(target)`` with ``per_example``,
    so that every example's weights sum to 1."""
    length = max(len(s.prompt_ids) + len(s.target_ids) for s in samples)
    rows = []
    for s in samples:
        weight = 1 / len(s.target_ids) if per_example else 1.0
        rows.append((s.prompt_ids, s.target_ids, [weight] * len(s.target_ids)))
    return pad_rows(rows, length, pad_id, "right")


def target_logits(engine: Any, b: SequenceBatch) -> tuple[torch.Tensor, int]:
    """``[batch, seq - first, vocab]`` logits from position ``first``, the one before the
    batch's first target token, and ``first``. The LM head and log-softmax over a 49k
    vocabulary on every prompt position were a fifth of a locate example's compute, for
    positions the loss never reads."""
    first = int(b.loss_mask.any(0).nonzero()[0]) - 1
    logits = engine(
        input_ids=b.input_ids, attention_mask=b.attention_mask, position_ids=b.position_ids,
        use_cache=False, logits_to_keep=b.input_ids.size(1) - first,
    ).logits  # fmt: skip
    return logits, first


def sft_step(
    engine: Any, micro: list[list[SftSample]], pad_id: int, world: int, per_example: bool = False
) -> list[float]:
    """One optimizer step; returns ``[summed loss, target tokens]`` over all ranks."""
    device = engine.device
    batches = [collate_sft(m, pad_id, per_example).to(device) for m in micro]
    local = [float(sum(b.values.sum() for b in batches))]  # examples, or target tokens
    local.append(float(sum(b.loss_mask.sum() for b in batches)))
    weight, n_tokens = all_reduce_sum(local, device)
    total = 0.0
    for b in batches:
        logits, first = target_logits(engine, b)
        lp = token_logprobs(logits, b.input_ids[:, first:])
        loss = sft_loss(lp, b.loss_mask[:, first:], weight, b.values[:, first:])
        # The micro-batch's share of the step's loss: × world undoes DeepSpeed's averaging.
        engine.backward(loss * world, scale_wrt_gas=False)
        engine.step()
        total += loss.item()
    (loss_sum,) = all_reduce_sum([total], device)
    return [loss_sum, n_tokens]


def _micro_batches(
    samples: list[SftSample], step: int, steps_per_epoch: int, cfg: SftConfig, rank: int, world: int
) -> list[list[SftSample]]:
    """Step ``step``'s micro-batches for this rank: the same on every run and after a resume."""
    epoch, k = divmod(step, steps_per_epoch)
    g = cfg.optim.global_batch_size
    batch = shuffled(samples, cfg.seed, epoch)[k * g : (k + 1) * g][rank::world]
    # Similar lengths share a micro-batch (less padding); the step's sum is the same.
    batch.sort(key=lambda s: len(s.prompt_ids) + len(s.target_ids))
    m = cfg.optim.micro_batch_size
    return [batch[i : i + m] for i in range(0, len(batch), m)]


def train_grm(cfg: SftConfig) -> SftResult:
    """Run the whole GRM SFT recipe; returns the metrics of the steps this call ran."""
    rank, world, _ = init_process_group()
    per_step = cfg.optim.micro_batch_size * world
    if cfg.optim.global_batch_size % per_step:
        raise DataError(
            f"optim.global_batch_size ({cfg.optim.global_batch_size}) is not a multiple of "
            f"micro_batch_size × ranks ({per_step}); change one of them"
        )
    torch.manual_seed(cfg.seed)
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    tokenizer = load_policy_tokenizer(cfg.model)
    samples, skipped = read_examples(cfg.data.train_file, tokenizer, cfg.data.max_length)
    steps_per_epoch = len(samples) // cfg.optim.global_batch_size
    if steps_per_epoch == 0:
        raise DataError(
            f"{cfg.data.train_file} has {len(samples)} examples, fewer than "
            f"optim.global_batch_size ({cfg.optim.global_batch_size}); lower it"
        )
    total = steps_per_epoch * cfg.optim.epochs
    total = min(total, cfg.optim.max_steps) if cfg.optim.max_steps else total
    acc = cfg.optim.global_batch_size // per_step
    from rlmec.trainer.sft_eval import evaluate_sft, summary_line  # it builds on this module

    held_out = []
    if cfg.data.eval_file is not None:
        held_out = read_examples(cfg.data.eval_file, tokenizer, cfg.data.max_length)[0]
        held_out = held_out[: cfg.data.eval_examples]
    adapter = partial(add_adapter, cfg=cfg.lora) if cfg.lora is not None else None
    engine = init_deepspeed(cfg, deepspeed_config(cfg, acc, world), total, prepare=adapter)
    step = 0
    if cfg.resume and (state := load_checkpoint(engine, cfg.output_dir)) is not None:
        step = int(state["step"])
    result = SftResult(steps=step, skipped=skipped)
    reporter = Reporter(cfg.output_dir, cfg.log_every_steps, rank, step, total, "rlmec grm train")
    saved = step

    def evaluate() -> None:
        scores = evaluate_sft(engine, held_out, cfg.optim.micro_batch_size,
                              tokenizer.pad_token_id, rank, world)  # fmt: skip
        reporter.report_eval(step, scores, summary_line(step, scores))

    try:
        if held_out and step == 0:
            evaluate()  # the base model's scores, the start of the learning curve
        while step < total:
            t0, lr = time.perf_counter(), float(engine.get_lr()[0])
            micro = _micro_batches(samples, step, steps_per_epoch, cfg, rank, world)
            loss, n_tokens = sft_step(
                engine, micro, tokenizer.pad_token_id, world, cfg.data.loss_per == "example"
            )
            step += 1
            dt = time.perf_counter() - t0
            tokens = sum(len(s.prompt_ids) + len(s.target_ids) for m in micro for s in m) * world
            m = SftMetrics(step, loss, int(n_tokens), lr, tokens / dt, dt)
            result.history.append(m)
            line = f"step {step} loss {loss:.4f} lr {lr:.2e} tok/s {m.tokens_per_s:.0f}"
            reporter.report(m, line, loss=f"{loss:.4f}")
            if cfg.save_every_steps and step % cfg.save_every_steps == 0:
                save_checkpoint(engine, cfg.output_dir, step, {"step": step},
                                keep=cfg.keep_checkpoints)  # fmt: skip
                saved = step
            every = cfg.eval_every_steps
            if held_out and ((every and step % every == 0) or step == total):
                evaluate()
    finally:
        reporter.close()
    if step > saved:
        save_checkpoint(engine, cfg.output_dir, step, {"step": step}, keep=cfg.keep_checkpoints)
    result.steps = step
    final = Path(cfg.output_dir) / "final"
    if cfg.lora is not None:
        made = provenance(cfg.model, cfg.data.train_file, cfg.model_dump(mode="json"), step)
        result.final_dir = save_adapter(engine, tokenizer, final, cfg.lora, made)
    else:
        result.final_dir = save_final(engine, tokenizer, final, zero_stage=cfg.engine.zero_stage)
    return result
