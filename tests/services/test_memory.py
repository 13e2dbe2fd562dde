"""Memory under the largest requests each service accepts, repeated: both services as real
`rlmec ... serve` processes, their RSS read from /proc.

Stated bounds (README, "Resource bounds"):
- reward service: the largest accepted /v1/rollouts body (``max_body_bytes``), ten times in a
  row, peaks under 12x the body above the idle process (measured: 59 MiB for a 7.2 MiB body)
  and stays under that after every one of them; bodies over the limit cost nothing (refused
  unread);
- GRM service: the largest accepted /v1/tokenize request (``max_request_tokens`` characters),
  ten times, two at a time, peaks under 400 MiB above the idle process (measured: 90 MiB on
  the tiny model's tokenizer) and leaves under 100 MiB behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from rlmec.loop.redis_server import LocalRedis, free_port
from rlmec.services.reward.teams import hash_key
from rlmec.shared.schemas import MAX_TEXT_CHARS

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
KEY = "key-memory-0123456789"
MiB = 2**20


def rss_mib(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process, in MiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


@contextmanager
def service(args: list[str], env: dict[str, str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlmec", *args, "--port", str(port)],
        cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the service did not start"
            time.sleep(0.2)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def largest_rollouts_body(limit: int) -> bytes:
    """A /v1/rollouts body just under ``limit`` bytes: samples with every text at its maximum."""
    text = "7" * MAX_TEXT_CHARS
    one = {"question": text, "reference_solution": text, "prediction": text, "rewrite": text}
    n = limit // len(json.dumps(one)) - 1
    body = json.dumps({"samples": [one] * n}).encode()
    assert limit - len(json.dumps(one)) * 2 < len(body) <= limit
    return body


def test_reward_service_memory_under_the_largest_bodies(tmp_path: Path) -> None:
    limit = 8 * MiB
    teams = tmp_path / "teams.json"
    teams.write_text(json.dumps([{"name": "mem", "key_sha256": [hash_key(KEY)]}]))
    port = free_port()
    body = largest_rollouts_body(limit)
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    with LocalRedis() as redis, service(
        ["reward", "serve"],
        {"RLMEC_REWARD_REDIS_URL": redis.url, "RLMEC_REWARD_TEAMS_FILE": str(teams),
         "RLMEC_REWARD_MAX_BODY_BYTES": str(limit),
         "RLMEC_REWARD_GRM_URLS": f'["http://127.0.0.1:{free_port()}"]'},
        port,
    ) as proc:  # fmt: skip
        url = f"http://127.0.0.1:{port}/v1/rollouts"
        idle, _ = rss_mib(proc.pid)
        after = []
        with httpx.Client(timeout=120) as client:
            for i in range(10):
                resp = client.post(url, content=body, headers={**headers, "X-Try": str(i)})
                assert resp.status_code == 202, resp.text[:300]
                after.append(rss_mib(proc.pid)[0])
            over = body + b" " * (limit - len(body) + 1)
            for _ in range(5):
                assert client.post(url, content=over, headers=headers).status_code == 413
        now, peak = rss_mib(proc.pid)
    body_mib = len(body) / MiB
    print(f"reward: body {body_mib:.1f} MiB, idle {idle:.0f}, peak {peak:.0f}, after {after}")
    # The bound holds at the peak of all ten and after them. (RSS after each request wanders
    # by a few bodies as the allocator keeps pages, so a request-by-request trend is noise.)
    assert peak - idle < 12 * body_mib, (idle, peak, after)
    assert max([*after, now]) - idle < 12 * body_mib, (idle, after, now)


def test_grm_tokenize_memory_under_the_largest_requests(tiny_model_dir: Path) -> None:
    budget = 262_144  # the default max_request_tokens: /v1/tokenize's character budget
    texts = ["Natalia sold 48/2 = 24 clips. " * 3000] * (budget // 90_000)
    texts.append("9" * (budget - sum(map(len, texts))))
    assert sum(map(len, texts)) == budget
    port = free_port()
    with service(
        ["grm", "serve", "--model", str(tiny_model_dir), "--engine", "hf"],
        {"RLMEC_GRM_MAX_REQUEST_TOKENS": str(budget)},
        port,
    ) as proc:
        url = f"http://127.0.0.1:{port}/v1/tokenize"
        with httpx.Client(timeout=300) as client:
            first = client.post(url, json={"texts": texts})
            assert first.status_code == 200, first.text[:300]
            idle, _ = rss_mib(proc.pid)
            with ThreadPoolExecutor(2) as pool:
                codes = list(pool.map(lambda _: client.post(url, json={"texts": texts}).status_code,
                                      range(10)))  # fmt: skip
            assert codes == [200] * 10
            over = client.post(url, json={"texts": [*texts, "1"]})
            assert over.status_code == 413
        now, peak = rss_mib(proc.pid)
    print(f"grm tokenize: idle {idle:.0f} MiB, peak {peak:.0f}, after {now:.0f}")
    assert peak - idle < 400, (idle, peak)
    assert now - idle < 100, (idle, now)
