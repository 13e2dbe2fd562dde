"""Fair waiting, in two places where teams meet.

- :class:`SlotWaiters`: a request over its team's concurrency quota waits in a bounded FIFO
  queue of its team for a slot instead of getting an immediate 429. RL frameworks send a burst
  of per-sample requests and treat an error as a lost reward (OpenRLHF retries 5 x 1 s, veRL
  fails the step), so waiting a little is what their traffic needs. Each team has its own queue:
  one team's burst never delays another team's admission.
- :class:`FairSlots`: the GRM calls in flight, shared by every team, handed out by weighted
  fair queuing over the teams that wait (FIFO within a team; each call charged its samples
  over the team's ``grm_weight``), so a team with a thousand queued GRM calls does not delay a
  quiet team by its backlog; a team with no call in flight starts one at once.

Both are per replica (in-process, no extra Redis round-trips); the leases they wait for are the
Redis ones of :mod:`rlmec.services.reward.quotas`, so the quota still holds across replicas.
Waiters poll the Redis lease every ``poll_s`` too, because slots freed by another replica (or by
an expired lease) wake nobody here.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager, suppress

from rlmec.inference.tenants import StrideClock, Tenant
from rlmec.shared.errors import RateLimitError

# The team on whose behalf the current task calls the GRM (set by the pipeline; inherited by
# the tasks it starts). Calls outside any team share one anonymous lane.
current_team: contextvars.ContextVar[str] = contextvars.ContextVar("rlmec_team", default="")


class SlotWaiters:
    """Per-team FIFO queues of requests waiting for a concurrency lease.

    ``try_acquire(team)`` returns a lease id or None (the Redis check); ``acquire`` waits for
    one up to ``max_wait_s`` in the team's queue of at most ``max_waiting`` requests; past
    either bound it raises 429 with ``Retry-After``."""

    def __init__(self, *, max_wait_s: float, poll_s: float = 0.25) -> None:
        self.max_wait_s = max_wait_s
        self.poll_s = poll_s
        self._queues: dict[str, deque[asyncio.Event]] = {}

    def waiting(self, team: str) -> int:
        return len(self._queues.get(team, ()))

    async def acquire(
        self,
        team: str,
        try_acquire: Callable[[], Awaitable[str | None]],
        *,
        max_waiting: int,
        limit: str,
    ) -> str:
        """``limit`` names the team's limits in the 429's message."""
        queue = self._queues.setdefault(team, deque())
        if not queue:  # nobody of this team waits: no queue to jump
            lease = await try_acquire()
            if lease is not None:
                return lease
        if len(queue) >= max_waiting or self.max_wait_s <= 0:
            raise RateLimitError(
                f"team {team!r} has {limit} in flight and {len(queue)} requests waiting (its "
                f"limits); retry later, or ask the operator for a higher max_concurrency or "
                f"max_samples_in_flight",
                retry_after=max(1.0, self.max_wait_s),
                code="admission_queue_full",
            )
        me = asyncio.Event()
        queue.append(me)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        try:
            while True:
                if queue[0] is me:
                    lease = await try_acquire()
                    if lease is not None:
                        return lease
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise RateLimitError(
                        f"team {team!r} waited {self.max_wait_s:g} s for room in its "
                        f"limit of {limit} in flight; retry later",
                        retry_after=max(1.0, min(self.max_wait_s, 5.0)),
                        code="concurrency_limit",
                    )
                me.clear()
                with suppress(TimeoutError):
                    async with asyncio.timeout(min(remaining, self.poll_s)):
                        await me.wait()
        finally:
            queue.remove(me)
            if queue:  # the new head tries now (a slot may be free, or the head changed)
                queue[0].set()
            else:
                self._queues.pop(team, None)

    def wake(self, team: str) -> None:
        """A slot of ``team`` was released here: the head of its queue tries at once."""
        queue = self._queues.get(team)
        if queue:
            queue[0].set()


class FairSlots:
    """``capacity`` slots shared by teams, granted by weighted fair queuing over the teams with
    waiters (FIFO within a team). ``async with slots.slot(cost): ...`` holds one for the current
    team (:data:`current_team`).

    Stride scheduling: each team has a *pass*, the service it has received over its weight
    (``cost / weight`` per grant: the cost of a GRM call is its number of samples, so a team
    sending batches of 64 is charged 64 times what a one-sample call is). A freed slot goes to
    the waiting team with the smallest pass. A team that was idle starts at the pass of the
    most recent grant, so idle time is not banked as credit to burst with later.

    With ``quiet_teams_first``, a team that holds no slot and has none waiting gets one at once,
    past ``capacity`` if need be: it would be next in turn anyway, and without this it waits for
    one of a busy team's calls to finish (seconds of GRM time for a call of 64 samples), at
    every call. The excess is at most one slot per team; the GRM queues it and vLLM's priority
    scheduler (fed the same fair order) runs it first. Off where the slots are processes (the
    answer checker's workers).
    """

    def __init__(
        self, capacity: int, weights: Mapping[str, float] | None = None, *,
        quiet_teams_first: bool = False,
    ) -> None:  # fmt: skip
        self.capacity = capacity
        self.quiet_teams_first = quiet_teams_first
        self.in_use = 0
        self.weights = dict(weights or {})
        # team -> its waiting (future, cost); dict order breaks ties (earliest waiter first).
        self._waiting: dict[str, deque[tuple[asyncio.Future[None], float]]] = {}
        self._held: Counter[str] = Counter()  # team -> slots it holds
        self._clock = StrideClock()  # each team's service over its weight

    def queued(self) -> int:
        return sum(len(q) for q in self._waiting.values())

    @asynccontextmanager
    async def slot(self, cost: float = 1.0) -> AsyncIterator[None]:
        team = current_team.get()
        await self._acquire(team, max(cost, 1e-9))
        try:
            yield
        finally:
            self._release(team)

    def _grant(self, team: str, cost: float) -> None:
        self._held[team] += 1
        self._clock.charge(Tenant(team, self.weights.get(team, 1.0)), cost)

    def _quiet(self, team: str) -> bool:
        return self.quiet_teams_first and not self._held[team] and team not in self._waiting

    async def _acquire(self, team: str, cost: float) -> None:
        if (self.in_use < self.capacity and not self._waiting) or self._quiet(team):
            self.in_use += 1
            self._grant(team, cost)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(team, deque()).append((future, cost))
        try:
            await future
        except BaseException:
            if future.done() and not future.cancelled():
                self._release(team)  # granted and cancelled at once: hand the slot on
            else:
                self._forget(team, future)
            raise

    def _forget(self, team: str, future: asyncio.Future[None]) -> None:
        queue = self._waiting.get(team)
        if queue is None:
            return
        for item in queue:
            if item[0] is future:
                queue.remove(item)
                break
        if not queue:
            del self._waiting[team]

    def _release(self, holder: str) -> None:
        """``holder`` gives a slot back: to the waiting team with the smallest pass, unless
        quiet teams' slots still hold the slots past capacity."""
        self._held[holder] -= 1
        if not self._held[holder]:
            del self._held[holder]
        while self._waiting and self.in_use <= self.capacity:
            team = self._clock.next(self._waiting)
            queue = self._waiting[team]
            future, cost = queue.popleft()
            if not queue:
                del self._waiting[team]
            if not future.done():
                self._grant(team, cost)
                future.set_result(None)  # the slot passes on; in_use is unchanged
                return
        self.in_use -= 1
