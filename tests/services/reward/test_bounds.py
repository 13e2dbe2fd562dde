"""Byte bounds on the reward service (real HTTP on loopback): the API key is checked before a
body is read, bodies over the limit are refused unread (declared or streamed), a body that
trickles in is cut off, metadata is bounded."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from rlmec.loop.redis_server import LocalRedis, free_port
from rlmec.services.reward.app import create_app
from tests.servers import serve_app
from tests.services.reward.conftest import CORRECT, auth, reward_settings, sample

pytestmark = pytest.mark.integration

LIMIT = 256 * 1024


@pytest.fixture(scope="module")
def bounded(redis_server: LocalRedis) -> Iterator[str]:
    """A reward service with a 256 KiB body limit and a 1 s body timeout (no GRM needed:
    nothing here gets as far as scoring)."""
    settings = reward_settings(
        f"http://127.0.0.1:{free_port()}", redis_server.url, max_body_bytes=LIMIT,
        body_timeout_s=1.0,
    )  # fmt: skip
    with serve_app(create_app(settings)) as url:
        yield url


def big_body() -> bytes:
    return b'{"samples": [' + b'{"question": "' + b"x" * (2 * LIMIT) + b'"}]}'


def test_no_key_is_401_before_the_body_is_read(bounded: str) -> None:
    resp = httpx.post(bounded + "/v1/token-rewards", content=big_body(), timeout=30,
                      headers={"content-type": "application/json"})  # fmt: skip
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "missing_api_key"
    bad = httpx.post(bounded + "/get_reward", content=big_body(), timeout=30,
                     headers={"Authorization": "Bearer nope"})  # fmt: skip
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(bounded + "/health").status_code == 200  # public routes stay public


def test_a_declared_oversized_body_is_413(bounded: str) -> None:
    resp = httpx.post(bounded + "/v1/token-rewards", content=big_body(), timeout=30,
                      headers={**auth("alpha"), "content-type": "application/json"})  # fmt: skip
    assert resp.status_code == 413
    assert resp.json()["error"] == {
        "type": "payload_too_large", "code": "body_too_large", "param": None,
        "message": resp.json()["error"]["message"],
    }  # fmt: skip
    assert str(LIMIT) in resp.json()["error"]["message"]


def test_a_streamed_oversized_body_is_413(bounded: str) -> None:
    """No Content-Length (chunked): refused once the bytes received pass the limit."""

    def chunks() -> Iterator[bytes]:
        body = big_body()
        for i in range(0, len(body), 16 * 1024):
            yield body[i : i + 16 * 1024]

    resp = httpx.post(bounded + "/v1/token-rewards", content=chunks(), timeout=30,
                      headers={**auth("alpha"), "content-type": "application/json"})  # fmt: skip
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "body_too_large"


def test_a_trickling_body_is_408(bounded: str) -> None:
    """A client that declares a body and never finishes sending it holds nothing for long."""
    parts = urlsplit(bounded)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as conn:
        head = (
            f"POST /v1/token-rewards HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            f"{auth('alpha')['Authorization'].split()[1]}\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n{"
        )
        conn.sendall(head.encode())
        answer = conn.recv(4096).decode()  # the socket's 30 s timeout catches a hang
    assert answer.startswith("HTTP/1.1 408") and "body_timeout" in answer


def test_metadata_is_bounded(bounded: str) -> None:
    huge = sample(CORRECT, metadata={"blob": "y" * 70_000})
    resp = httpx.post(
        bounded + "/v1/token-rewards", json={"samples": [huge]}, headers=auth("alpha")
    )
    assert resp.status_code == 422 and resp.json()["error"]["param"] == "samples.0.metadata"
    assert "over 65536" in resp.json()["error"]["message"]
