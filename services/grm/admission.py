"""Bounded concurrency: at most ``max_concurrent`` requests on the engine, ``max_queued``
waiting; anything beyond is refused at once (429 + ``Retry-After``) so memory never grows
without bound under load. On shutdown new requests get 503 and in-flight ones are awaited."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from rlmec.shared.errors import RateLimitError, ServiceUnavailableError


class Admission:
    def __init__(self, max_concurrent: int, max_queued: int) -> None:
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self._slots = asyncio.Semaphore(max_concurrent)
        self.active = 0
        self.waiting = 0
        self.closing = False
        self._idle = asyncio.Event()
        self._idle.set()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self.closing:
            raise ServiceUnavailableError("the GRM service is shutting down; retry elsewhere")
        if self.active >= self.max_concurrent and self.waiting >= self.max_queued:
            raise RateLimitError(
                f"the GRM service is saturated ({self.active} running, {self.waiting} queued; "
                f"limits RLMEC_GRM_MAX_CONCURRENT_REQUESTS={self.max_concurrent}, "
                f"RLMEC_GRM_MAX_QUEUED_REQUESTS={self.max_queued}); retry after the delay",
                retry_after=1.0,
            )
        self.waiting += 1
        self._idle.clear()
        try:
            await self._slots.acquire()
        except BaseException:
            self.waiting -= 1
            self._maybe_idle()
            raise
        self.waiting -= 1
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1
            self._slots.release()
            self._maybe_idle()

    def _maybe_idle(self) -> None:
        if self.active == 0 and self.waiting == 0:
            self._idle.set()

    async def drain(self, timeout: float) -> bool:
        """Refuse new work, wait up to ``timeout`` s for in-flight work; True when drained."""
        self.closing = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True
