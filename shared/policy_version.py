"""How the trainer tells rollout actors which weights to sample from (the online loop).

Every ``publish_every_steps`` optimizer steps the trainer writes the policy as a
``save_pretrained`` directory ``<publish_dir>/v<NNNNNN>``: into a temporary directory first,
fsynced, then renamed (a rename is atomic on one filesystem, so a reader sees no directory or a
whole one). Only then does it set the team's version record, ``rlmec:{<team>}:policy``, a JSON
:class:`PolicyVersion`. Actors read the record between batches and reload when the number grew;
each batch they push carries the version that produced it, and the trainer skips batches more
than ``max_policy_lag`` versions behind its own (:func:`policy_lag`).

Version ``v`` is the policy after optimizer step ``v * publish_every_steps``; version 0 is the
initial model (never published: every actor starts from it). Standard library only.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rlmec.shared.queue.keys import keys_for

VERSION_DIR_PREFIX = "v"


@dataclass(frozen=True)
class PolicyVersion:
    version: int
    path: str  # the save_pretrained directory, absolute
    step: int  # the optimizer step whose weights these are
    published_at: float
    # The same directory in shared memory (tmpfs) on the trainer's machine, or None: an actor
    # there loads it without a disk round trip; elsewhere (or once pruned) it reads ``path``.
    memory_path: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> PolicyVersion:
        data = json.loads(raw)
        memory = data.get("memory_path")  # records written before it have none
        return cls(int(data["version"]), str(data["path"]), int(data["step"]),
                   float(data["published_at"]),
                   None if memory is None else str(memory))  # fmt: skip

    def readable_path(self) -> Path | None:
        """Where to load this version from here: the shared-memory copy when this machine has
        it, else the disk copy, else None (pruned, or another machine's path)."""
        for where in (self.memory_path, self.path):
            if where and (Path(where) / "config.json").is_file():
                return Path(where)
        return None


def policy_key(team: str) -> str:
    return keys_for(team).policy


def read_version(client: Any, team: str) -> PolicyVersion | None:
    """The team's newest published version (a ``redis.Redis`` client), or None."""
    raw = client.get(policy_key(team))
    return None if raw is None else PolicyVersion.from_json(raw)


def write_version(client: Any, team: str, version: PolicyVersion) -> None:
    client.set(policy_key(team), version.to_json())


def version_dir(root: str | Path, version: int) -> Path:
    return Path(root) / f"{VERSION_DIR_PREFIX}{version:06d}"


def policy_lag(current: int, produced_by: int | None) -> int:
    """How many versions behind the trainer's ``current`` a batch is (0 when unversioned)."""
    return 0 if produced_by is None else max(0, current - produced_by)


def fsync_tree(root: Path) -> None:
    """Flush every file under ``root`` and the directory itself to disk."""
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(root)


def commit_dir(tmp: Path, final: Path) -> None:
    """Make ``tmp`` (fully written) visible as ``final`` in one rename. A ``final`` left by a
    run that crashed after publishing (the same version is made again on resume) is moved
    aside first and removed after, so readers never see a partial directory."""
    fsync_tree(tmp)
    old = None
    if final.exists():
        old = final.with_name(f"{final.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        os.rename(final, old)
    os.rename(tmp, final)
    _fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def prune_versions(root: str | Path, keep: int) -> None:
    """Remove all but the newest ``keep`` version directories (and leftover temporaries)."""
    root = Path(root)
    dirs = sorted(p for p in root.glob(f"{VERSION_DIR_PREFIX}*") if p.is_dir())
    finished = [p for p in dirs if p.name[len(VERSION_DIR_PREFIX) :].isdigit()]
    for old in finished[:-keep] if keep > 0 else finished:
        shutil.rmtree(old, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
