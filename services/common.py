"""Plumbing both services share: the error envelope handlers, the /metrics route, and running
a request's work so that it is cancelled when the client goes away.

Every error leaves a service as ``{"error": {"type", "message", "param", "code"}}``: domain
errors with their own status, validation errors as 422 naming the field path, unknown
exceptions as 500 (never 400).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from rlmec.shared.errors import (
    BodyTimeoutError,
    ClientDisconnectedError,
    ErrorBody,
    ErrorEnvelope,
    PayloadTooLargeError,
    RlmecError,
)
from rlmec.shared.secret_files import read_secret_file

logger = logging.getLogger("rlmec.services")
T = TypeVar("T")
Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Any]

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorEnvelope, "description": desc}
    for code, desc in {
        401: "Missing or invalid API key.",
        413: "Input exceeds a size limit.",
        422: "Invalid request; `param` names the field.",
        429: "Saturated or over quota; retry after `Retry-After` seconds.",
        503: "A dependency is not ready.",
    }.items()
}


def error_response(
    status: int,
    type_: str,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = ErrorEnvelope(error=ErrorBody(type=type_, message=message, param=param, code=code))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _loc_to_param(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) if parts else "body"


async def _rlmec_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RlmecError)
    return error_response(
        exc.status_code, exc.type, exc.message, param=exc.param, code=exc.code,
        headers=exc.headers,
    )  # fmt: skip


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request", "type": ""}
    param = _loc_to_param(tuple(first.get("loc", ())))
    if first.get("type") == "json_invalid":
        message = f"request body is not valid JSON: {first.get('msg')}"
    else:
        message = f"{param}: {first.get('msg')}"
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more error(s))"
    code = str(first.get("type") or "") or None
    return error_response(422, "invalid_request", message, param=param, code=code)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    kinds = {404: "not_found", 405: "method_not_allowed", 401: "authentication_error"}
    return error_response(
        exc.status_code, kinds.get(exc.status_code, "http_error"), str(exc.detail),
        headers=getattr(exc, "headers", None),
    )  # fmt: skip


async def _unhandled(_: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", f"internal error: {type(exc).__name__}")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RlmecError, _rlmec_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unhandled)


def add_metrics_route(
    app: FastAPI, registry: CollectorRegistry, token_file: Path | None = None,
    refresh: Callable[[], Awaitable[None]] | None = None,
) -> None:  # fmt: skip
    """``GET /metrics`` in Prometheus text format. Each app owns its registry, so several
    apps in one process (tests) never clash on metric names. With ``token_file`` (a secret;
    Prometheus sends it with ``authorization: {credentials_file: ...}``) the route needs
    ``Authorization: Bearer <token>``: the metrics name every team and its activity.
    ``refresh`` sets the gauges read at scrape time (e.g. from Redis) before they are sent."""
    token = read_secret_file(token_file, "metrics token file") if token_file else None

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        if token is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return error_response(
                    401, "auth", "/metrics needs the metrics token: Authorization: Bearer TOKEN",
                    code="invalid_metrics_token", headers={"WWW-Authenticate": "Bearer"},
                )  # fmt: skip
        if refresh is not None:
            await refresh()
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def declare_bearer_auth(app: FastAPI, public: frozenset[str]) -> None:
    """Put the API-key scheme into the OpenAPI document: every operation outside ``public``
    needs ``Authorization: Bearer <key>`` (checked before the body is read)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description,
                routes=app.routes,
            )  # fmt: skip
            schema.setdefault("components", {})["securitySchemes"] = {
                "apiKey": {"type": "http", "scheme": "bearer",
                           "description": "The team's API key (`rlmec reward hash-key`)."}
            }  # fmt: skip
            for path, operations in schema.get("paths", {}).items():
                if path not in public:
                    for operation in operations.values():
                        operation["security"] = [{"apiKey": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


async def _watch_disconnect(request: Request, task: asyncio.Task[Any]) -> None:
    # Waits on the client's next ASGI message instead of polling ``is_disconnected``: once the
    # body is read the server sends only ``http.disconnect`` (the client went away, or the
    # response is done), as Starlette's StreamingResponse listens for it. Polling every 0.1 s
    # cost 44% of the reward service's CPU with 512 one-sample requests in flight (py-spy).
    while not task.done():
        message = await request.receive()
        if message["type"] == "http.disconnect":
            task.cancel()
            return


async def run_until_disconnect(
    request: Request, work: Awaitable[T], *, timeout_s: float | None = None
) -> T:
    """Run ``work`` as a task and cancel it when the client disconnects (then raise
    :class:`ClientDisconnectedError`), so abandoned work holds no engine, slot or quota.
    Raises ``TimeoutError`` after ``timeout_s``. Needs pure ASGI middleware only:
    ``BaseHTTPMiddleware`` hides the disconnect from the route."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.create_task(_watch_disconnect(request, task))
    try:
        return await asyncio.wait_for(task, timeout_s)
    except asyncio.CancelledError:
        if watcher.done() and task.cancelled():
            raise ClientDisconnectedError("client disconnected; work cancelled") from None
        raise
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


class RequestObserver(ABC):
    """Pure ASGI middleware (not ``BaseHTTPMiddleware``, which hides a client's disconnect
    from the route): times every HTTP request and hands its status to :meth:`observe`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}

        async def send_wrapper(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.observe(scope, status["code"], time.perf_counter() - started)

    @abstractmethod
    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        """Record one finished request (metrics); must not raise."""


# Looks at a request's headers before its body is read: a response refuses it, None lets it on.
Precheck = Callable[[Scope], "JSONResponse | None"]


class BodyGuard:
    """Pure ASGI middleware bounding what a request may cost before the app parses it:

    - ``precheck(scope)`` runs on the headers alone (the reward service checks the API key
      there), so an unauthenticated body is never read;
    - a body over ``max_body_bytes`` is a 413: at once when ``Content-Length`` says so, else as
      soon as the bytes received pass it (chunked uploads), without reading further;
    - a client that takes longer than ``body_timeout_s`` to send its body gets a 408.

    The body is read here and handed to the app whole (the app would read it whole anyway):
    errors raised from inside the app's own body reading would come out as FastAPI's 400.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        body_timeout_s: float,
        precheck: Precheck | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.precheck = precheck

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = self.precheck(scope) if self.precheck is not None else None
        if refused is None:
            refused = self._declared_too_large(scope)
        if refused is not None:
            await refused(scope, receive, send)
            return
        try:
            body = await self._read_body(receive)
        except RlmecError as exc:
            await error_response(exc.status_code, exc.type, exc.message, code=exc.code)(
                scope, receive, send
            )
            return
        await self.app(scope, _replay(body, receive), send)

    def _declared_too_large(self, scope: Scope) -> JSONResponse | None:
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is None:
            return None
        try:
            declared = int(length)
        except ValueError:
            return error_response(400, "invalid_request", "Content-Length is not a number")
        if declared <= self.max_body_bytes:
            return None
        error = PayloadTooLargeError(self._message(declared), code="body_too_large")
        return error_response(413, error.type, error.message, code=error.code)

    def _message(self, size: int) -> str:
        return (
            f"request body of {size}+ bytes is over the service's limit of "
            f"{self.max_body_bytes} bytes; send smaller batches"
        )

    async def _read_body(self, receive: Any) -> bytes:
        chunks: list[bytes] = []
        received = 0
        try:
            async with asyncio.timeout(self.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":  # the client went away
                        raise ClientDisconnectedError("client disconnected while sending")
                    chunk = message.get("body", b"")
                    received += len(chunk)
                    if received > self.max_body_bytes:
                        raise PayloadTooLargeError(self._message(received), code="body_too_large")
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            raise BodyTimeoutError(
                f"the request body did not arrive within {self.body_timeout_s:g} s; send it "
                "at once",
                code="body_timeout",
            ) from None


def _replay(body: bytes | None, receive: Any) -> Any:
    """A ``receive`` that gives the app the already-read body, then the client's own messages
    (a disconnect)."""

    async def replay() -> MutableMapping[str, Any]:
        nonlocal body
        if body is not None:
            message = {"type": "http.request", "body": body, "more_body": False}
            body = None
            return message
        result: MutableMapping[str, Any] = await receive()
        return result

    return replay


# Swagger UI and ReDoc from the assets fastapi-offline ships, not a CDN: /docs and /redoc work
# on an air-gapped cluster.
DOCS_ASSETS = "/docs-assets"
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


def service_app(**kwargs: Any) -> FastAPI:
    """A FastAPI app whose ``/docs`` and ``/redoc`` load their scripts from this service
    (``DOCS_ASSETS``), never from the internet."""
    return FastAPIOffline(static_url=DOCS_ASSETS, **kwargs)


def is_docs_path(path: str) -> bool:
    """The documentation pages and their assets (public on every service)."""
    return path in DOCS_PATHS or path.startswith(DOCS_ASSETS + "/")
