"""Long polls (``POST /v1/scored/pull`` with ``wait_ms``) are bounded per team.

A long poll holds a Redis connection (``XREADGROUP BLOCK``) for up to 30 s. They take their
connections from a pool of their own, so waiting trainers never starve the short commands of
every other route, and each team may have at most ``max_waiting_pulls`` waiting at once on a
replica: one team's 300 long polls used to take the whole shared pool, and another team got 503
on everything (issue 26, item 1).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from rlmec.services.reward.teams import Team
from rlmec.shared.errors import RateLimitError


class WaitingPulls:
    """The long polls waiting now, per team (this replica)."""

    def __init__(self) -> None:
        self._waiting: Counter[str] = Counter()

    def waiting(self, team: str) -> int:
        return self._waiting[team]

    @contextmanager
    def slot(self, team: Team) -> Iterator[None]:
        """Hold one of the team's waiting-pull slots, or raise 429 at once."""
        if self._waiting[team.name] >= team.max_waiting_pulls:
            raise RateLimitError(
                f"team {team.name!r} already has {self._waiting[team.name]} long polls waiting "
                f"(max_waiting_pulls = {team.max_waiting_pulls}); pull from fewer trainers at "
                "once, or with wait_ms=0",
                retry_after=1.0,
                code="too_many_waiting_pulls",
            )
        self._waiting[team.name] += 1
        try:
            yield
        finally:
            self._waiting[team.name] -= 1
            if not self._waiting[team.name]:
                del self._waiting[team.name]
