"""Settings of the token-reward service (env prefix ``RLMEC_REWARD_``).

Teams come from ``RLMEC_REWARD_TEAMS`` (a JSON list) or a JSON/YAML file named by
``RLMEC_REWARD_TEAMS_FILE``. Keys are stored only as their sha256 (``rlmec reward hash-key``
makes a key and prints its hash), so a leaked config file grants no access.
"""

from __future__ import annotations

import importlib
import json
import re
import warnings
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rlmec.services.http_settings import HttpBounds
from rlmec.shared.prompts import TaskType
from rlmec.shared.queue.keys import TeamName
from rlmec.shared.queue.schemas import QueueLimits
from rlmec.shared.redis_acl import credentials, read_password_file
from rlmec.shared.schemas import RewardParams
from rlmec.shared.secret_files import read_secret_file

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
ANONYMOUS = "anonymous"
# Team settings renamed in 0.2 (one name per concept, the queue's own names); the old ones are
# accepted with a DeprecationWarning for one release.
_RENAMED = {"queue_max_len": "max_queued_samples", "queue_max_pending": "max_scored_samples"}


class TeamConfig(BaseModel):
    """One team: its key hashes and quotas. ``rate_limit`` counts samples (not requests) per
    ``rate_window_s`` so a batch of 512 costs what 512 single-sample calls cost."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: TeamName = Field(description="Team name: 1-64 letters, digits, '_', '.', '-'.")
    key_sha256: list[str] = Field(
        default_factory=list, description="sha256 hex digests of the team's API keys."
    )
    rate_limit: int = Field(10_000, ge=1, description="Samples per rate window.")
    rate_window_s: int = Field(60, ge=1, le=86_400, description="Rate window in seconds.")
    max_concurrency: int = Field(
        1024,
        ge=1,
        le=4096,
        description="Requests in flight at once; more wait in the team's queue (below). "
        "max_samples_in_flight usually binds first.",
    )
    max_samples_in_flight: int = Field(
        1024,
        ge=1,
        le=1_000_000,
        description="Samples of the team's requests in flight at once (a request counts its "
        "samples; one bigger than this runs alone); more wait in the team's queue. Bounds the "
        "team's share of the GRM's work whatever its batch size: 1024 one-sample requests "
        "(OpenRLHF) or 16 batches of 64.",
    )
    max_waiting_requests: int = Field(
        1024,
        ge=0,
        le=100_000,
        description="Requests that may wait for a concurrency slot (up to the service's "
        "admission_wait_s) before further ones get 429; 0 = answer 429 at once.",
    )
    grm_adapter: str | None = Field(
        None,
        max_length=64,
        description="The GRM's LoRA adapter this team's rewards come from (a model id in the "
        "GRM's /v1/models); none = the base model. Set by the operator: a team never picks "
        "another team's adapter.",
    )
    max_waiting_pulls: int = Field(
        4,
        ge=0,
        le=1024,
        description="Long polls (POST /v1/scored/pull with wait_ms > 0) of the team waiting at "
        "once, per service replica; more get 429 at once (each holds a Redis connection).",
    )
    chat_template: str | None = Field(
        None,
        description="A registered policy tokenizer whose chat template this team's /get_reward "
        "prompts use: the GRM then gets the user's question without the chat markup (the "
        "request's ?chat_template= overrides it).",
    )
    grm_weight: float = Field(
        1.0,
        gt=0,
        le=1000,
        description="This team's share of the GRM when teams compete for it (weighted fair "
        "queuing of GRM calls, charged per sample): a team of weight 2 gets twice the "
        "samples/s of a team of weight 1 while both wait.",
    )
    private_cache: bool = Field(
        False,
        description="Keep this team's cached results apart: no cache hit on another team's "
        "identical sample, so a hit cannot tell the team someone else scored it (costs GRM "
        "time on repeats across teams).",
    )
    max_queued_samples: int = Field(
        QueueLimits.max_queued_samples,
        ge=1,
        description="Rollout samples the team may have waiting to be scored (pushes past it "
        "get 429).",
    )
    max_scored_samples: int = Field(
        QueueLimits.max_scored_samples,
        ge=1,
        description="Scored samples the team's trainer has not acknowledged yet (pushes past "
        "it get 429 until the trainer catches up).",
    )

    max_queued_bytes: int = Field(
        QueueLimits.max_queued_bytes,
        ge=1024,
        description="Bytes of rollouts the team may have waiting to be scored (429 past it).",
    )
    max_scored_bytes: int = Field(
        QueueLimits.max_scored_bytes,
        ge=1024,
        description="Bytes of scored batches its trainer has not acknowledged (429 past it).",
    )

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for old, new in _RENAMED.items():
            if old in data:
                warnings.warn(
                    f"team setting {old!r} is deprecated; call it {new!r}",
                    DeprecationWarning,
                    stacklevel=2,
                )
                if new in data:
                    raise ValueError(f"give {new!r} or the deprecated {old!r}, not both")
                data[new] = data.pop(old)
        return data

    @field_validator("key_sha256", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("key_sha256")
    @classmethod
    def _hex_digests(cls, value: list[str]) -> list[str]:
        for digest in value:
            if not _SHA256.match(digest):
                raise ValueError(
                    f"key_sha256 entry {digest[:12]!r}... is not a lowercase sha256 hex digest; "
                    "store the hash printed by `rlmec reward hash-key`, never the key itself"
                )
        return value


def load_teams_file(path: Path) -> list[TeamConfig]:
    """Teams from a JSON or YAML file: a list of teams, or ``{"teams": [...]}``."""
    if not path.is_file():
        raise ValueError(f"teams_file {str(path)!r} does not exist; fix RLMEC_REWARD_TEAMS_FILE")
    text = path.read_text()
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            # YAML reads JSON too, and a mounted secret has no suffix (/run/secrets/teams).
            # Imported by name: PyYAML ships no type stubs.
            data = importlib.import_module("yaml").safe_load(text)
    except Exception as exc:  # json.JSONDecodeError or yaml.YAMLError
        kind = "JSON" if path.suffix == ".json" else "YAML"
        raise ValueError(f"teams_file {str(path)!r} is not valid {kind}: {exc}") from None
    if isinstance(data, dict):
        data = data.get("teams", [])
    if not isinstance(data, list):
        raise ValueError(f"teams_file {str(path)!r} must hold a list of teams or {{'teams': []}}")
    return [TeamConfig.model_validate(item) for item in data]


class RewardSettings(BaseSettings, HttpBounds):
    """Everything the reward service and its workers read from the environment."""

    model_config = SettingsConfigDict(env_prefix="RLMEC_REWARD_", extra="forbid")

    grm_urls: list[str] = Field(
        default_factory=lambda: ["http://127.0.0.1:8001"],
        description="Base URLs of GRM services serving the same model (JSON list in env); "
        "batches are spread over them round-robin.",
    )
    grm_timeout_s: float = Field(300.0, gt=0, description="Timeout of one GRM call.")
    grm_batch_size: int = Field(64, ge=1, le=1024, description="Samples per GRM call.")
    coalesce_window_ms: float = Field(
        5.0,
        ge=0,
        le=1000,
        description="Concurrent requests of one team smaller than grm_batch_size that arrive "
        "within this window are scored as one batch (OpenRLHF posts one sample per request); "
        "0 = each request alone.",
    )
    grm_max_concurrency: int = Field(8, ge=1, le=256, description="GRM calls in flight.")
    grm_max_new_tokens: int = Field(512, ge=1, le=8192, description="Rewrite budget.")
    grm_info_ttl_s: float = Field(
        30.0, ge=0, description="How long the GRM model id/revision is trusted before refetch."
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Cache, quotas, usage, queues; redis+cluster://h1:p1,h2:p2: a Redis Cluster.",
    )
    redis_prefix: str = Field("rlmec:reward", description="Prefix of every Redis key.")
    redis_max_connections: int = Field(
        100, ge=1, le=10_000, description="Redis connections of the service's short commands."
    )
    redis_max_pull_connections: int = Field(
        64,
        ge=1,
        le=10_000,
        description="Redis connections for long polls, apart from the short commands' so "
        "that waiting trainers never starve them (each team also has max_waiting_pulls).",
    )
    redis_pool_timeout_s: float = Field(
        5.0, gt=0, le=300, description="How long a command waits for a free Redis connection."
    )
    redis_username: str | None = Field(
        None,
        description="Redis ACL user of the service and workers (`rlmec reward redis-users` "
        "makes it: rlmec-service); none = Redis's default user.",
    )
    redis_password_file: Path | None = Field(
        None,
        description="File holding that user's password (a Docker/Kubernetes secret), so the "
        "password is never in the environment or a command line.",
    )
    teams: list[TeamConfig] = Field(default_factory=list, description="Teams (JSON in env).")
    teams_file: Path | None = Field(None, description="JSON/YAML file with the teams.")
    allow_anonymous: bool = Field(
        False,
        description="Serve requests without a key as team 'anonymous' (private networks only).",
    )
    anonymous_rate_limit: int = Field(10_000, ge=1, description="Samples/window, anonymous.")
    anonymous_max_concurrency: int = Field(
        1024, ge=1, le=4096, description="Requests in flight, anonymous."
    )
    anonymous_max_samples_in_flight: int = Field(
        1024, ge=1, le=1_000_000, description="Samples in flight, anonymous."
    )
    cache_enabled: bool = True
    cache_ttl_s: int = Field(7 * 86_400, ge=1, description="Lifetime of a cached result.")
    cache_max_entries: int = Field(
        1_000_000, ge=1, description="Oldest entries are evicted beyond this many."
    )
    policy_tokenizers: dict[str, Path] = Field(
        default_factory=dict, description="Policy tokenizer name -> local directory."
    )
    reward_params: RewardParams = Field(
        default_factory=RewardParams, description="Defaults of OpenRLHF requests."
    )
    openrlhf_task: TaskType = Field("math", description="Default task of /get_reward.")
    answer_check_workers: int = Field(
        2, ge=1, le=64, description="Processes that check answers (§4) off the event loop."
    )
    answer_check_timeout_s: float = Field(
        5.0, gt=0, le=600, description="A sample's answer check is stopped after this long."
    )
    answer_check_memory_mib: int = Field(
        1024, ge=256, description="Address-space cap of each answer-checking process."
    )
    admission_wait_s: float = Field(
        120.0,
        ge=0,
        le=3600,
        description="How long a request over its team's concurrency waits for a slot before "
        "a 429 (below OpenRLHF's 180 s request timeout).",
    )
    lease_ttl_s: int = Field(
        900, ge=10, description="A concurrency slot frees itself after this if never released."
    )
    key_salt_file: Path | None = Field(
        None,
        description="File holding this deployment's secret salt: the teams' key_sha256 are "
        "then HMAC-SHA256(salt, key) (`rlmec reward hash-key --salt-file`), not sha256(key).",
    )
    host: str = Field("127.0.0.1", description="Bind address.")
    port: int = Field(8002, ge=1, le=65_535, description="Bind port.")

    @field_validator("key_salt_file")
    @classmethod
    def _salt_file(cls, value: Path | None) -> Path | None:
        if value is not None:
            read_secret_file(value, "key salt file")  # a clear error at start
        return value

    @field_validator("redis_password_file")
    @classmethod
    def _password_file(cls, value: Path | None) -> Path | None:
        read_password_file(value)  # unreadable or empty: a clear error at start, not at 1st use
        return value

    def key_salt(self) -> bytes | None:
        if self.key_salt_file is None:
            return None
        return read_secret_file(self.key_salt_file, "key salt file").encode()

    def redis_credentials(self) -> dict[str, Any]:
        """``username``/``password`` keyword arguments for ``Redis.from_url``."""
        return credentials(self.redis_username, self.redis_password_file)

    def connect_redis(self, max_connections: int | None = None) -> Any:
        """An asyncio client of ``redis_url`` with the service's credentials, its pool bounded
        by ``max_connections`` (default ``redis_max_connections``), blocking up to
        ``redis_pool_timeout_s`` for a free connection."""
        from rlmec.shared.redis_client import connect_async

        return connect_async(
            self.redis_url, max_connections=max_connections or self.redis_max_connections,
            pool_timeout_s=self.redis_pool_timeout_s, **self.redis_credentials(),
        )  # fmt: skip

    @field_validator("grm_urls")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError(
                "grm_urls is empty; set RLMEC_REWARD_GRM_URLS='[\"http://host:port\"]'"
            )
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"grm_urls entry {url!r} must start with http:// or https://")
        return [u.rstrip("/") for u in value]

    @field_validator("policy_tokenizers")
    @classmethod
    def _dirs(cls, value: dict[str, Path]) -> dict[str, Path]:
        for name, path in value.items():
            if not Path(path).is_dir():
                raise ValueError(
                    f"policy_tokenizers[{name!r}] = {str(path)!r} is not a directory; give a "
                    "local tokenizer directory (there is no model hub)"
                )
        return value

    @model_validator(mode="after")
    def _merge_teams(self) -> RewardSettings:
        if self.teams_file is not None:
            self.teams = [*self.teams, *load_teams_file(self.teams_file)]
        names = [t.name for t in self.teams]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"team names {dupes} appear more than once; make them unique")
        if ANONYMOUS in names:
            raise ValueError(f"team name {ANONYMOUS!r} is reserved for key-less access")
        for team in self.teams:
            if team.chat_template is not None and team.chat_template not in self.policy_tokenizers:
                raise ValueError(
                    f"team {team.name!r}: chat_template {team.chat_template!r} is not a "
                    f"registered policy tokenizer ({sorted(self.policy_tokenizers) or 'none'}); "
                    "register it in policy_tokenizers"
                )
        hashes = [h for t in self.teams for h in t.key_sha256]
        if len(hashes) != len(set(hashes)):
            raise ValueError("one key hash is given to two teams; every key belongs to one team")
        return self

    def anonymous_team(self) -> TeamConfig:
        return TeamConfig(
            name=ANONYMOUS,
            rate_limit=self.anonymous_rate_limit,
            max_concurrency=self.anonymous_max_concurrency,
            max_samples_in_flight=self.anonymous_max_samples_in_flight,
        )


def get_settings(**overrides: Any) -> RewardSettings:
    """Build the settings from the environment (never at import time)."""
    return RewardSettings(**overrides)
