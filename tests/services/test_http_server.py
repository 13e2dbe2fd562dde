"""The header read timeout on a real uvicorn server: a slowloris client (headers one line at a
time, each well within the keep-alive timer) is cut off; normal and kept-alive requests are not."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

from fastapi import FastAPI

from rlmec.services.http_server import header_timeout_protocol
from tests.servers import serve_app

TIMEOUT_S = 0.6


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"ok": "yes"}

    return app


def _closed_after(conn: socket.socket, trickle: bytes | None, limit_s: float) -> float | None:
    """Seconds until the server closed ``conn`` (None if still open after ``limit_s``), sending
    ``trickle`` every 0.1 s meanwhile."""
    conn.settimeout(0.1)
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        try:
            if trickle:
                conn.sendall(trickle)
            if conn.recv(1024) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - started
    return None


def test_slow_headers_are_cut_off_and_normal_requests_are_not() -> None:
    with serve_app(_app(), http=header_timeout_protocol(TIMEOUT_S)) as url:
        address = urlsplit(url)
        host, port = address.hostname or "127.0.0.1", address.port or 80

        slow = socket.create_connection((host, port))
        slow.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n")
        closed = _closed_after(slow, b"X-Slow: 1\r\n", limit_s=5.0)
        assert closed is not None and closed < TIMEOUT_S + 1.0, closed
        slow.close()

        silent = socket.create_connection((host, port))
        closed = _closed_after(silent, None, limit_s=5.0)
        assert closed is not None and closed < TIMEOUT_S + 1.0, closed
        silent.close()

        # A normal client: two requests on one kept-alive connection, with a pause shorter
        # than the keep-alive timer but longer than the header timeout in between.
        with socket.create_connection((host, port)) as ok:
            for _ in range(2):
                ok.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
                ok.settimeout(5)
                reply = ok.recv(4096)
                assert reply.startswith(b"HTTP/1.1 200") and b'{"ok":"yes"}' in reply
                time.sleep(TIMEOUT_S * 1.5)


def test_without_the_timeout_the_slow_client_holds_on() -> None:
    """The same slowloris against plain uvicorn: still connected after 3x the timeout, which
    is what the protocol above exists to stop."""
    with serve_app(_app(), http="h11") as url:
        address = urlsplit(url)
        conn = socket.create_connection((address.hostname or "127.0.0.1", address.port or 80))
        conn.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n")
        assert _closed_after(conn, b"X-Slow: 1\r\n", limit_s=TIMEOUT_S * 3) is None
        conn.close()
