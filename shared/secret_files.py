"""Secrets come from files (Docker/Kubernetes secrets), never from the environment or a
command line, where ``ps``, ``docker inspect`` and crash reports would show them."""

from __future__ import annotations

import os
import secrets
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


def write_secret_file(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600, whatever was there before.

    A new file beside it (``O_EXCL | O_NOFOLLOW``, so nothing another user planted is opened),
    then an atomic rename over ``path``: an existing file's looser mode is not kept (``os.open``
    with ``O_CREAT`` keeps it), and a symlink at ``path`` is replaced, never followed.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
