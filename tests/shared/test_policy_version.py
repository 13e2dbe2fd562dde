"""The version-publishing helpers: atomic directory commits, pruning, lag."""

from __future__ import annotations

from pathlib import Path

from rlmec.shared.policy_version import (
    PolicyVersion,
    commit_dir,
    policy_lag,
    prune_versions,
    version_dir,
)


def test_commit_dir_replaces_a_version_left_by_a_crashed_run(tmp_path: Path) -> None:
    final = version_dir(tmp_path, 3)
    final.mkdir()
    (final / "stale.bin").write_text("old")
    tmp = tmp_path / "v000003.tmp"
    tmp.mkdir()
    (tmp / "config.json").write_text("{}")

    commit_dir(tmp, final)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["v000003"]
    assert sorted(p.name for p in final.iterdir()) == ["config.json"]


def test_prune_keeps_the_newest_versions_only(tmp_path: Path) -> None:
    for v in (1, 2, 3, 10):
        version_dir(tmp_path, v).mkdir()
    (tmp_path / "v000011.tmp").mkdir()  # being written: not a version yet, left alone
    prune_versions(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v000003", "v000010", "v000011.tmp"]


def test_lag_and_record_round_trip() -> None:
    assert policy_lag(5, 2) == 3
    assert policy_lag(5, None) == 0
    assert policy_lag(1, 3) == 0  # a batch from a newer version (a restarted trainer) is fresh
    record = PolicyVersion(4, "/runs/policy/v000004", 8, 1.5)
    assert PolicyVersion.from_json(record.to_json()) == record
    in_memory = PolicyVersion(4, "/runs/policy/v000004", 8, 1.5, "/dev/shm/rlmec/a/v000004")
    assert PolicyVersion.from_json(in_memory.to_json()) == in_memory
    # a record written before memory_path existed still reads
    old = b'{"version": 4, "path": "/runs/policy/v000004", "step": 8, "published_at": 1.5}'
    assert PolicyVersion.from_json(old) == record


def test_readable_path_prefers_shared_memory_then_disk(tmp_path: Path) -> None:
    disk, memory = tmp_path / "disk", tmp_path / "shm"
    record = PolicyVersion(1, str(disk), 1, 0.0, str(memory))
    assert record.readable_path() is None  # neither written (or both pruned)
    for where in (disk, memory):
        where.mkdir()
        (where / "config.json").write_text("{}")
    assert record.readable_path() == memory
    (memory / "config.json").unlink()  # another machine, or pruned: the disk copy
    assert record.readable_path() == disk
    assert PolicyVersion(1, str(disk), 1, 0.0).readable_path() == disk
