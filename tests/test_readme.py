"""Every command and flag the README and docs/ show exists, in its current spelling: ``rlmec``
subcommands and their flags are looked up in the real parsers, ``python -m`` modules are asked
for ``--help`` (issue 30)."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rlmec.cli import build_parser
from rlmec.shared.settings_cli import deprecated_flags

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")))
_FENCE = re.compile(r"```(?:bash|sh)?\n(.*?)```", re.S)
_INLINE = re.compile(r"`((?:\.venv/bin/)?rlmec [^`]+|python -m [^`]+)`")
_RLMEC = re.compile(r"(?:^|[\s\"'(])(?:\.venv/bin/)?rlmec((?:\s+[^\s\"'`)|;&#]+)*)")
_MODULE = re.compile(r"python -m ([\w.]+)((?:\s+[^\s\"'`)|;&#]+)*)")


def _command_lines(page: str) -> list[str]:
    """The shell lines of the page's code blocks (continuations joined, comments dropped) and
    its inline code that runs a command."""
    text = (ROOT / page).read_text(encoding="utf-8")
    lines = []
    for block in _FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            lines.append(line.split(" # ")[0])
    return lines + _INLINE.findall(text)


def _rlmec_calls(lines: list[str]) -> list[tuple[list[str], list[str]]]:
    """(subcommand words, flags) of every ``rlmec`` invocation."""
    calls = []
    for line in lines:
        for match in _RLMEC.finditer(line):
            tokens = match.group(1).split()
            words = []
            for tok in tokens:
                if tok.startswith("-") or not re.fullmatch(r"[a-z][\w-]*", tok):
                    break
                words.append(tok)
            flags = [t.split("=")[0] for t in tokens if t.startswith("--")]
            calls.append((words, flags))
    return calls


def _subparser(words: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The deepest parser ``words`` name, and the words that named it."""
    parser, used = build_parser(words), []
    for word in words:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or word not in subs[0].choices:
            break
        parser, used = subs[0].choices[word], [*used, word]
    return parser, used


def test_the_pages_show_rlmec_commands() -> None:
    calls = [c for page in PAGES for c in _rlmec_calls(_command_lines(page))]
    assert len(calls) >= 5 and any(words[:1] == ["up"] for words, _ in calls)


@pytest.mark.parametrize("page", PAGES)
def test_every_rlmec_command_and_flag_shown_exists(page: str) -> None:
    for words, flags in _rlmec_calls(_command_lines(page)):
        if not words:  # `rlmec --version`, `rlmec --help`
            assert set(flags) <= {"--version", "--help"}, flags
            continue
        parser, used = _subparser(words)
        assert used, f"{page}: `rlmec {' '.join(words)}`: no such command"
        for flag in flags:
            assert flag in parser._option_string_actions, (
                f"{page}: `rlmec {' '.join(used)}` has no flag {flag}"
            )
            assert flag not in deprecated_flags(parser), (
                f"{page}: `rlmec {' '.join(used)}` {flag} is a deprecated spelling"
            )


@pytest.mark.parametrize("page", PAGES)
def test_every_python_module_shown_runs_and_takes_its_flags(page: str) -> None:
    for line in _command_lines(page):
        for module, rest in _MODULE.findall(line):
            if not module.startswith(("rlmec", "benchmarks")):
                continue  # another project's command (OpenRLHF, veRL): its own flags
            run = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                                 text=True, timeout=120, cwd=ROOT)  # fmt: skip
            assert run.returncode == 0, f"{page}: python -m {module}: {run.stderr[-500:]}"
            for flag in (t.split("=")[0] for t in rest.split() if t.startswith("--")):
                assert flag in run.stdout, f"{page}: python -m {module} has no flag {flag}"


def test_a_wrong_command_or_flag_would_be_caught() -> None:
    """The checks above can fail: a made-up flag and a made-up command are found as such."""
    [(words, flags)] = _rlmec_calls(['eval "$(.venv/bin/rlmec up --envv)"'])
    parser, used = _subparser(words)
    assert used == ["up"] and "--env" in parser._option_string_actions
    assert flags == ["--envv"] and "--envv" not in parser._option_string_actions
    assert _subparser(["grm", "trian"])[1] == ["grm"]
    assert _subparser(["upp"])[1] == []
