"""The README's main job, ``rlmec demo``, end to end on the tiny model (transformers engine):
real Redis, GRM and reward services, a worker and the DeepSpeed trainer as processes."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from rlmec.loop.demo import build_arith_samples, build_samples
from rlmec.loop.stack import group_alive
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


def test_arith_demo_samples_have_one_slip_in_their_last_step() -> None:
    from rlmec.data.arith_teacher import correct

    samples = build_arith_samples(6)
    for i, s in enumerate(samples):
        ref = reference_answer(s["reference_solution"], "math")
        assert ref is not None
        assert check_prediction(s["prediction"], ref, "math").correct == (i % 2 == 0)
        if i % 2:  # the exact teacher places the slip in the last equation
            fix = correct(s["question"], s["prediction"], ref)
            assert fix.step == s["prediction"].count("\n") - 1
            assert fix.rewrite == s["reference_solution"]


class _StubStack:
    """Records what Redis would start on; starts nothing."""

    def __init__(self) -> None:
        self.redis_files: list[str] = []

    def start_redis(self, data_dir: Path) -> str:
        self.redis_files = sorted(p.name for p in data_dir.iterdir()) if data_dir.exists() else []
        return "redis://127.0.0.1:1/0"

    def start(self, *_: object, **__: object) -> str:
        return "log"

    def wait_ready(self, *_: object, **__: object) -> None:
        return None


@pytest.mark.parametrize(("fresh", "kept"), [(True, []), (False, ["appendonlydir"])])
def test_demo_starts_redis_empty_and_up_keeps_its_data(
    tmp_path: Path, fresh: bool, kept: list[str]
) -> None:
    import argparse

    from rlmec.loop.services import start_services

    (tmp_path / "redis" / "appendonlydir").mkdir(parents=True)  # an earlier up's data
    args = argparse.Namespace(workdir=tmp_path, engine="hf", startup_timeout=1.0)
    stack = _StubStack()
    start_services(stack, args, tmp_path, tmp_path, {"RLMEC_API_KEY": "k"}, fresh_redis=fresh)
    assert stack.redis_files == kept


def test_up_keeps_the_key_and_prints_the_export_line_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rlmec.cli import main
    from rlmec.loop.up import STATE_FILE, team_key

    first = team_key(tmp_path, rotate=False)
    assert team_key(tmp_path, rotate=False) == first != team_key(tmp_path, rotate=True)
    assert main(["up", "--workdir", str(tmp_path), "--env"]) == 2
    assert "nothing is up" in capsys.readouterr().err
    state = {"urls": {"reward": "http://127.0.0.1:8002", "grm": "http://127.0.0.1:8001"},
             "api_key": "rlmec-k"}  # fmt: skip
    (tmp_path / STATE_FILE).write_text(json.dumps(state))
    assert main(["up", "--workdir", str(tmp_path), "--env"]) == 0
    assert capsys.readouterr().out.strip() == (
        "export RLMEC_URL=http://127.0.0.1:8002 RLMEC_GRM_URL=http://127.0.0.1:8001 "
        "RLMEC_API_KEY=rlmec-k"
    )


def test_demo_rejects_a_sample_count_out_of_range() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "rlmec", "demo", "--samples", "40"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "--samples (40) must be between 0 and 12" in proc.stderr


def _demo(tiny_model_dir: Path, workdir: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "rlmec", "demo", "--model", str(tiny_model_dir), "--engine", "hf",
        "--max-new-tokens", "16", "--workdir", str(workdir), "--startup-timeout", "120", *extra,
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.integration
def test_demo_runs_the_whole_loop(tiny_model_dir: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        _demo(tiny_model_dir, tmp_path, "--samples", "2", "--steps", "5", "--eval-limit", "4",
              "--minutes", "8"),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "2/2 cache hits" in out
    assert "=== rlmec online loop: summary ===" in out
    assert "optimizer steps: 5;" in out and "policy version 1" in out
    assert "held-out accuracy, before (A) and after (B) training:" in out
    assert (tmp_path / "train" / "final" / "config.json").is_file()
    assert (tmp_path / "train" / "policy" / "v000001" / "config.json").is_file()
    assert (tmp_path / "loop.png").stat().st_size > 10_000
    steps = [json.loads(x) for x in (tmp_path / "train/metrics.jsonl").read_text().splitlines()]
    assert [s["policy_version"] for s in steps] == [0, 0, 0, 1, 1]  # published every 4 steps
    batches = (tmp_path / "rollout/metrics.jsonl").read_text().splitlines()
    assert len(batches) >= 2  # 5 steps x 2 samples from 8-sample batches
    loop = json.loads((tmp_path / "loop.json").read_text())
    assert loop["samples"] >= 10 and loop["scored_batches"]
    assert json.loads((tmp_path / "logs/pids.json").read_text()) == {}  # everything stopped


@pytest.mark.slow
@pytest.mark.integration
def test_ctrl_c_stops_every_process(tiny_model_dir: Path, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        _demo(tiny_model_dir, tmp_path, "--samples", "0", "--eval-limit", "0", "--minutes", "8"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    pids_file = tmp_path / "logs" / "pids.json"
    deadline = time.monotonic() + 300
    pids: dict[str, int] = {}
    while not {"actor", "trainer", "grm", "reward", "worker", "redis"} <= set(pids):
        assert proc.poll() is None, proc.communicate()[0][-4000:]
        assert time.monotonic() < deadline, "the loop did not start within 300 s"
        time.sleep(0.2)
        try:
            pids = json.loads(pids_file.read_text()) if pids_file.is_file() else {}
        except json.JSONDecodeError:
            continue
    time.sleep(3)  # the loop is turning
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-4000:]
    assert "interrupted: stopping every process" in out
    left = [name for name, pid in pids.items() if group_alive(pid)]
    assert left == [], f"still running after Ctrl-C: {left}"


@pytest.mark.slow
@pytest.mark.integration
def test_up_leaves_the_services_running_and_down_stops_them(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    import httpx

    from rlmec.loop.stack import port_or_free
    from rlmec.loop.up import REWARD_PORT

    base = [sys.executable, "-m", "rlmec"]
    stable = port_or_free(REWARD_PORT)[1]  # 8002 unless something here listens on it
    proc = subprocess.run(
        [*base, "up", "--model", str(tiny_model_dir), "--engine", "hf", "--workdir",
         str(tmp_path), "--startup-timeout", "120", "--allow-anonymous"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    state = json.loads((tmp_path / "state.json").read_text())
    assert (state["urls"]["reward"] == f"http://127.0.0.1:{REWARD_PORT}") == stable
    assert (tmp_path / "state.json").stat().st_mode & 0o077 == 0  # it holds the key
    assert set(state["pids"]) == {"redis", "grm", "reward", "worker"}
    assert f"RLMEC_API_KEY={state['api_key']}" in proc.stdout
    try:
        reward = state["urls"]["reward"]
        assert httpx.get(f"{reward}/ready", timeout=10).status_code == 200
        usage = httpx.get(f"{reward}/v1/usage", timeout=10,
                          headers={"Authorization": f"Bearer {state['api_key']}"})  # fmt: skip
        assert usage.status_code == 200, usage.text
        first = _readme_first_call(tmp_path, state)
        assert first.returncode == 0, first.stderr[-2000:]
        assert first.stdout.split()[0] in ("scored", "unscored"), first.stdout
        keyless = httpx.get(f"{reward}/v1/usage", timeout=10)  # --allow-anonymous
        assert keyless.status_code == 200 and keyless.json()["team"] == "anonymous", keyless.text
        again = subprocess.run([*base, "up", "--workdir", str(tmp_path)],
                               capture_output=True, text=True, timeout=120)  # fmt: skip
        assert again.returncode == 2 and "already up" in again.stderr
    finally:
        down = subprocess.run([*base, "down", "--workdir", str(tmp_path)],
                              capture_output=True, text=True, timeout=180)  # fmt: skip
    assert down.returncode == 0, down.stderr
    assert [name for name, pid in state["pids"].items() if group_alive(pid)] == []
    assert not (tmp_path / "state.json").exists()


def _readme_first_call(tmp_path: Path, state: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """The README's ``first_call.py``, as printed, against the stack ``rlmec up`` started (with
    the environment ``rlmec up --env`` gives)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = readme[readme.index("`first_call.py`, one scored call") :]
    code = code[code.index("```python\n") + len("```python\n") :]
    script = tmp_path / "first_call.py"
    script.write_text(code[: code.index("```")])
    env = {**os.environ, "RLMEC_URL": state["urls"]["reward"], "RLMEC_API_KEY": state["api_key"]}
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300, env=env)  # fmt: skip


def test_making_the_models_is_not_counted_in_the_budget(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The warm start and the GRM merge (minutes on a new machine) happen before the clock
    of --minutes starts, as the demo says when it makes them."""
    from rlmec.loop import demo

    made: list[float] = []

    def slow_models(args: Any) -> tuple[Path, Path]:
        time.sleep(0.2)  # stands for the minutes of the warm start
        made.append(time.monotonic())
        return tmp_path / "policy", tmp_path / "grm"

    clocks: list[Any] = []

    def stop_at_first_eval(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt  # the clock exists by now; end the demo here

    monkeypatch.setattr(demo, "resolve_models", slow_models)
    monkeypatch.setattr(demo, "_start_eval", stop_at_first_eval)
    monkeypatch.setattr(demo, "_stop_on_signals", lambda: None)

    class Clock(demo._Clock):
        def __init__(self, *a: Any, **k: Any) -> None:
            super().__init__(*a, **k)
            clocks.append(self)

    monkeypatch.setattr(demo, "_Clock", Clock)
    parser = argparse.ArgumentParser()
    demo.add_commands(parser)
    args = parser.parse_args(["--workdir", str(tmp_path / "work")])
    assert demo.run(args) == 130
    assert clocks and clocks[0].started >= made[0]
