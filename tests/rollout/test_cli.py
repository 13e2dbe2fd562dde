"""``rlmec rollout`` as a user runs it: flag errors, and kill -9 mid-run then a restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.rollout.test_actor import KEY, TEAM, queued_batches, reward_service


def _rollout(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "rlmec", "rollout", *args], text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--engine", "remote", "--upstream", "http://x"], "cannot take new weights"),
        (["--n", "0"], "--n (0) must be at least 1"),
        (["--input", "/nope.jsonl"], "--input /nope.jsonl does not exist"),
        (["--threshold", "2"], "--threshold 2.0: Input should be less than or equal to 1"),
    ],
)
def test_bad_flags_name_the_value_and_the_fix(
    flags: list[str], message: str, tiny_model_dir: Path
) -> None:
    base = ["--model", str(tiny_model_dir), "--reward-url", "http://127.0.0.1:9", "--team", "t"]
    proc = _rollout(*base, *flags, env={"RLMEC_API_KEY": "k"})
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and message in err


@pytest.mark.integration
def test_kill_9_then_restart_pushes_every_batch_exactly_once(
    tiny_model_dir: Path, redis_url: str, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    problems = tmp_path / "problems.jsonl"
    rows = [{"question": f"What is {i} + 1?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"}
            for i in range(5)]  # fmt: skip
    problems.write_text("".join(json.dumps(r) + "\n" for r in rows))
    flags = [
        "--model", str(tiny_model_dir), "--engine", "hf", "--team", TEAM, "--run-id", "k",
        "--input", str(problems), "--n", "2", "--problems-per-batch", "2",
        "--max-new-tokens", "8", "--workdir", str(work),
    ]  # fmt: skip
    with reward_service(redis_url) as url:
        proc = _rollout(*flags, "--reward-url", url, "--max-batches", "1000",
                        env={"RLMEC_API_KEY": KEY})  # fmt: skip
        metrics = work / "metrics.jsonl"
        deadline = time.monotonic() + 120
        while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 2):
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no batch pushed within 120 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        done = json.loads((work / "state.json").read_text())["next_batch"]
        again = _rollout(*flags, "--reward-url", url, "--max-batches", str(done + 2),
                         env={"RLMEC_API_KEY": KEY})  # fmt: skip
        out, err = again.communicate(timeout=180)
        assert again.returncode == 0, err[-3000:]

    ids = [b.batch_id for b in queued_batches(redis_url)]
    assert ids == [f"k-{i:08d}" for i in range(done + 2)]  # none lost, none twice
    assert "pushed 2 batch(es)" in out or "pushed 3 batch(es)" in out
