"""The ``rlmec`` command in a client-only install: a command whose extra is missing names the
extra to install (exit 2), instead of dying with a raw ModuleNotFoundError."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlmec.cli import AREAS, build_parser, subcommands
from rlmec.shared.settings_cli import deprecated_flags

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


# --- one CLI vocabulary (issue 30) ---------------------------------------------------------

# Spellings that the vocabulary replaced (--input, --output, --tasks, --url/--upstream, a key
# from --api-key-file or the environment): only a deprecated alias may still carry them.
REPLACED = {
    "--out": "--output", "--output-dir": "--output", "--records": "--input",
    "--problems": "--input", "--train-file": "--input", "--base-url": "--url or --upstream",
    "--api-key": "--api-key-file", "--task": "--tasks",
}  # fmt: skip
# `rlmec demo|up --task arith|gsm8k` picks which demo runs, not a list of task names.
ONE_TASK = {("demo",), ("up",)}


def _leaves() -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    out = []

    def walk(path: tuple[str, ...], parser: argparse.ArgumentParser) -> None:
        subs = subcommands(parser)
        if not subs or path == ("eval",):  # eval runs itself and has `compare` beside
            out.append((path, parser))
        for name, sub in subs.items():
            walk((*path, name), sub)

    for area in AREAS:
        walk((area,), subcommands(build_parser([area]))[area])
    return out


def test_every_flag_of_every_command_follows_the_vocabulary() -> None:
    leaves = _leaves()
    assert len(leaves) >= 25
    for path, parser in leaves:
        old = deprecated_flags(parser)
        for flag in (f for a in parser._actions for f in a.option_strings if f not in old):
            if flag == "--task" and path in ONE_TASK:
                continue
            assert flag not in REPLACED, f"rlmec {' '.join(path)} {flag}: use {REPLACED[flag]}"


def test_every_command_has_a_description_and_every_flag_a_help_with_its_default() -> None:
    for path, parser in _leaves():
        assert parser.description, f"rlmec {' '.join(path)} has no description"
        text = parser.format_help()
        for action in parser._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS:
                continue
            assert action.help, f"rlmec {' '.join(path)} {action.option_strings[0]}: no help"
            default = action.default
            if default is None or default is False or default == [] or default == "==SUPPRESS==":
                continue
            shown = parser._get_formatter()._get_help_string(action)  # type: ignore[attr-defined]
            assert "default" in shown, f"rlmec {' '.join(path)} {action.option_strings[0]}"
        assert "usage: rlmec" in text
