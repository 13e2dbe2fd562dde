"""The guard around DeepSpeed's op loading: a lock file left by a killed trainer is removed
instead of making every later trainer wait forever."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlmec.trainer.distributed import extension_load_guard


def test_a_stale_deepspeed_lock_is_removed_and_others_are_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    for name in ("deepspeed_shm_comm", "someone_elses_op"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "lock").write_text("")
    with extension_load_guard():
        assert not (tmp_path / "deepspeed_shm_comm" / "lock").exists()
    assert (tmp_path / "someone_elses_op" / "lock").exists()
