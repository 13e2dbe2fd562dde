"""Fair waiting: the per-team admission queues and the GRM slots shared round-robin by teams.
The logic runs on asyncio alone here; ``test_access.py`` and ``test_fairness.py`` run it in the
live service."""

from __future__ import annotations

import asyncio

import pytest

from rlmec.services.reward.admission import FairSlots, SlotWaiters, current_team
from rlmec.shared.errors import RateLimitError

ONE = "1 request"  # the limits named in a 429


class Leases:
    """A fake Redis lease set with ``limit`` slots (the real one is a Lua script)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held: set[str] = set()
        self.next = 0

    async def try_acquire(self) -> str | None:
        if len(self.held) >= self.limit:
            return None
        self.next += 1
        self.held.add(str(self.next))
        return str(self.next)


async def test_waiters_are_served_in_arrival_order() -> None:
    waiters = SlotWaiters(max_wait_s=5, poll_s=5)  # wake-ups only: no polling luck
    leases = Leases(1)
    first = await waiters.acquire("a", leases.try_acquire, max_waiting=10, limit=ONE)
    order: list[int] = []

    async def request(i: int) -> None:
        lease = await waiters.acquire("a", leases.try_acquire, max_waiting=10, limit=ONE)
        order.append(i)
        await asyncio.sleep(0.01)
        leases.held.discard(lease)
        waiters.wake("a")

    tasks = [asyncio.create_task(request(i)) for i in range(5)]
    await asyncio.sleep(0.05)
    assert waiters.waiting("a") == 5
    leases.held.discard(first)
    waiters.wake("a")
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]
    assert waiters.waiting("a") == 0


async def test_a_full_queue_or_a_long_wait_is_a_429() -> None:
    waiters = SlotWaiters(max_wait_s=0.2, poll_s=0.05)
    leases = Leases(1)
    await waiters.acquire("a", leases.try_acquire, max_waiting=1, limit=ONE)
    waiting = asyncio.create_task(
        waiters.acquire("a", leases.try_acquire, max_waiting=1, limit=ONE)
    )
    await asyncio.sleep(0.01)
    with pytest.raises(RateLimitError) as full:
        await waiters.acquire("a", leases.try_acquire, max_waiting=1, limit=ONE)
    assert full.value.code == "admission_queue_full" and full.value.retry_after >= 1
    with pytest.raises(RateLimitError) as late:
        await waiting
    assert late.value.code == "concurrency_limit"
    assert waiters.waiting("a") == 0


async def test_teams_do_not_queue_behind_each_other() -> None:
    waiters = SlotWaiters(max_wait_s=5, poll_s=5)
    busy, quiet = Leases(1), Leases(1)
    await waiters.acquire("busy", busy.try_acquire, max_waiting=100, limit=ONE)
    backlog = [
        asyncio.create_task(waiters.acquire("busy", busy.try_acquire, max_waiting=100, limit=ONE))
        for _ in range(50)
    ]
    await asyncio.sleep(0.01)
    assert await waiters.acquire("quiet", quiet.try_acquire, max_waiting=100, limit=ONE)
    for task in backlog:
        task.cancel()
    await asyncio.gather(*backlog, return_exceptions=True)
    assert waiters.waiting("busy") == 0  # cancelled waiters leave the queue


async def test_a_cancelled_head_hands_its_turn_on() -> None:
    waiters = SlotWaiters(max_wait_s=5, poll_s=5)
    leases = Leases(1)
    first = await waiters.acquire("a", leases.try_acquire, max_waiting=10, limit=ONE)
    head = asyncio.create_task(waiters.acquire("a", leases.try_acquire, max_waiting=10, limit=ONE))
    second = asyncio.create_task(
        waiters.acquire("a", leases.try_acquire, max_waiting=10, limit=ONE)
    )
    await asyncio.sleep(0.01)
    head.cancel()  # the client went away
    leases.held.discard(first)
    waiters.wake("a")
    assert await asyncio.wait_for(second, 1)


async def _grm_call(slots: FairSlots, team: str, log: list[str], cost: float = 1.0) -> None:
    current_team.set(team)
    async with slots.slot(cost):
        log.append(team)
        await asyncio.sleep(0.001)


async def test_fair_slots_alternate_between_teams() -> None:
    """A backlog of 30 calls from one team and 3 from another, one slot: the quiet team's calls
    are served in turns, not after the backlog."""
    slots = FairSlots(1)
    log: list[str] = []
    busy = [asyncio.create_task(_grm_call(slots, "busy", log)) for _ in range(30)]
    await asyncio.sleep(0)  # the backlog is queued first
    quiet = [asyncio.create_task(_grm_call(slots, "quiet", log)) for _ in range(3)]
    await asyncio.gather(*busy, *quiet)
    last_quiet = max(i for i, team in enumerate(log) if team == "quiet")
    assert last_quiet <= 7, log
    assert log.count("busy") == 30 and slots.in_use == 0 and slots.queued() == 0


async def test_fair_slots_follow_the_weights() -> None:
    """Two saturating teams, weights 3 and 1: while both wait, 'heavy' gets 3 grants for each
    of 'light''s."""
    slots = FairSlots(1, {"heavy": 3.0, "light": 1.0})
    log: list[str] = []
    tasks = [asyncio.create_task(_grm_call(slots, t, log)) for t in ("heavy", "light") * 40]
    await asyncio.gather(*tasks)
    both_waiting = log[:40]  # neither backlog runs dry in the first 40 grants
    assert 27 <= both_waiting.count("heavy") <= 33, log


