"""The per-team cap on waiting long polls (issue 26, item 1)."""

from __future__ import annotations

import pytest

from rlmec.services.reward.pulls import WaitingPulls
from rlmec.services.reward.settings import TeamConfig
from rlmec.services.reward.teams import Team
from rlmec.shared.errors import RateLimitError


def test_a_team_past_its_cap_is_refused_and_others_are_not() -> None:
    pulls = WaitingPulls()
    noisy = Team.from_config(TeamConfig(name="noisy", max_waiting_pulls=2))
    quiet = Team.from_config(TeamConfig(name="quiet", max_waiting_pulls=2))
    with pulls.slot(noisy), pulls.slot(noisy):
        match = "already has 2 long polls waiting"
        with pytest.raises(RateLimitError, match=match) as refused, pulls.slot(noisy):
            pass
        assert refused.value.code == "too_many_waiting_pulls"
        with pulls.slot(quiet):
            assert pulls.waiting("quiet") == 1
    assert pulls.waiting("noisy") == 0  # released, also on the way out of an error
    with pulls.slot(noisy):
        assert pulls.waiting("noisy") == 1
