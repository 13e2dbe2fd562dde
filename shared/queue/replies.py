"""Decoding redis-py replies (bytes or str, RESP2 or RESP3) shared by the queue's sides."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(raw: Mapping[Any, Any] | None) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in (raw or {}).items()}


def _stream_entries(reply: Any) -> list[tuple[str, list[tuple[Any, Any]]]]:
    """XREAD(GROUP) replies as ``[(stream, [(id, fields), ...])]`` (RESP2 list or RESP3 map)."""
    if not reply:
        return []
    items = reply.items() if isinstance(reply, dict) else reply
    out = []
    for stream, entries in items:
        # RESP3 nests each stream's entries one list deeper
        if (
            entries
            and isinstance(entries[0], list)
            and entries[0]
            and isinstance(entries[0][0], tuple)
        ):
            entries = entries[0]
        out.append((_s(stream), list(entries)))
    return out
