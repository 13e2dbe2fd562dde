"""One real GRM service (hf engine, tiny model) on loopback, shared by the client tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.servers import serve_app


@pytest.fixture(scope="package")
def grm_url(tiny_model_dir: Path) -> Iterator[str]:
    from rlmec.services.grm.app import create_app
    from rlmec.services.grm.settings import GrmSettings

    app = create_app(GrmSettings(model=str(tiny_model_dir), engine="hf"))
    with serve_app(app) as url:
        yield url


@contextmanager
def team_service(
    grm_url: str, redis_url: str, team: str, key: str, **overrides: Any
) -> Iterator[str]:
    """The real reward service on loopback with one team (its own Redis prefix)."""
    from rlmec.services.reward.app import create_app
    from rlmec.services.reward.settings import RewardSettings, TeamConfig
    from rlmec.services.reward.teams import hash_key

    settings = RewardSettings(
        grm_urls=[grm_url], redis_url=redis_url, redis_prefix=f"rlmec:{team}-test",
        teams=[TeamConfig(name=team, key_sha256=[hash_key(key)])], grm_max_new_tokens=8,
        **overrides,
    )  # fmt: skip
    with serve_app(create_app(settings)) as url:
        yield url
