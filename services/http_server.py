"""uvicorn with a header read timeout, for both services.

uvicorn bounds the *size* of a request's headers but not the *time* they take: a client that
sends one header byte every few seconds (slowloris) holds a connection forever, since every byte
also cancels the keep-alive timer. :func:`header_timeout_protocol` makes uvicorn's h11 protocol
close a connection whose request headers are not complete ``seconds`` after it connected or
after the first byte of the request; the body has its own bound (``BodyGuard``'s
``body_timeout_s``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol


class _HeaderTimeoutProtocol(H11Protocol):
    header_timeout_s = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and self.conn.their_state is h11.IDLE:
            self._arm()  # the first byte of the next request on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm()  # the headers are in

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.logger.info("closing a connection whose request headers took over %s s",
                             self.header_timeout_s)  # fmt: skip
            self.transport.close()


def header_timeout_protocol(seconds: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, closing connections whose headers take over ``seconds``."""
    return type("HeaderTimeoutProtocol", (_HeaderTimeoutProtocol,), {"header_timeout_s": seconds})


def serve(app: Any, *, host: str, port: int, header_timeout_s: float, **kwargs: Any) -> None:
    """``uvicorn.run`` with the header timeout (h11; the request line and headers parsed by
    the same library whatever is installed)."""
    uvicorn.run(app, host=host, port=port, http=header_timeout_protocol(header_timeout_s),
                **kwargs)  # fmt: skip
