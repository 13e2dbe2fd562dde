"""Where an optimizer step's samples come from: a JSONL file (offline, the paper) or the team's
scored stream (online). Both hand each rank its ``accumulation_steps`` micro-batches per step
and keep a position that goes into the checkpoint."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch

from rlmec.shared.policy_version import policy_lag
from rlmec.trainer.config import ConfigError, OnlineConfig
from rlmec.trainer.data import DataError, PolicyEncoder, TrainSample, from_scored_sample, shuffled
from rlmec.trainer.distributed import all_gather_objects, all_reduce_min

if TYPE_CHECKING:
    from rlmec.shared.queue import Delivery

log = logging.getLogger("rlmec.trainer")

MicroBatches = list[list[TrainSample]]


class StepSource(Protocol):
    total_steps: int | None

    def next_step(self, step: int) -> MicroBatches | None:
        """This rank's micro-batches for optimizer step ``step``; ``None`` ends training."""

    def after_step(self) -> None:
        """The optimizer step that used the last micro-batches is done."""

    def after_checkpoint(self) -> None:
        """A checkpoint holding every finished step is on disk."""

    def state(self) -> dict[str, Any]:
        """Position to store in a checkpoint (collective: call on every rank)."""

    def load_state(self, state: dict[str, Any]) -> None: ...

    def counters(self) -> dict[str, int]:
        """Running totals this rank saw (e.g. stale batches skipped), summed over ranks."""


def _split(samples: list[TrainSample], rank: int, world: int, micro: int) -> MicroBatches:
    mine = samples[rank::world]
    return [mine[i : i + micro] for i in range(0, len(mine), micro)]


class OfflineSource:
    """Epochs over a fixed sample list, reshuffled per epoch with the seed. Step ``k`` always
    takes the same ``global_batch_size`` samples, so the position is just the step number; a
    last partial batch of an epoch is dropped (reshuffling picks other samples next epoch)."""

    def __init__(
        self,
        samples: list[TrainSample],
        *,
        global_batch: int,
        micro_batch: int,
        epochs: int,
        max_steps: int | None,
        seed: int,
        rank: int,
        world: int,
    ) -> None:
        self.steps_per_epoch = len(samples) // global_batch
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"the train file has {len(samples)} trainable samples, fewer than "
                f"optim.global_batch_size ({global_batch}); lower global_batch_size"
            )
        full = self.steps_per_epoch * epochs
        self.total_steps: int | None = min(full, max_steps) if max_steps else full
        self.samples, self.global_batch, self.micro = samples, global_batch, micro_batch
        self.seed, self.rank, self.world = seed, rank, world
        self._epoch: tuple[int, list[TrainSample]] | None = None

    def next_step(self, step: int) -> MicroBatches | None:
        if self.total_steps is not None and step >= self.total_steps:
            return None
        epoch, k = divmod(step, self.steps_per_epoch)
        if self._epoch is None or self._epoch[0] != epoch:
            self._epoch = (epoch, shuffled(self.samples, self.seed, epoch))
        batch = self._epoch[1][k * self.global_batch : (k + 1) * self.global_batch]
        return _split(batch, self.rank, self.world, self.micro)

    def after_step(self) -> None:
        return None

    def after_checkpoint(self) -> None:
        return None

    def state(self) -> dict[str, Any]:
        return {"kind": "offline", "samples": len(self.samples)}

    def counters(self) -> dict[str, int]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        if state.get("samples") not in (None, len(self.samples)):
            log.warning(
                "the checkpoint was trained on %s samples, the train file now has %d: the "
                "data order after the resume differs from an uninterrupted run",
                state.get("samples"),
                len(self.samples),
            )


@dataclass
class _Pending:
    delivery: Delivery
    remaining: int  # trainable samples of the batch not yet in a finished step
    skip: int = 0  # samples already applied before a crash (partially consumed batch)


