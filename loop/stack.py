"""The platform's processes on loopback, for ``rlmec demo`` (and anyone embedding the loop).

Each service is a real process (``rlmec grm serve``, ``rlmec reward serve``, ``rlmec reward
worker``, ``rlmec rollout``, ``rlmec train``) in its own session, so that it, and whatever it
spawns (vLLM's engine core, DeepSpeed helpers), is one process group: stopping the stack stops
every group (SIGTERM, then SIGKILL after a grace period), whatever made it stop, Ctrl-C
included. The PIDs are written to ``<workdir>/pids.json`` while they run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from rlmec.loop.redis_server import LocalRedis, free_port

RLMEC = [sys.executable, "-m", "rlmec"]


# A launcher's variables (torchrun, or an earlier in-process train()) would make the trainer
# join a process group that is not there: each process here is a single-process launch.
LAUNCHER_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                 "MASTER_PORT")  # fmt: skip


def process_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    # The stack's processes share the cores, each with OpenMP threads on all of them. OpenMP's
    # default spins at every barrier for a core another process needs: with one vLLM engine
    # generating beside it, a trainer step took 2x as long spinning as sleeping (BENCHMARKS
    # ``online``), and the generation no longer.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


class NotReady(RuntimeError):
    """A server's process exited, or its URL did not answer 200 in time."""


def wait_http(url: str, proc: subprocess.Popen[Any], timeout: float, *, path: str = "/ready",
              heartbeat: Callable[[float], None] | None = None,
              every_s: float = 15.0) -> None:  # fmt: skip
    """Poll ``url + path`` until it answers 200 (the one readiness wait of the demo, ``rlmec
    up``, the benchmarks and the tests). :class:`NotReady` when ``proc`` exits or after
    ``timeout`` s; ``heartbeat`` gets the seconds waited every ``every_s``."""
    started = time.monotonic()
    deadline, beat = started + timeout, started + every_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise NotReady(f"exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}{path}", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if heartbeat is not None and time.monotonic() >= beat:
            beat += every_s
            heartbeat(time.monotonic() - started)
        time.sleep(0.5)
    raise NotReady(f"was not ready at {url} after {timeout:.0f} s")


class Stack:
    """Processes started in order, stopped in reverse order (a context manager)."""

    def __init__(self, log_dir: Path, grace_s: float = 20.0) -> None:
        self.log_dir = log_dir
        self.grace_s = grace_s
        log_dir.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.started_at: dict[str, float] = {}

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- starting ------------------------------------------------------------------------------

    def start_redis(self, data_dir: Path) -> str:
        """A valkey/redis server (AOF on) with its data in ``data_dir``."""
        data_dir.mkdir(parents=True, exist_ok=True)
        data_dir.chmod(0o700)  # the AOF holds every team's samples
        server = LocalRedis(appendonly=True, data_dir=str(data_dir))
        self.start("redis", server.command(), process_env(), umask=0o077)
        server.process = self.procs["redis"]
        try:
            server.wait_ready(timeout=30)
        except RuntimeError as exc:
            raise SystemExit(
                f"redis did not start: {exc}; its log:\n{self.tail('redis')}"
            ) from None
        return server.url

    def start(self, name: str, args: list[str], env: dict[str, str], umask: int = -1) -> Path:
        """Start ``args`` as ``name`` (output to ``<log_dir>/<name>.log``); returns the log.
        ``umask`` (-1: this process's) sets the mode of the files the process creates."""
        log = self.log_dir / f"{name}.log"
        self.started_at[name] = time.monotonic()
        with log.open("wb") as out:
            self.procs[name] = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                umask=umask,
            )  # fmt: skip
        self._write_pids()
        return log

    def wait_ready(self, name: str, url: str, timeout: float, *,
                   heartbeat: Callable[[str], None] | None = None,
                   every_s: float = 15.0) -> None:  # fmt: skip
        """Poll ``url``/ready until 200; an exited process or the timeout is a SystemExit
        with the end of its log. ``heartbeat`` gets a line every ``every_s`` seconds while it
        waits (a GRM takes minutes to load: silence looks like a hang)."""

        def beat(waited: float) -> None:
            if heartbeat is not None:
                heartbeat(self._still_starting(name, waited, timeout))

        try:
            wait_http(url, self.procs[name], timeout, heartbeat=beat, every_s=every_s)
        except NotReady as exc:
            raise SystemExit(f"{name} {exc}; its log:\n{self.tail(name)}") from None

    def _still_starting(self, name: str, waited: float, timeout: float) -> str:
        last = self.tail(name, lines=1).strip()
        seen = f"; its log says: {last[-120:]}" if last else ""
        return f"{name}: still starting ({waited:.0f} s of at most {timeout:.0f}){seen}"

    def tail(self, name: str, lines: int = 30) -> str:
        log = self.log_dir / f"{name}.log"
        text = log.read_text(errors="replace") if log.is_file() else ""
        return "\n".join(text.splitlines()[-lines:])

    def running(self, name: str) -> bool:
        return name in self.procs and self.procs[name].poll() is None

    # --- stopping ------------------------------------------------------------------------------

    def wait(self, name: str) -> int:
        """Wait for ``name`` to exit by itself; its exit code."""
        code = self.procs[name].wait()
        self.stop(name)
        return code

    def age(self, name: str) -> float:
        """Seconds since ``name`` started."""
        return time.monotonic() - self.started_at[name]

    def stop(self, name: str, grace_s: float | None = None) -> int | None:
        """SIGTERM the process group, SIGKILL it after the grace period; the exit code."""
        proc = self.procs.pop(name, None)
        if proc is None:
            return None
        _signal_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=self.grace_s if grace_s is None else grace_s)
        _signal_group(proc.pid, signal.SIGKILL)  # stragglers in the group, if any
        code = proc.wait()
        self._write_pids()
        return code

    def close(self) -> None:
        # A second Ctrl-C must not cut the cleanup short and leave processes behind.
        previous = {
            sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            for name in reversed(list(self.procs)):
                self.stop(name)
            self._write_pids()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def detach(self) -> dict[str, int]:
        """Leave every process running (``rlmec up``); their PIDs, also in ``pids.json``."""
        pids = self.pids()
        self.procs = {}
        return pids

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.procs.items()}

    def _write_pids(self) -> None:
        path = self.log_dir / "pids.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.pids()))
        os.replace(tmp, path)


