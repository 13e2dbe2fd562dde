"""Rewrite one ``## <heading>`` section of BENCHMARKS.md, leaving every other section as is."""

from __future__ import annotations

import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def replace_section(heading: str, body: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace the lines under ``## {heading}`` up to the next ``## `` heading with ``body``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    title = f"## {heading}"
    if title not in lines:
        raise ValueError(f"{path} has no '{title}' heading; add it before running the benchmark")
    start = lines.index(title) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    new = [*lines[:start], "", *body.strip("\n").splitlines(), "", *lines[end:]]
    path.write_text("\n".join(new).rstrip("\n") + "\n", encoding="utf-8")


def replace_subsection(heading: str, sub: str, body: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace ``### {sub}`` inside section ``## {heading}`` (up to the next ``### `` or ``## ``)
    with ``body``; a new subsection goes before the section's first ``### `` (older runs stay
    below it) or at its end."""
    lines = path.read_text(encoding="utf-8").splitlines()
    start = lines.index(f"## {heading}") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    title = f"### {sub}"
    new = [title, "", *body.strip("\n").splitlines(), ""]
    if title in lines[start:end]:
        at = lines.index(title, start)
        stop = next((i for i in range(at + 1, end) if lines[i].startswith(("### ", "## "))), end)
        lines[at:stop] = new
    else:
        at = next((i for i in range(start, end) if lines[i].startswith("### ")), end)
        lines[at:at] = new
    path.write_text("\n".join(lines).rstrip("\n") + "\n", encoding="utf-8")


def set_line(heading: str, prefix: str, line: str, path: Path = BENCHMARKS_MD) -> None:
    """Put ``line`` in section ``## {heading}``: in place of the line holding ``prefix``, else
    at the section's end (another benchmark's figure kept in that section)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    start = lines.index(f"## {heading}") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    hit = next((i for i in range(start, end) if prefix in lines[i]), None)
    if hit is None:
        while end > start and not lines[end - 1].strip():
            end -= 1
        lines[end:end] = ["", line]
    else:
        lines[hit] = line
    path.write_text("\n".join(lines).rstrip("\n") + "\n", encoding="utf-8")


def machine() -> str:
    """CPU model, core count and Python version, e.g. for a benchmark's header line."""
    cpu = platform.processor() or platform.machine()
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8")
        cpu = next(line.split(":", 1)[1].strip() for line in info.splitlines()
                   if line.startswith("model name"))  # fmt: skip
    except (OSError, StopIteration):
        pass
    cores = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()
    return f"{cpu}, {cores or '?'} cores, Python {platform.python_version()}"


def cpu_flags() -> str:
    """The CPU flags that decide the precision (bf16 is native with avx512_bf16 or amx_bf16,
    emulated and far slower without)."""
    info = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    flags = next(line for line in info.splitlines() if line.startswith("flags")).split()
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    return ", ".join(f for f in wanted if f in flags) or "none of avx2/avx512"


def stamp(command: str) -> str:
    """Machine, CPU flags, date and command, for a benchmark's one-line figure."""
    return f"{machine()}; CPU flags: {cpu_flags()}; {today()}; `{command}`"


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
