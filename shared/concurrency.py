"""Structured concurrency for fan-out: all results, or the first error with nothing left behind."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


async def gather_or_cancel(*coros: Coroutine[Any, Any, Any]) -> list[Any]:
    """The results in order, like ``asyncio.gather``. When one fails, the others are cancelled
    before the error propagates (an HTTP call's connection closes, so a GRM stops that work
    too), and the error raised is the first failure itself, not an ``ExceptionGroup``.

    ``asyncio.gather`` leaves the siblings running: a request answered 429 kept its other GRM
    call holding a GRM slot for minutes (issue 26, item 2).
    """
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(c) for c in coros]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [t.result() for t in tasks]
