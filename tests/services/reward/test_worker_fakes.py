"""Fast fake scorers the worker subprocesses load with ``--scorer`` (the queue is under test,
not the pipeline). Knobs: ``RLMEC_TEST_SCORE_DELAY`` seconds per batch; a sample whose
metadata has ``poison`` raises, one with ``crash`` kills the worker process."""

from __future__ import annotations

import asyncio
import os

from rlmec.services.reward.worker import instant_scorer
from rlmec.shared.queue import RolloutBatch
from rlmec.shared.schemas import ScoredSample


async def fake(batch: RolloutBatch) -> list[ScoredSample]:
    await asyncio.sleep(float(os.environ.get("RLMEC_TEST_SCORE_DELAY", "0")))
    for sample in batch.samples:
        meta = sample.metadata or {}
        if meta.get("crash"):
            os._exit(17)
        if meta.get("poison"):
            raise ValueError(f"poison sample {sample.id}")
    return await instant_scorer(batch)
