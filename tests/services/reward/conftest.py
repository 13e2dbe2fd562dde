"""Reward-service fixtures: a real GRM service (hf engine, tiny model) on loopback shared by a
module, and a reward app on loopback with three teams and a real Redis."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from rlmec.loop.redis_server import LocalRedis
from rlmec.services.grm.app import create_app as create_grm_app
from rlmec.services.grm.settings import GrmSettings
from rlmec.services.reward.app import create_app
from rlmec.services.reward.settings import RewardSettings, TeamConfig
from rlmec.services.reward.teams import hash_key
from tests.servers import serve_app

KEYS = {
    "alpha": "key-alpha-0123456789",
    "beta": "key-beta-0123456789",
    "gamma": "key-gamma-01234",
    "delta": "key-delta-01234",
}

QUESTION = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
    "in May. How many clips did Natalia sell altogether in April and May?"
)
REFERENCE = (
    "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April "
    "and May.\n#### 72"
)
CORRECT = "Natalia sold 48/2 = 24 clips in May.\nShe sold 48+24 = 72 clips.\nThe answer is: 72"
WRONG = "Natalia sold 48*2 = 96 clips in May.\nShe sold 48+96 = 144 clips.\nThe answer is: 144"
REWRITE = "Natalia sold 48/2 = 24 clips in May.\nShe sold 48+24 = 72 clips.\nThe answer is: 72"


def sample(prediction: str, **extra: Any) -> dict[str, Any]:
    return {"question": QUESTION, "reference_solution": REFERENCE, "prediction": prediction,
            **extra}  # fmt: skip


def auth(team: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[team]}"}


def teams() -> list[TeamConfig]:
    return [
        TeamConfig(name="alpha", key_sha256=[hash_key(KEYS["alpha"])]),
        TeamConfig(name="beta", key_sha256=[hash_key(KEYS["beta"])], rate_limit=3),
        TeamConfig(
            name="gamma",
            key_sha256=[hash_key(KEYS["gamma"])],
            max_concurrency=1,
            private_cache=True,
        ),
        TeamConfig(
            name="delta",
            key_sha256=[hash_key(KEYS["delta"])],
            max_concurrency=1,
            max_waiting_requests=0,
        ),
    ]


def reward_settings(grm_url: str, redis_url: str, **overrides: Any) -> RewardSettings:
    values: dict[str, Any] = {
        "grm_urls": [grm_url],
        "redis_url": redis_url,
        "teams": teams(),
        "grm_max_new_tokens": 12,
        "grm_timeout_s": 60.0,
        "grm_info_ttl_s": 3600.0,
        "admission_wait_s": 2.0,
        **overrides,
    }
    return RewardSettings(**values)


@pytest.fixture(scope="module")
def grm_url(tiny_model_dir: Path) -> Iterator[str]:
    """The real GRM service (hf engine on the tiny random model) on loopback."""
    app = create_grm_app(GrmSettings(model=str(tiny_model_dir), engine="hf"))
    with serve_app(app) as url:
        yield url


@pytest.fixture(scope="session")
def chatml_tokenizer_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny tokenizer with SmolLM2-Instruct's real chat template (ChatML)."""
    from tests.shared.test_chat import SMOLLM2

    out = tmp_path_factory.mktemp("chatml-tokenizer")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny_model_dir / name).exists():
            shutil.copy(tiny_model_dir / name, out / name)
    (out / "chat_template.jinja").write_text(SMOLLM2)
    return out


@pytest.fixture(scope="module")
def reward_app(
    grm_url: str, redis_server: LocalRedis, tiny_model_dir: Path, chatml_tokenizer_dir: Path
) -> Iterator[tuple[FastAPI, str]]:
    """The reward service on loopback; the tiny model's tokenizer is registered as the
    policy tokenizer 'tiny' (same tokenizer as the GRM), and with a ChatML template as
    'chatml'."""
    settings = reward_settings(
        grm_url,
        redis_server.url,
        policy_tokenizers={"tiny": tiny_model_dir, "chatml": chatml_tokenizer_dir},
    )
    app = create_app(settings)
    with serve_app(app) as url:
        yield app, url


@pytest.fixture
def client(reward_app: tuple[FastAPI, str], redis_url: str) -> Iterator[httpx.Client]:
    """A client of the module's reward service over a freshly flushed Redis."""
    with httpx.Client(base_url=reward_app[1], timeout=120) as c:
        yield c


def model_list_response(*adapters: str) -> httpx.Response:
    """A fake GRM's ``/v1/models`` answer: base model ``m`` and ``adapters`` on it."""
    from rlmec.shared.grm_schemas import ModelCard, ModelList

    card = ModelCard(id="m", revision="r", tokenizer="t", max_model_len=2048, engine="hf",
                     eos_token="</s>", eos_token_id=2)  # fmt: skip
    cards = [card, *(card.model_copy(update={"id": a, "revision": f"r-{a}", "parent": "m"})
                     for a in adapters)]  # fmt: skip
    return httpx.Response(200, json=ModelList(data=cards).model_dump())


@asynccontextmanager
async def pipeline_on(
    redis_url: str, grm: Callable[..., Any], **options: Any
) -> AsyncIterator[Any]:
    """A real reward pipeline (its cache on the test Redis, a real answer checker) whose GRM
    is the handler ``grm`` (an httpx mock transport's, sync or async)."""
    from redis.asyncio import Redis

    from rlmec.services.reward.cache import RewardCache
    from rlmec.services.reward.grm_backend import GrmBackend
    from rlmec.services.reward.pipeline import RewardPipeline
    from rlmec.services.reward.policy_tokenizers import TokenizerRegistry
    from rlmec.shared.checking import AnswerChecker

    redis = Redis.from_url(redis_url)
    checker = AnswerChecker(workers=1, timeout_s=5.0, memory_mib=1024)
    try:
        yield RewardPipeline(
            GrmBackend(["http://grm"], transport=httpx.MockTransport(grm)),
            RewardCache(redis, prefix="t", ttl_s=60, max_entries=100),
            TokenizerRegistry({}), checker, redis=redis, prefix="t", max_new_tokens=16,
            grm_info_ttl_s=60, **options,
        )  # fmt: skip
    finally:
        checker.close()
        await redis.aclose()
