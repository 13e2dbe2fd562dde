"""Real servers for tests: an ASGI app under uvicorn on a free loopback port (in a thread), and
vLLM's OpenAI-compatible server (a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from rlmec.loop.redis_server import free_port
from rlmec.loop.stack import NotReady, wait_http


@contextmanager
def serve_app(
    app: Any, *, port: int | None = None, timeout: float = 60.0, **config_kwargs: Any
) -> Iterator[str]:
    """Yield the base URL while the server runs; shut it down gracefully on exit."""
    port = port or free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", **config_kwargs
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"uvicorn did not start on port {port} within {timeout} s")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_WORKER_MULTIPROC_METHOD": "spawn"}


@contextmanager
def vllm_openai_server(model: Path, *extra: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Start ``vllm.entrypoints.openai.api_server`` on the model (fp32, eager, 4096 tokens);
    yields (base URL, process) at once, so callers can start other things before
    :func:`wait_healthy`. Always stopped on exit."""
    port = free_port()
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
        "--dtype", "float32", "--host", "127.0.0.1", "--port", str(port), "--enforce-eager",
        "--max-model-len", "4096", *extra,
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, env={**os.environ, **VLLM_ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 300) -> None:
    """vLLM's server answers ``/health``, or the test fails with the end of its stderr."""
    try:
        wait_http(url, proc, timeout, path="/health")
    except NotReady as exc:
        err = proc.stderr.read().decode()[-3000:] if proc.stderr and proc.poll() is not None else ""
        pytest.fail(f"vLLM OpenAI server {exc}: {err}")
