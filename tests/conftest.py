"""Fixtures every test area shares: a real Redis server on a free loopback port and a tiny
random Llama (2 layers, hidden 64, BPE tokenizer trained on the spot)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from rlmec.shared.redis_server import LocalRedis

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalRedis]:
    """One real Redis-compatible server for the session; tests use distinct key prefixes or
    flush via ``redis_url``."""
    with LocalRedis() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: LocalRedis) -> Iterator[str]:
    """A clean database on the session's server."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield redis_server.url
    client.close()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A deterministic random Llama in fp32 with its tokenizer, built once per session."""
    from rlmec.services.grm.model_files import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))
