"""The GRM service app: ``create_app(settings, *, engine=None)``.

The lifespan starts the engine (built from settings unless one is given), and on shutdown
refuses new work, waits up to ``shutdown_grace_s`` for in-flight requests, then closes it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError

from rlmec.inference import create_engine
from rlmec.inference.engine import Engine
from rlmec.inference.tenants import current_tenant, tenant_from_headers
from rlmec.services.common import (
    ASGIApp,
    BodyGuard,
    RequestObserver,
    Scope,
    add_metrics_route,
    install_error_handlers,
    service_app,
)
from rlmec.services.grm.admin import add_admin_routes
from rlmec.services.grm.admission import Admission
from rlmec.services.grm.metrics import GrmMetrics
from rlmec.services.grm.routes import router
from rlmec.services.grm.service import GrmService
from rlmec.services.grm.settings import GrmSettings
from rlmec.shared.grm_schemas import TENANT_HEADER, TENANT_WEIGHT_HEADER

logger = logging.getLogger("rlmec.services.grm")

_ENDPOINTS = frozenset({"locate", "rewrite", "score", "tokenize", "models"})


def create_app(settings: GrmSettings, *, engine: Engine | None = None) -> FastAPI:
    """The GRM HTTP app. ``engine`` (tests, custom runtimes) replaces the one the settings
    name; either way the app's lifespan starts and closes it."""
    metrics = GrmMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = engine if engine is not None else create_engine(settings)
        admission = Admission(settings.max_concurrent_requests, settings.max_queued_requests)
        app.state.admission = admission
        await runtime.start()
        metrics.track_queue_depth(runtime.queue_depth)
        metrics.in_flight.set_function(lambda: float(admission.active))
        metrics.waiting.set_function(lambda: float(admission.waiting))
        app.state.service = GrmService(
            runtime, max_request_tokens=settings.max_request_tokens, metrics=metrics
        )
        try:
            yield
        finally:
            if not await admission.drain(settings.shutdown_grace_s):
                logger.warning(
                    "shutdown: %d request(s) still running after %.0f s; closing the engine",
                    admission.active, settings.shutdown_grace_s,
                )  # fmt: skip
            app.state.service = None
            await runtime.close()

    app = service_app(
        title="rlmec GRM service",
        version="1",
        summary="Locate, rewrite and score with a generative reward model (RLMEC).",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.service = None
    install_error_handlers(app)
    _count_validation_errors(app, metrics)
    app.include_router(router)
    add_metrics_route(app, metrics.registry, settings.metrics_token_file)
    add_admin_routes(app, settings.admin_token_file)
    app.add_middleware(
        BodyGuard, max_body_bytes=settings.max_body_bytes, body_timeout_s=settings.body_timeout_s
    )
    app.add_middleware(_RequestMetrics, metrics=metrics)
    app.add_middleware(_TenantHeaders)
    return app


class _TenantHeaders:
    """The request's tenant from the reward service's headers (:mod:`rlmec.inference.tenants`),
    for the engine's fair order of work; the context holds it for the whole request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        tenant = tenant_from_headers(headers.get(TENANT_HEADER), headers.get(TENANT_WEIGHT_HEADER))
        token = current_tenant.set(tenant)
        try:
            await self.app(scope, receive, send)
        finally:
            current_tenant.reset(token)


def _count_validation_errors(app: FastAPI, metrics: GrmMetrics) -> None:
    handler: Any = app.exception_handlers[RequestValidationError]

    async def counted(request: Any, exc: Exception) -> Any:
        metrics.errors.labels("invalid_request").inc()
        return await handler(request, exc)

    app.add_exception_handler(RequestValidationError, counted)


class _RequestMetrics(RequestObserver):
    """Counts every /v1 request by status, validation errors included, and times it."""

    def __init__(self, app: ASGIApp, metrics: GrmMetrics) -> None:
        super().__init__(app)
        self.metrics = metrics

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        path = scope.get("path", "")
        if not path.startswith("/v1/"):
            return
        endpoint = path.removeprefix("/v1/")
        endpoint = endpoint if endpoint in _ENDPOINTS else "other"  # bounded label set
        self.metrics.requests.labels(endpoint, str(status)).inc()
        self.metrics.latency.labels(endpoint).observe(seconds)
