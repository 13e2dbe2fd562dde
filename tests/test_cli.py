"""The ``rlmec`` command in a client-only install: a command whose extra is missing names the
extra to install (exit 2), instead of dying with a raw ModuleNotFoundError."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Hide a package the way a client-only install lacks it (None in sys.modules makes every
# import of it raise ModuleNotFoundError with that name), then run the command.
_RUN = """
import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None
from rlmec.cli import main
sys.exit(main(sys.argv[2:]))
"""


def rlmec_without(hidden: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _RUN, hidden, *argv], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("hidden", "argv", "extra"),
    [
        ("uvicorn,fastapi", ["reward", "serve", "--grm-url", "http://127.0.0.1:9"], "serve"),
        ("uvicorn,fastapi", ["grm", "serve", "--model", "/nonexistent"], "serve"),
    ],
)
def test_a_missing_extra_is_named(hidden: str, argv: list[str], extra: str) -> None:
    run = rlmec_without(hidden, *argv)
    assert run.returncode == 2, run.stderr
    assert f"pip install 'rlmec[{extra}]'" in run.stderr
    assert "Traceback" not in run.stderr


def test_client_commands_need_no_extra() -> None:
    run = rlmec_without("uvicorn,fastapi,torch,vllm,deepspeed", "client", "health", "--url",
                        "http://127.0.0.1:9")  # fmt: skip
    assert run.returncode == 1 and "rlmec client: error" in run.stderr
    assert "pip install" not in run.stderr


def test_version() -> None:
    run = subprocess.run([sys.executable, "-m", "rlmec", "--version"], capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0 and run.stdout.startswith("rlmec 0.")


def test_a_missing_data_file_is_one_line(tmp_path: Path) -> None:
    """A wheel install has no datasets/ folder: the fix, not a traceback."""
    env = {**os.environ, "RLMEC_DATA_DIR": str(tmp_path / "none")}
    run = subprocess.run([sys.executable, "-m", "rlmec", "data", "synth", "--limit", "2",
                          "--output", str(tmp_path / "out.jsonl")], capture_output=True,
                         text=True, timeout=120, env=env)  # fmt: skip
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.startswith("rlmec data: data file 'gsm8k_train' not found")
    assert "RLMEC_DATA_DIR" in run.stderr and len(run.stderr.strip().splitlines()) == 1
