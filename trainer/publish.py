"""The trainer's side of the online loop: publish the policy for rollout actors.

Every ``data.online.publish_every_steps`` optimizer steps, version ``step // K`` goes to
``<publish_dir>/v<NNNNNN>`` (written into a temporary directory, fsynced, renamed) and then to
the team's version record in Redis (:mod:`rlmec.shared.policy_version`). At start the record is
set to the version the run resumes at (version 0: the initial model itself), so actors left
over from another run come back to this one's weights.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import torch.distributed as dist

from rlmec.shared.policy_version import (
    PolicyVersion,
    commit_dir,
    prune_versions,
    version_dir,
    write_version,
)
from rlmec.trainer.checkpoint import save_final
from rlmec.trainer.config import TrainConfig

log = logging.getLogger("rlmec.trainer")


class PolicyPublisher:
    """Publishes versions on rank 0 (the weights gather runs on every rank under ZeRO-3)."""

    def __init__(self, cfg: TrainConfig, tokenizer: Any, rank: int) -> None:
        online = cfg.data.online
        self.every = online.publish_every_steps if online is not None else 0
        self.cfg, self.tokenizer, self.rank = cfg, tokenizer, rank
        self.root = Path(
            (online.publish_dir if online else None) or Path(cfg.output_dir) / "policy"
        ).resolve()
        self.client: Any = None
        if self.every and rank == 0:
            from rlmec.shared.redis_acl import credentials
            from rlmec.shared.redis_client import connect

            assert online is not None  # every > 0 only online
            self.team = online.team
            self.client = connect(
                online.redis_url, **credentials(online.redis_username, online.redis_password_file)
            )

    def version_at(self, step: int) -> int:
        return step // self.every if self.every else 0

    def start(self, step: int) -> int:
        """Point the team's record at the version ``step`` resumes from; returns it."""
        version = self.version_at(step)
        if self.client is not None:
            path = version_dir(self.root, version)
            if version == 0 or not (path / "config.json").is_file():
                path = Path(self.cfg.model).resolve()  # v0, or a version lost with its dir
            write_version(self.client, self.team, PolicyVersion(version, str(path), step,
                                                                 time.time()))  # fmt: skip
        return version

    def after_step(self, engine: Any, step: int) -> int | None:
        """Publish when ``step`` is due; returns the new version number (on every rank)."""
        if not self.every or step % self.every:
            return None
        version = self.version_at(step)
        final = version_dir(self.root, version)
        tmp = final.with_name(f"{final.name}.tmp")
        t0 = time.perf_counter()
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)  # a crash mid-publish left it half-written
        save_final(engine, self.tokenizer, tmp, zero_stage=self.cfg.engine.zero_stage)
        if self.rank == 0:
            commit_dir(tmp, final)
            write_version(self.client, self.team, PolicyVersion(version, str(final), step,
                                                                time.time()))  # fmt: skip
            assert self.cfg.data.online is not None
            prune_versions(self.root, self.cfg.data.online.keep_versions)
            log.info("published policy version %d (step %d) in %.1f s to %s", version, step,
                     time.perf_counter() - t0, final)  # fmt: skip
        dist.barrier()
        return version

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
