"""The processes the service benchmarks run against: Redis, a GRM (``rlmec grm serve``, the
tests' tiny model on hf unless told otherwise) and the reward service, each its own process."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.reward.run import wait_ready


def start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, env={**os.environ, **env}, stdout=subprocess.DEVNULL)


@contextmanager
def tiny_stack(reward_args: list[str], reward_env: dict[str, str]) -> Iterator[str]:
    """:func:`grm_stack` on the tests' tiny model with the hf engine."""
    from rlmec.services.grm.model_files import build_tiny_model

    model = build_tiny_model(Path(tempfile.mkdtemp(prefix="rlmec-bench-tiny-")))
    with grm_stack(model, "hf", reward_args, reward_env) as base:
        yield base


@contextmanager
def grm_stack(
    model: Path, engine: str, reward_args: list[str], reward_env: dict[str, str],
    grm_args: tuple[str, ...] = (),
) -> Iterator[str]:  # fmt: skip
    """Redis, ``rlmec grm serve --model MODEL --engine ENGINE`` and the reward service, each its
    own process; yield the reward service's base URL once both are ready, stop all on exit.
    ``reward_args`` are extra ``rlmec reward serve`` flags, ``reward_env`` its settings."""
    from rlmec.loop.redis_server import LocalRedis, free_port

    redis = LocalRedis().start()
    grm_port, reward_port = free_port(), free_port()
    grm_url, base = f"http://127.0.0.1:{grm_port}", f"http://127.0.0.1:{reward_port}"
    rlmec = [sys.executable, "-m", "rlmec"]
    grm_cmd = [*rlmec, "grm", "serve", "--model", str(model), "--engine", engine,
               "--port", str(grm_port), "--log-level", "warning", *grm_args]  # fmt: skip
    reward_cmd = [*rlmec, "reward", "serve", "--grm-url", grm_url, "--redis-url", redis.url,
                  "--port", str(reward_port), "--log-level", "warning", *reward_args]  # fmt: skip
    procs = [start(grm_cmd, {}), start(reward_cmd, reward_env)]
    try:
        wait_ready(grm_url, procs[0])
        wait_ready(base, procs[1])
        yield base
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
        redis.stop()
