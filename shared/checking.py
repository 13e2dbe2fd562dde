"""§4 answer checking with a hard bound on time and memory per sample.

Answer checking runs on input anyone can send (predictions, references, OpenRLHF labels), and
sympy can spend minutes on a short string (``10^{10^{8}}``) while holding the GIL, so a thread
cannot bound it. :class:`AnswerChecker` runs every check in a pool of worker processes
(``pebble``): a check over ``timeout_s`` has its worker killed and replaced, each worker's
address space is capped at ``memory_mib``, and the caller's event loop never runs sympy. A
check over budget comes back as a :class:`CheckFailure`; the other samples are unaffected.

A ``gate`` (an async context manager per check) lets a service hand the workers out fairly:
the reward service passes its per-team fair slots, sized to the workers, so the pool never
holds a FIFO backlog and one team's slow checks delay another team's by at most one check.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import resource
from collections.abc import Callable, Sequence
from concurrent.futures import TimeoutError as FutureTimeoutError
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from rlmec.shared.answers import AnswerCheck, check_prediction, reference_answer
from rlmec.shared.prompts import TaskType

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MEMORY_MIB = 1024


@dataclass(frozen=True)
class Judgement:
    """A sample's reference answer (None: its reference states none) and, when it has one, the
    check of the prediction against it."""

    reference: str | None
    check: AnswerCheck | None


@dataclass(frozen=True)
class CheckFailure:
    """A check that went over its time or memory budget (or crashed its worker)."""

    message: str


@dataclass(frozen=True)
class CheckInput:
    prediction: str
    task: TaskType
    reference_solution: str = ""
    reference_answer: str | None = None  # given: used as is; else read from the solution


def judge(item: CheckInput) -> Judgement:
    """The reference answer and the prediction's check (runs in a pool worker)."""
    given = item.reference_answer
    reference = (
        given if given and given.strip() else reference_answer(item.reference_solution, item.task)
    )
    if reference is None:
        return Judgement(None, None)
    return Judgement(reference, check_prediction(item.prediction, reference, item.task))


def _init_worker(memory_mib: int) -> None:
    # Import before capping: the cap bounds what one check allocates, not the interpreter.
    import math_verify  # noqa: F401  (pre-import: ~0.8 s, once per worker)

    limit = memory_mib * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


class AnswerChecker:
    """A process pool that judges samples with a per-sample time and memory budget.

    ``workers`` processes (spawned, so a threaded parent is never forked) judge samples in
    parallel; ``timeout_s`` counts from when a worker starts the sample, not queue time.
    """

    def __init__(
        self,
        *,
        workers: int = 2,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        memory_mib: int = DEFAULT_MEMORY_MIB,
        gate: Callable[[], AbstractAsyncContextManager[Any]] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers ({workers}) must be at least 1")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s ({timeout_s}) must be > 0 seconds")
        if memory_mib < 256:
            raise ValueError(f"memory_mib ({memory_mib}) must be at least 256")
        # Imported here: pebble is only needed where checks run, not by every shared import.
        from pebble import ProcessPool

        self.timeout_s = timeout_s
        self.memory_mib = memory_mib
        self._gate = gate or nullcontext
        self._pool = ProcessPool(
            max_workers=workers,
            initializer=_init_worker,
            initargs=(memory_mib,),
            context=multiprocessing.get_context("spawn"),
        )

    async def judge_many(self, items: Sequence[CheckInput]) -> list[Judgement | CheckFailure]:
        """Judge every item concurrently in the pool; order is kept."""
        return list(await asyncio.gather(*(self._run(judge, item) for item in items)))

    async def check_many(
        self, items: Sequence[tuple[str, str, TaskType]]
    ) -> list[AnswerCheck | CheckFailure]:
        """``check_prediction(prediction, reference, task)`` for each triple."""
        return list(await asyncio.gather(*(self._run(check_prediction, *t) for t in items)))

    async def _run(self, fn: Any, *args: Any) -> Any:
        async with self._gate():
            return await self._schedule(fn, *args)

    async def _schedule(self, fn: Any, *args: Any) -> Any:
        future = self._pool.schedule(fn, args=args, timeout=self.timeout_s)
        try:
            return await asyncio.wrap_future(future)
        except FutureTimeoutError:
            return CheckFailure(
                f"answer checking took longer than {self.timeout_s:g} s and was stopped; "
                "the final answer is too costly to compare (a power tower, a huge number?)"
            )
        except MemoryError:
            return CheckFailure(
                f"answer checking needed more than {self.memory_mib} MiB and was stopped"
            )
        except asyncio.CancelledError:
            future.cancel()  # pebble kills the worker running a cancelled task
            raise
        except Exception as exc:  # the worker died (ProcessExpired) or the check crashed
            return CheckFailure(f"answer checking failed: {type(exc).__name__}: {exc}"[:500])

    def close(self) -> None:
        """Stop the workers (a running check is killed)."""
        self._pool.stop()
        self._pool.join(timeout=5)

    def __enter__(self) -> AnswerChecker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
