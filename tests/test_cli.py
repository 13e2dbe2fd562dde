"""The ``rlmec`` command in a client-only install: a command whose extra is missing names the
extra to install (exit 2), instead of dying with a raw ModuleNotFoundError."""

from __future__ import annotations

import subprocess
import sys

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
