"""Durable rollout queue on Redis Streams: teams push, reward workers score, trainers pull.

The online loop (method §1, online variant), one team ``T``::

    team ──push──▶ rlmec:{T}:rollouts ──XREADGROUP "workers"──▶ reward worker ──score──▶
         ◀─429 when full                                        │ (Lua, atomic)
    trainer ◀──XREADGROUP "trainer"── rlmec:{T}:scored ◀──XADD + XACK rollouts + status
       └── optimizer step ──▶ ScoredBatchReader.ack()  (XACK: only now is the batch done)

Guarantees:

* Nothing is lost: an entry stays in its consumer group's pending list until it is acknowledged.
  A worker that dies mid-batch leaves it pending; after ``claim_idle_ms`` another worker takes it
  over with ``XAUTOCLAIM``. Writing the scored batch, acknowledging the rollout and setting the
  status happen in one Lua script, so a crash cannot separate them.
* A batch whose scoring fails (or kills its worker) ``max_attempts`` times goes to
  ``rlmec:{T}:dead`` with its reason and payload.
* Duplicates are harmless: the status hash makes a second scoring of the same batch a no-op, and
  the trainer's reader drops batch ids its group already acknowledged.
* Backpressure: a push is refused with :class:`QueueFullError` (HTTP 429 + ``Retry-After``) when
  the team already has ``max_queued_samples`` samples waiting to be scored, or
  ``max_scored_samples`` scored samples no trainer acknowledged yet. Two counters per team, kept
  by the same Lua scripts that move the entries, measure this. Streams are trimmed only below the
  oldest entry that some consumer group has not acknowledged, so unconsumed entries are never
  dropped (a consumer group that is abandoned stops trimming: delete it with ``XGROUP DESTROY``).

Keys put the team inside a Redis Cluster hash tag (``rlmec:{T}:...``) so one team's streams and
status hashes live in one slot and the Lua scripts may touch them together.

How a trainer resumes: :class:`ScoredBatchReader` first reads its consumer's own pending entries
(id ``0``: delivered before a crash or restart, never acknowledged), then new ones (id ``>``), and
takes over entries other trainers of its group left idle for ``claim_idle_ms``. Give a restarted
trainer the same ``consumer`` name to get its own entries back at once; ``claim_idle_ms`` must
exceed the longest step, or a slow step's batches are handed to another trainer of the group.

Modules: :mod:`.keys` (key names, team and batch id checks, group names), :mod:`.schemas`
(batches, statuses, limits, :class:`QueueFullError`), :mod:`.scripts` (the Lua scripts),
:mod:`.producer` (:class:`RolloutQueue`, :class:`AsyncRolloutQueue`), :mod:`.consumer` (the reward
worker's :class:`RolloutConsumer`, dead letters), :mod:`.reader` (the trainer's
:class:`ScoredBatchReader`) and :mod:`.puller` (:class:`AsyncScoredPuller`, the same for trainers
that pull over HTTP); everything public is re-exported here.
"""

from __future__ import annotations

from rlmec.shared.queue.consumer import DeadLetter, RolloutConsumer, RolloutDelivery, dead_letters
from rlmec.shared.queue.keys import (
    TEAMS_KEY,
    TRAINER_GROUP,
    WORKER_GROUP,
    BatchId,
    StreamKeys,
    TeamName,
    check_batch_id,
    check_team,
    keys_for,
    new_batch_id,
)
from rlmec.shared.queue.producer import AsyncRolloutQueue, RolloutQueue
from rlmec.shared.queue.puller import AsyncScoredPuller
from rlmec.shared.queue.reader import Delivery, ScoredBatchReader
from rlmec.shared.queue.schemas import (
    AckResult,
    BatchState,
    BatchStatus,
    PullResponse,
    PushResult,
    QueueDepth,
    QueueFullError,
    QueueLimits,
    RolloutBatch,
    ScoredBatch,
    ScoredDelivery,
)

__all__ = [
    "TEAMS_KEY",
    "TRAINER_GROUP",
    "WORKER_GROUP",
    "AckResult",
    "AsyncRolloutQueue",
    "AsyncScoredPuller",
    "BatchId",
    "BatchState",
    "BatchStatus",
    "DeadLetter",
    "Delivery",
    "PullResponse",
    "PushResult",
    "QueueDepth",
    "QueueFullError",
    "QueueLimits",
    "RolloutBatch",
    "RolloutConsumer",
    "RolloutDelivery",
    "RolloutQueue",
    "ScoredBatch",
    "ScoredBatchReader",
    "ScoredDelivery",
    "StreamKeys",
    "TeamName",
    "check_batch_id",
    "check_team",
    "dead_letters",
    "keys_for",
    "new_batch_id",
]
