"""Redis key names of a team (inside a Cluster hash tag), name checks and group names."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator

from rlmec.shared.errors import InvalidRequestError

WORKER_GROUP = "workers"
TRAINER_GROUP = "trainer"
TEAMS_KEY = "rlmec:teams"

_TEAM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_BATCH_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def check_team(team: str) -> str:
    """Team names become part of Redis keys: letters, digits, ``._-``, at most 64 chars."""
    if not _TEAM_RE.match(team):
        raise ValueError(
            f"team name {team!r} is invalid; use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return team


def check_batch_id(batch_id: str) -> str:
    if not _BATCH_ID_RE.match(batch_id):
        raise ValueError(
            f"batch_id {batch_id!r} is invalid; use 1-128 letters, digits, '.', '_', ':' or '-', "
            "starting with a letter or digit (or omit it to get a generated one)"
        )
    return batch_id


TeamName = Annotated[str, AfterValidator(check_team)]
BatchId = Annotated[str, AfterValidator(check_batch_id)]


@dataclass(frozen=True)
class StreamKeys:
    """Redis key names of one team."""

    team: str
    rollouts: str
    scored: str
    dead: str

    queued_samples: str
    scored_samples: str
    queued_bytes: str
    scored_bytes: str
    policy: str  # the newest published policy version (rlmec.shared.policy_version)

    def status(self, batch_id: str) -> str:
        return f"rlmec:{{{self.team}}}:batch:{batch_id}"


def keys_for(team: str) -> StreamKeys:
    """Key names of ``team``; an invalid name is a 422 naming the value and the fix."""
    try:
        check_team(team)
    except ValueError as exc:
        raise InvalidRequestError(str(exc), param="team", code="invalid_team") from None
    tag = f"rlmec:{{{team}}}"
    return StreamKeys(
        team, f"{tag}:rollouts", f"{tag}:scored", f"{tag}:dead",
        f"{tag}:queued_samples", f"{tag}:scored_samples", f"{tag}:queued_bytes",
        f"{tag}:scored_bytes", f"{tag}:policy",
    )  # fmt: skip


def new_batch_id() -> str:
    return uuid.uuid4().hex
