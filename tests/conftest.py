"""Fixtures every test area shares: a real Redis server on a free loopback port and a tiny
random Llama (2 layers, hidden 64, BPE tokenizer trained on the spot)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from rlmec.loop.redis_server import LocalRedis

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


# A chat template for the tiny model (it has none), so the same server also answers
# /v1/chat/completions and /v1/messages (the teacher tests).
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}"
    "{% if not loop.last %}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}\n<|assistant|>{% endif %}"
)


@pytest.fixture(scope="session")
def vllm_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real ``vllm.entrypoints.openai.api_server`` on the tiny model for the session
    (eval's remote engine, sampling, the teacher)."""
    from tests.servers import vllm_openai_server, wait_healthy

    template = tmp_path_factory.mktemp("chat") / "chat.jinja"
    template.write_text(TINY_CHAT_TEMPLATE)
    with vllm_openai_server(tiny_model_dir, "--chat-template", str(template)) as (url, proc):
        wait_healthy(url, proc)
        yield url
