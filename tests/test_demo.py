"""The README's main job, ``rlmec demo``, end to end on the tiny model (transformers engine):
real Redis, GRM and reward services, a worker and the DeepSpeed trainer as processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rlmec.demo import build_samples
from rlmec.shared.answers import check_prediction, reference_answer


def test_demo_samples_are_half_wrong_with_rewrites_that_reach_the_reference() -> None:
    samples = build_samples(12)
    verdicts = []
    for s in samples:
        ref = reference_answer(s["reference_solution"], "math")
        assert ref is not None
        verdicts.append(check_prediction(s["prediction"], ref, "math").correct)
        if "rewrite" in s:
            assert check_prediction(s["rewrite"], ref, "math").correct
    assert verdicts == [True, False] * 6
    assert "rewrite" not in samples[1]  # the one left to the GRM itself


def test_demo_rejects_a_sample_count_out_of_range() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "rlmec", "demo", "--samples", "40"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "--samples (40) must be between 2 and 12" in proc.stderr


@pytest.mark.slow
@pytest.mark.integration
def test_demo_runs_the_whole_loop(tiny_model_dir: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable, "-m", "rlmec", "demo", "--model", str(tiny_model_dir),
            "--engine", "hf", "--samples", "6", "--train-steps", "1",
            "--workdir", str(tmp_path), "--startup-timeout", "120",
        ],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "2/2 cache hits" in out
    assert "batch demo-0: scored" in out
    assert "1 steps done" in out or "1 step done" in out
    assert (tmp_path / "train" / "final" / "config.json").is_file()