class StreamSource:
    """Scored batches from the team's stream (``rlmec.shared.queue.ScoredBatchReader``).

    A batch counts as applied once the step holding its last sample is done; it is
    acknowledged then (``ack_after="step"``) or once a checkpoint holds that step
    (``"checkpoint"``: nothing is lost or applied twice across crashes). The checkpoint keeps
    the applied batch ids, and how many samples of a partly used batch were applied, so a
    batch re-delivered after a crash is skipped (or resumed where it was cut).

    ``policy_version`` is the trainer's newest published version (the online loop, see
    :mod:`rlmec.shared.policy_version`): a batch generated more than ``max_policy_lag`` versions
    before it is skipped, counted in :meth:`counters` and acknowledged at once.
    """

    MAX_REMEMBERED = 100_000

    def __init__(
        self, cfg: OnlineConfig, tok: PolicyEncoder, *, per_rank: int, micro_batch: int, rank: int,
        device: torch.device,
    ) -> None:  # fmt: skip
        from rlmec.shared.queue import ScoredBatchReader
        from rlmec.shared.redis_acl import credentials
        from rlmec.shared.redis_client import connect

        self.cfg, self.tok, self.need, self.micro, self.device = (
            cfg,
            tok,
            per_rank,
            micro_batch,
            device,
        )
        self.total_steps: int | None = None
        self.client = connect(
            cfg.redis_url, **credentials(cfg.redis_username, cfg.redis_password_file)
        )
        self.reader = ScoredBatchReader(
            self.client, cfg.team, group=cfg.group, consumer=f"{cfg.consumer}-{rank}",
            claim_idle_ms=cfg.claim_idle_ms,
        )  # fmt: skip
        self.buffer: deque[tuple[TrainSample, _Pending]] = deque()
        self.applied: OrderedDict[str, None] = OrderedDict()
        self.partial: dict[str, int] = {}  # batch id -> samples applied so far
        self.finished: list[_Pending] = []  # batches whose last sample is in the step
        self._in_step: dict[int, _Pending] = {}
        self.to_ack: list[Delivery] = []
        self.policy_version = 0
        self.stale = {"stale_batches": 0, "stale_samples": 0}
        self.lags = dict.fromkeys(("lag_0", "lag_1", "lag_2", "lag_3plus"), 0)
        self.stop_requested: Callable[[], bool] = lambda: False

    def _accept(self, delivery: Delivery) -> None:
        batch = delivery.batch
        if batch.batch_id in self.applied:
            self.reader.ack([delivery])  # applied before the checkpoint we resumed from
            return
        samples: list[TrainSample] = []
        lag = policy_lag(self.policy_version, batch.policy_version)
        if self.cfg.max_policy_lag is not None and lag > self.cfg.max_policy_lag:
            log.info(
                "batch %s: skipped, made by policy version %s, %d versions behind (max_policy_lag "
                "%d)", batch.batch_id, batch.policy_version, lag, self.cfg.max_policy_lag,
            )  # fmt: skip
            self.stale["stale_batches"] += 1
            self.stale["stale_samples"] += len(batch.results)
            self._done_untrained(_Pending(delivery, 0))
            return
        self.lags["lag_3plus" if lag >= 3 else f"lag_{lag}"] += 1
        for result in batch.results:
            try:
                sample = from_scored_sample(result, self.tok)
            except DataError as exc:
                log.warning("batch %s: skipping sample %r: %s", batch.batch_id, result.id, exc)
                continue
            if sample is not None:
                samples.append(sample)
        skip = self.partial.get(batch.batch_id, 0)
        pending = _Pending(delivery, len(samples) - skip, skip)
        if pending.remaining <= 0:
            self._done_untrained(pending)  # nothing (left) to train on
        for sample in samples[skip:]:
            self.buffer.append((sample, pending))

    def _done_untrained(self, pending: _Pending) -> None:
        """A batch with nothing (left) to train on: stale, no sample usable, or all of it
        applied in steps the checkpoint we resumed from holds. It is acknowledged now, in
        either ``ack_after`` mode: no step of this run depends on it. Held for a next step, it
        would keep its samples in the team's scored bound, and a bound full of such batches
        stops the actor from pushing the fresh batch that step waits for (a deadlock, seen in
        the demo once the trainer outran the actor)."""
        batch_id = pending.delivery.batch.batch_id
        self.partial.pop(batch_id, None)
        self.applied[batch_id] = None
        self.reader.ack([pending.delivery])

    def next_step(self, step: int) -> MicroBatches | None:
        deadline = time.monotonic() + self.cfg.idle_timeout_s
        while True:
            if len(self.buffer) < self.need:
                deliveries = self.reader.pull(max_batches=4, block_ms=self.cfg.block_ms)
                for d in deliveries:
                    self._accept(d)
                if deliveries:
                    deadline = time.monotonic() + self.cfg.idle_timeout_s
            waiting = time.monotonic() < deadline and not self.stop_requested()
            ready, alive = all_reduce_min(
                [float(len(self.buffer) >= self.need), float(waiting)], self.device
            )
            if ready:
                break
            if not alive:
                log.info("no scored batch for %.0f s: stopping", self.cfg.idle_timeout_s)
                return None
        taken = [self.buffer.popleft() for _ in range(self.need)]
        for _, pending in taken:
            pending.remaining -= 1
            pending.skip += 1
            if pending.remaining == 0:
                self.finished.append(pending)
        self._in_step = {id(p): p for _, p in taken}
        return [[s for s, _ in taken[i : i + self.micro]] for i in range(0, self.need, self.micro)]

    def after_step(self) -> None:
        for pending in self._in_step.values():
            self.partial[pending.delivery.batch.batch_id] = pending.skip
        for pending in self.finished:
            batch_id = pending.delivery.batch.batch_id
            self.partial.pop(batch_id, None)
            self.applied[batch_id] = None
            self.to_ack.append(pending.delivery)
        while len(self.applied) > self.MAX_REMEMBERED:
            self.applied.popitem(last=False)
        self.finished, self._in_step = [], {}
        if self.cfg.ack_after == "step":
            self._ack()

    def after_checkpoint(self) -> None:
        self._ack()

    def counters(self) -> dict[str, int]:
        return {**self.stale, **self.lags}

    def _ack(self) -> None:
        self.reader.ack(self.to_ack)
        self.to_ack = []

    def state(self) -> dict[str, Any]:
        gathered = all_gather_objects((list(self.applied), dict(self.partial)))
        applied = [b for ids, _ in gathered for b in ids][-self.MAX_REMEMBERED :]
        partial = {k: v for _, part in gathered for k, v in part.items()}
        return {"kind": "online", "applied_batch_ids": applied, "partial": partial}

    def load_state(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "online":
            return
        self.applied = OrderedDict.fromkeys(state.get("applied_batch_ids", []))
        self.partial = dict(state.get("partial", {}))
