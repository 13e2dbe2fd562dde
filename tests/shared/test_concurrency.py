"""gather_or_cancel: results in order, or the first error with the siblings cancelled."""

from __future__ import annotations

import asyncio

import pytest

from rlmec.shared.concurrency import gather_or_cancel
from rlmec.shared.errors import RateLimitError


async def test_results_come_in_order() -> None:
    async def after(delay: float, value: int) -> int:
        await asyncio.sleep(delay)
        return value

    assert await gather_or_cancel(after(0.02, 1), after(0.0, 2)) == [1, 2]


async def test_a_failure_cancels_the_siblings_and_is_raised_itself() -> None:
    cancelled = asyncio.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def refused() -> None:
        await asyncio.sleep(0.01)
        raise RateLimitError("saturated", retry_after=1.0)

    with pytest.raises(RateLimitError, match="saturated"):
        await gather_or_cancel(slow(), refused())
    assert cancelled.is_set()  # before the error reached the caller, not later
