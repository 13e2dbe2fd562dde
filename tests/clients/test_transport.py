"""Timeouts and retries over a real socket (uvicorn on loopback)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI

from rlmec.clients import APITimeoutError, AsyncClient, Client
from rlmec.clients._base import Call, dict_parser
from tests.clients.fake_reward import create_fake_app
from tests.clients.helpers import SAMPLE
from tests.servers import serve_app

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FastAPI, str]]:
    app = create_fake_app()
    with serve_app(app) as url:
        yield app, url


def test_read_timeout_raises_api_timeout_error(served: tuple[FastAPI, str]) -> None:
    _, url = served
    with Client(url, timeout=0.3) as client, pytest.raises(APITimeoutError, match="timed out"):
        client._send(Call("GET", "/slow", dict_parser))


async def test_async_client_retries_503_over_http(served: tuple[FastAPI, str]) -> None:
    app, url = served
    app.state.calls.clear()
    app.state.fail_503 = 1
    async with AsyncClient(url, api_key="k") as client:
        out = await client.token_rewards([SAMPLE])
    assert out.results[0].status == "scored"
    assert app.state.calls == [(1, "Bearer k"), (1, "Bearer k")]
