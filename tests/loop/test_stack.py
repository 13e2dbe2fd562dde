"""The local stack: its Redis keeps its data private (issue 26, item 7); waiting says how it
goes; ports; stopping waits until every group is gone (issue 30)."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest
import redis

from rlmec.loop.redis_server import free_port
from rlmec.loop.stack import (
    NotReady,
    Stack,
    group_alive,
    port_or_free,
    process_env,
    stop_detached,
    wait_http,
)


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


def test_waiting_for_a_slow_service_says_how_long_and_what_its_log_says(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "logs")
    beats: list[str] = []
    try:
        stack.start("grm", [sys.executable, "-c", "print('loading weights', flush=True); "
                            "import time; time.sleep(60)"], dict(os.environ))  # fmt: skip
        with pytest.raises(SystemExit, match="grm was not ready"):
            stack.wait_ready("grm", f"http://127.0.0.1:{free_port()}", 3.5,
                             heartbeat=beats.append, every_s=1.0)  # fmt: skip
    finally:
        stack.close()
    assert len(beats) >= 2, beats
    assert beats[-1].startswith("grm: still starting (")
    assert beats[-1].endswith("its log says: loading weights")


def test_wait_http_stops_at_an_exited_process_and_at_a_ready_url(tmp_path: Path) -> None:
    """The one readiness wait: an exit is reported at once (not after the timeout), and a
    server answering 200 on the path ends the wait."""
    import subprocess

    dead = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    started = time.monotonic()
    with pytest.raises(NotReady, match="exited with 3"):
        wait_http(f"http://127.0.0.1:{free_port()}", dead, timeout=60)
    assert time.monotonic() - started < 30
    port = free_port()
    (tmp_path / "health").write_text("ok")
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                               "127.0.0.1", "--directory", str(tmp_path)],
                              stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}", server, timeout=30, path="/health")
        with pytest.raises(NotReady, match="was not ready"):
            wait_http(f"http://127.0.0.1:{port}", server, timeout=1.5, path="/ready")  # a 404
    finally:
        server.terminate()
        server.wait()


def test_a_taken_port_falls_back_to_a_free_one() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        port, ok = port_or_free(busy)
        assert not ok and port != busy
    assert port_or_free(busy) == (busy, True)


def test_a_port_a_stopped_server_left_in_time_wait_is_free() -> None:
    """A server that closed its side first leaves TIME_WAIT on its port for a minute; `rlmec
    down` then `up` moved the ports because the probe counted it as taken (issue 44)."""
    port = free_port()
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen()
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = server.accept()
    conn.close()  # the server closes first: its side of the connection goes to TIME_WAIT
    client.recv(1)
    client.close()
    server.close()
    plain = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # what the probe did
    with plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))
    assert port_or_free(port) == (port, True)


def test_down_stops_every_group_and_waits_until_it_is_gone(tmp_path: Path) -> None:
    # A child that ignores SIGTERM: only the SIGKILL after the grace period ends the group.
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    stack = Stack(tmp_path / "logs")
    stack.start("stubborn", [sys.executable, "-c", code], dict(os.environ))
    stack.start("plain", [sys.executable, "-c", "import time; time.sleep(60)"], dict(os.environ))
    pids = stack.detach()
    time.sleep(0.5)  # the handler is installed
    stopped, alive = stop_detached(pids, grace_s=1.0)
    assert sorted(stopped) == ["plain", "stubborn"] and alive == []
    assert not any(group_alive(pid) for pid in pids.values())


def test_stack_processes_sleep_at_openmp_barriers_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert process_env()["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # a user's choice stands
    assert process_env()["OMP_WAIT_POLICY"] == "ACTIVE"
