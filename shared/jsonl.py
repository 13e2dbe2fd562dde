"""JSONL files of long jobs: resumable outputs and forgiving inputs.

Outputs (``rlmec eval``'s samples, every ``rlmec data`` step) are appended chunk by chunk and
fsynced, so a killed run loses at most the chunk in flight; on restart :func:`open_output`
drops a torn last line and returns the rows already written, which the job then skips.
Inputs are read line by line: a blank, malformed or invalid line is reported with its file and
line number and skipped, and the rest of the file is used.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows an output file holds; a torn last line (a kill mid-write) is dropped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # the run was killed mid-write: that row is made again
    return rows


def open_output(path: Path) -> list[dict[str, Any]]:
    """Prepare ``path`` for appending (created, torn tail removed); the rows already there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = read_rows(path)
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) != len(rows) or (text and not text.endswith("\n")):
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return rows


def append_rows(path: Path, rows: Sequence[dict[str, Any] | BaseModel]) -> None:
    """Append and fsync: once this returns, the rows survive a kill."""
    with path.open("a", encoding="utf-8") as f:
        for row in rows:
            data = row.model_dump(mode="json") if isinstance(row, BaseModel) else row
            f.write(json.dumps(data, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


@dataclass(frozen=True)
class BadLine:
    """An input line that could not be used, and why (names the file and the line)."""

    path: Path
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path} line {self.line}: {self.message}"


def read_input(path: Path, model: type[M]) -> Iterator[tuple[int, M | BadLine]]:
    """``(line number, row or BadLine)`` for every non-blank line of a user's JSONL file."""
    if not path.is_file():
        raise FileNotFoundError(f"input file {str(path)!r} does not exist; check the path")
    with path.open(encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            yield number, _parse(path, number, line, model)


def _parse(path: Path, number: int, line: str, model: type[M]) -> M | BadLine:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        return BadLine(path, number, f"not valid JSON ({exc.msg} at column {exc.colno})")
    if not isinstance(data, dict):
        return BadLine(path, number, f"a JSON {type(data).__name__}, expected an object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "line"
        return BadLine(path, number, f"field {where!r}: {first['msg']}")
