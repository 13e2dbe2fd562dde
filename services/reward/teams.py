"""Teams and API keys, without FastAPI. A key is checked by hashing it (sha256) and looking
the digest up; keys themselves are never stored or logged."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from rlmec.services.reward.settings import RewardSettings, TeamConfig
from rlmec.shared.queue.schemas import QueueLimits

KEY_PREFIX = "rlmec-"


@dataclass(frozen=True)
class Team:
    """The caller of a request, with its quotas (see :class:`TeamConfig` for the meaning)."""

    name: str
    rate_limit: int
    rate_window_s: int
    max_concurrency: int
    max_samples_in_flight: int
    max_waiting_requests: int
    max_queued_samples: int
    max_scored_samples: int
    max_queued_bytes: int = QueueLimits.max_queued_bytes
    max_scored_bytes: int = QueueLimits.max_scored_bytes
    max_waiting_pulls: int = 4
    chat_template: str | None = None
    grm_adapter: str | None = None
    anonymous: bool = False

    @classmethod
    def from_config(cls, config: TeamConfig, *, anonymous: bool = False) -> Team:
        return cls(
            name=config.name,
            rate_limit=config.rate_limit,
            rate_window_s=config.rate_window_s,
            max_concurrency=config.max_concurrency,
            max_samples_in_flight=config.max_samples_in_flight,
            max_waiting_requests=config.max_waiting_requests,
            max_queued_samples=config.max_queued_samples,
            max_scored_samples=config.max_scored_samples,
            max_queued_bytes=config.max_queued_bytes,
            max_scored_bytes=config.max_scored_bytes,
            max_waiting_pulls=config.max_waiting_pulls,
            chat_template=config.chat_template,
            grm_adapter=config.grm_adapter,
            anonymous=anonymous,
        )


def hash_key(key: str, salt: bytes | None = None) -> str:
    """The key's digest as the teams file stores it: sha256, or HMAC-SHA256 under the
    deployment's salt (``key_salt_file``), so a leaked teams file cannot be checked against
    guessed keys offline without the salt, and digests differ between deployments."""
    if salt:
        return hmac.new(salt, key.encode(), hashlib.sha256).hexdigest()
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key(salt: bytes | None = None) -> tuple[str, str]:
    """A new random API key and its digest (the only thing the config stores)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, hash_key(key, salt)


class TeamDirectory:
    def __init__(self, settings: RewardSettings) -> None:
        self._salt = settings.key_salt()
        self._by_hash = {
            digest: Team.from_config(team) for team in settings.teams for digest in team.key_sha256
        }
        self._by_name = {team.name: Team.from_config(team) for team in settings.teams}
        self.anonymous = (
            Team.from_config(settings.anonymous_team(), anonymous=True)
            if settings.allow_anonymous
            else None
        )

    def by_key(self, key: str) -> Team | None:
        # Looking up the digest (not the key) leaks nothing useful through timing: learning
        # a stored digest does not give a key that hashes to it.
        return self._by_hash.get(hash_key(key, self._salt))

    def by_name(self, name: str) -> Team | None:
        return self._by_name.get(name)
