"""The HTTP bounds both services take (``RLMEC_GRM_*`` and ``RLMEC_REWARD_*`` alike)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field


class HttpBounds(BaseModel):
    """Request size and time bounds, and who may read ``/metrics``; enforced by
    :class:`rlmec.services.common.BodyGuard` and :mod:`rlmec.services.http_server`."""

    max_body_bytes: int = Field(
        64 * 2**20,
        ge=1024,
        description="Request bodies above this are refused unread (413); the API key is "
        "checked before any body is read (reward service).",
    )
    body_timeout_s: float = Field(
        60.0, gt=0, description="A request body must arrive within this (408)."
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="A request's headers must arrive within this, or the "
        "connection is closed (slow clients cannot hold connections open).",
    )
    metrics_token_file: Path | None = Field(
        None,
        description="File holding the token /metrics requires (Authorization: Bearer); "
        "unset, /metrics is open: bind to loopback or keep it off shared networks.",
    )
