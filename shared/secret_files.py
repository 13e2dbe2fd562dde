"""Secrets come from files (Docker/Kubernetes secrets), never from the environment or a
command line, where ``ps``, ``docker inspect`` and crash reports would show them."""

from __future__ import annotations

from pathlib import Path


def read_secret_file(path: str | Path, what: str) -> str:
    """The file's text, stripped; a ValueError naming ``what`` and the file when it cannot be
    read or is empty."""
    try:
        text = Path(path).expanduser().read_text().strip()
    except OSError as exc:
        raise ValueError(f"{what} {str(path)!r} cannot be read: {exc.strerror or exc}") from None
    if not text:
        raise ValueError(f"{what} {str(path)!r} is empty")
    return text
