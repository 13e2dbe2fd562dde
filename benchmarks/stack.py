"""The processes the service benchmarks run against: Redis, a GRM on the tests' tiny model
(``rlmec grm serve --engine hf``) and the reward service, each its own process."""

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
    """Yield the reward service's base URL once it and its GRM are ready; stop all on exit.
    ``reward_args`` are extra ``rlmec reward serve`` flags, ``reward_env`` its settings."""
    from rlmec.services.grm.model_files import build_tiny_model
    from rlmec.shared.redis_server import LocalRedis, free_port

    model = build_tiny_model(Path(tempfile.mkdtemp(prefix="rlmec-bench-tiny-")))
    redis = LocalRedis().start()
    grm_port, reward_port = free_port(), free_port()
    grm_url, base = f"http://127.0.0.1:{grm_port}", f"http://127.0.0.1:{reward_port}"
    rlmec = [sys.executable, "-m", "rlmec"]
    grm_cmd = [*rlmec, "grm", "serve", "--model", str(model), "--engine", "hf",
               "--port", str(grm_port), "--log-level", "warning"]  # fmt: skip
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