async def test_fair_slots_charge_each_call_its_samples() -> None:
    """Calls of 8 samples against calls of 1, equal weights: the one-sample team gets about 8
    calls per big call (the GRM's work is shared, not the number of calls)."""
    slots = FairSlots(1)
    log: list[str] = []
    big = [asyncio.create_task(_grm_call(slots, "big", log, 8)) for _ in range(10)]
    small = [asyncio.create_task(_grm_call(slots, "small", log, 1)) for _ in range(80)]
    await asyncio.gather(*big, *small)
    first = log[:45]
    assert 4 <= first.count("big") <= 6, log


async def test_an_idle_team_banks_no_credit() -> None:
    """A team that was served little and then idle does not get a run of grants later: its
    pass starts at the current virtual time."""
    slots = FairSlots(1)
    log: list[str] = []
    await asyncio.gather(*[_grm_call(slots, "a", log) for _ in range(20)])  # 'a' alone
    log.clear()
    tasks = [asyncio.create_task(_grm_call(slots, t, log)) for t in ["a"] * 10 + ["b"] * 10]
    await asyncio.gather(*tasks)
    runs = max(len(r) for r in "".join(log).replace("ab", "a b").replace("ba", "b a").split())
    assert runs <= 2, log


async def test_fair_slots_survive_cancellation() -> None:
    slots = FairSlots(2)
    log: list[str] = []
    tasks = [asyncio.create_task(_grm_call(slots, f"t{i % 3}", log)) for i in range(12)]
    await asyncio.sleep(0)
    for task in tasks[3::2]:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert slots.in_use == 0 and slots.queued() == 0
    async with slots.slot():  # still usable
        assert slots.in_use == 1


async def _held_call(slots: FairSlots, team: str, gate: asyncio.Event, log: list[str]) -> None:
    current_team.set(team)
    async with slots.slot(64):
        log.append(team)
        await gate.wait()


@pytest.mark.parametrize("quiet_first", [True, False])
async def test_a_quiet_team_starts_a_call_at_once(quiet_first: bool) -> None:
    """One slot, held by a busy team with more calls waiting: a team with no call in flight
    starts one at once (one past capacity), instead of waiting for the busy call to end; its
    second call in flight waits its turn. Off, it waits."""
    slots = FairSlots(1, quiet_teams_first=quiet_first)
    gate, log = asyncio.Event(), []
    busy = [asyncio.create_task(_held_call(slots, "busy", gate, log)) for _ in range(3)]
    await asyncio.sleep(0)
    quiet = [asyncio.create_task(_held_call(slots, "quiet", gate, log)) for _ in range(2)]
    await asyncio.sleep(0.01)
    assert log == (["busy", "quiet"] if quiet_first else ["busy"])
    assert slots.in_use == (2 if quiet_first else 1)
    gate.set()
    await asyncio.gather(*busy, *quiet)
    assert sorted(log) == ["busy"] * 3 + ["quiet"] * 2
    assert slots.in_use == 0 and slots.queued() == 0
