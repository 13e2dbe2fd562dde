"""Reading sample files for the CLI: one JSON object per line, every error names the line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from rlmec.shared.schemas import Sample

M = TypeVar("M", bound=BaseModel)


class InputFileError(ValueError):
    """A problem with a file the user gave; the message names the file, the line and the fix."""


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "line"
    more = f" (and {exc.error_count() - 1} more error(s))" if exc.error_count() > 1 else ""
    return f"field {where!r}: {first['msg']}{more}"


def read_samples(path: Path) -> list[Sample]:
    """All samples of a JSONL file, validated; blank lines are skipped. Raises
    :class:`InputFileError` on the first bad line, before anything is sent."""
    return read_models(path, Sample, "question, reference_solution and prediction")


def read_models(path: Path, model: type[M], fields: str) -> list[M]:
    """Every line of a JSONL file as ``model`` (``fields`` names what a line must hold)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputFileError(f"input file {str(path)!r} does not exist; check the path") from None
    except UnicodeDecodeError as exc:
        raise InputFileError(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8"
        ) from None
    samples: list[M] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputFileError(
                f"{path} line {number}: not valid JSON ({exc.msg} at column {exc.colno}); "
                "each line must be one JSON object"
            ) from None
        if not isinstance(data, dict):
            raise InputFileError(
                f"{path} line {number}: a JSON {type(data).__name__}, expected an object with "
                f"{fields}"
            )
        try:
            samples.append(model.model_validate(data))
        except ValidationError as exc:
            raise InputFileError(f"{path} line {number}: {_describe(exc)}") from None
    if not samples:
        raise InputFileError(f"{path} holds no rows; write one JSON object per line")
    return samples


def count_lines(path: Path) -> int:
    """Non-blank lines already in an output file (for ``--resume``); 0 when it is absent."""
    if not path.exists():
        return 0
    with path.open(encoding="utf-8") as fh:
        return sum(1 for line in fh if line.strip())
