"""The local stack's Redis keeps its data private (issue 26, item 7)."""

from __future__ import annotations

from pathlib import Path

import redis

from rlmec.loop.stack import Stack


def test_redis_data_dir_and_aof_are_private(tmp_path: Path) -> None:
    data = tmp_path / "redis"
    data.mkdir(mode=0o755)
    stack = Stack(tmp_path / "logs")
    try:
        url = stack.start_redis(data)
        redis.Redis.from_url(url).xadd("s", {"k": "v"})
    finally:
        stack.close()
    files = [p for p in data.rglob("*") if p.is_file()]
    assert files, "the AOF was not written"
    assert data.stat().st_mode & 0o077 == 0
    assert {p.name: p.stat().st_mode & 0o077 for p in files} == {p.name: 0 for p in files}