def stop_detached(pids: dict[str, int], grace_s: float = 20.0,
                  reap_s: float = 10.0) -> tuple[list[str], list[str]]:  # fmt: skip
    """Stop the process groups a detached stack left (``rlmec down``), newest first: SIGTERM,
    then SIGKILL for what is still there after ``grace_s``, then wait up to ``reap_s`` for the
    group to be gone. Returns (the names that were running, the names still alive after all:
    a process stuck in the kernel, or one of another user)."""
    running = [name for name, pid in pids.items() if group_alive(pid)]
    for name in reversed(running):
        _signal_group(pids[name], signal.SIGTERM)
        _wait_gone(pids[name], grace_s)
        _signal_group(pids[name], signal.SIGKILL)
        _wait_gone(pids[name], reap_s)
    return running, [name for name in running if group_alive(pids[name])]


def _wait_gone(pid: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)


def port_or_free(preferred: int) -> tuple[int, bool]:
    """``preferred`` when nothing listens on it on loopback, else a free port; (port, whether
    it is the preferred one). The probe binds with ``SO_REUSEADDR``, as the servers do: the
    TIME_WAIT connections a stopped server leaves for a minute do not make its port taken
    (``rlmec down`` then ``up`` moved the ports before; issue 44)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port(), False
    return preferred, True


def group_alive(pid: int) -> bool:
    """Whether any process of the group ``pid`` leads is still there (zombies count not)."""
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # the leader may be a zombie of an exited parent: look at its state
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)  # the process leads its own session, hence its own group


def grm_args(model: Path, engine: str, port: int) -> list[str]:
    return [*RLMEC, "grm", "serve", "--model", str(model), "--engine", engine, "--port",
            str(port), "--max-model-len", "2048", "--max-batch-tokens", "2048"]  # fmt: skip


def reward_env(
    env: dict[str, str], *, grm_url: str, redis_url: str, team: str, key: str,
    policy_tokenizer: tuple[str, Path], limits: dict[str, Any] | None = None,
) -> dict[str, str]:  # fmt: skip
    """The reward service's and workers' settings, for one team."""
    entry = {"name": team, "key_sha256": [hashlib.sha256(key.encode()).hexdigest()],
             **(limits or {})}  # fmt: skip
    name, path = policy_tokenizer
    return {
        **env,
        "RLMEC_REWARD_GRM_URLS": json.dumps([grm_url]),
        "RLMEC_REWARD_REDIS_URL": redis_url,
        "RLMEC_REWARD_TEAMS": json.dumps([entry]),
        "RLMEC_REWARD_POLICY_TOKENIZERS": json.dumps({name: str(path)}),
    }


def loopback_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])
