"""Pooled connections survive a Redis restart (issue 26, item 5)."""

from __future__ import annotations

import asyncio

from rlmec.loop.redis_server import LocalRedis
from rlmec.shared.redis_client import connect, connect_async


def test_pooled_async_connections_reconnect_after_a_restart() -> None:
    async def burst(client: object, n: int) -> list[object]:
        return await asyncio.gather(*(client.incr("n") for _ in range(n)), return_exceptions=True)  # type: ignore[attr-defined]

    async def main(server: LocalRedis) -> list[object]:
        client = connect_async(server.url)
        try:
            await burst(client, 20)  # 20 connections in the pool
            server.restart()
            return await burst(client, 20)
        finally:
            await client.aclose()

    with LocalRedis(appendonly=True) as server:
        results = asyncio.run(main(server))
    assert [r for r in results if isinstance(r, Exception)] == []


def test_a_sync_client_reconnects_after_a_restart() -> None:
    with LocalRedis(appendonly=True) as server:
        client = connect(server.url)
        client.set("k", "v")
        server.restart()
        assert client.get("k") == b"v"
        client.close()
