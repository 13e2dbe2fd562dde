"""The trainer's side of the online loop: publish the policy for rollout actors.

Every ``data.online.publish_every_steps`` optimizer steps, version ``step // K`` goes to
``<publish_dir>/v<NNNNNN>`` (written into a temporary directory, fsynced, renamed) and then to
the team's version record in Redis (:mod:`rlmec.shared.policy_version`). With ``memory_dir``
(default ``/dev/shm/rlmec``) the version is first written to shared memory and the record
names that copy too: an actor on this machine loads it without a disk round trip (issue 32),
while the disk copy serves actors elsewhere, resume, and the fallback. At start the record is
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
        self.memory = memory_root(cfg) if self.every else None
        # Room a version needs: twice the start model's weight files (fp32 saves of a bf16
        # checkpoint double; a container's /dev/shm is often only 64 MiB).
        self.memory_need = 2 * weight_bytes(Path(cfg.model)) if self.memory else 0
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
        memory = None
        if self.memory is not None and has_room(self.memory, self.memory_need):
            memory = version_dir(self.memory, version)
        # Written once, to shared memory when there is one (then copied to disk: cheaper
        # than gathering and serialising the weights twice).
        first = tmp if memory is None else memory.with_name(f"{memory.name}.tmp")
        t0 = time.perf_counter()
        if self.rank == 0:
            for stale in {tmp, first}:  # a crash mid-publish left it half-written
                shutil.rmtree(stale, ignore_errors=True)
        save_final(engine, self.tokenizer, first, zero_stage=self.cfg.engine.zero_stage)
        if self.rank == 0:
            if memory is not None:
                shutil.copytree(first, tmp)
                commit_dir(first, memory)  # fsync is free on tmpfs; the rename is what counts
            commit_dir(tmp, final)
            write_version(self.client, self.team, PolicyVersion(
                version, str(final), step, time.time(), None if memory is None else str(memory)
            ))  # fmt: skip
            assert self.cfg.data.online is not None
            keep = self.cfg.data.online.keep_versions
            for root in (self.root, self.memory):
                if root is not None:
                    prune_versions(root, keep)
            log.info("published policy version %d (step %d) in %.1f s to %s", version, step,
                     time.perf_counter() - t0, final)  # fmt: skip
        dist.barrier()
        return version

    def close(self) -> None:
        """The shared-memory copies go with the trainer (they hold RAM); actors then read the
        disk copies. A killed trainer leaves them: the next run of the team prunes them."""
        if self.memory is not None and self.rank == 0:
            shutil.rmtree(self.memory, ignore_errors=True)
        if self.client is not None:
            self.client.close()


def memory_root(cfg: TrainConfig) -> Path | None:
    """``<memory_dir>/<team>``, or None when off or the machine has no such filesystem (the
    parent of ``memory_dir``, e.g. ``/dev/shm``, must exist: it is never created)."""
    online = cfg.data.online
    if online is None or online.memory_dir is None:
        return None
    root = Path(online.memory_dir)
    if not root.parent.is_dir():
        log.warning("memory_dir %s: %s does not exist; publishing to disk only", root,
                    root.parent)  # fmt: skip
        return None
    return root / online.team


def weight_bytes(model_dir: Path) -> int:
    return sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))


def has_room(root: Path, need: int) -> bool:
    """Whether the filesystem of ``root`` (or its nearest existing parent) has ``need`` bytes
    free; when not, this version goes to disk only (and the actors read it there)."""
    where = root
    while not where.exists():
        where = where.parent
    free = shutil.disk_usage(where).free
    if free < need:
        log.warning("memory_dir %s has %d MiB free, a version needs about %d MiB: this one is "
                    "published to disk only", root, free >> 20, need >> 20)  # fmt: skip
    return free >= need
