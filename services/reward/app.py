"""The token-reward service: ``create_app(settings)`` builds the FastAPI app; its lifespan
opens Redis and the scoring pipeline (GRM client, cache, policy tokenizers) onto
``app.state`` and closes them on shutdown."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager

from fastapi import FastAPI, Request, Response
from redis.asyncio import Redis

from rlmec.services.common import add_metrics_route, install_error_handlers
from rlmec.services.reward import rollouts
from rlmec.services.reward.metrics import RewardMetrics
from rlmec.services.reward.pipeline import RewardPipeline, open_pipeline
from rlmec.services.reward.quotas import QuotaGate
from rlmec.services.reward.routes import router
from rlmec.services.reward.settings import RewardSettings
from rlmec.services.reward.teams import TeamDirectory

_ERROR_TYPES = {401: "auth", 403: "forbidden", 422: "invalid", 429: "rate_limited"}


def _lifespan(
    settings: RewardSettings, pipeline: RewardPipeline | None
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            redis = Redis.from_url(settings.redis_url)
            stack.push_async_callback(redis.aclose)
            app.state.redis = redis
            app.state.quotas = QuotaGate(
                redis, prefix=settings.redis_prefix, lease_ttl_s=settings.lease_ttl_s
            )
            app.state.pipeline = pipeline or await stack.enter_async_context(
                open_pipeline(settings)
            )
            try:
                yield
            finally:
                app.state.pipeline = app.state.quotas = app.state.redis = None

    return lifespan


def _metrics_middleware(
    metrics: RewardMetrics,
) -> Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    async def observe(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        if route in ("/metrics", "/health", "/ready", "unmatched"):
            return response
        team = getattr(request.state, "team", "unknown")
        status = response.status_code
        metrics.latency.labels(team, route).observe(time.perf_counter() - started)
        metrics.requests.labels(team, route, str(status)).inc()
        if status >= 400:
            kind = _ERROR_TYPES.get(status, "server" if status >= 500 else "client")
            metrics.errors.labels(team, route, kind).inc()
        return response

    return observe


def create_app(settings: RewardSettings, *, pipeline: RewardPipeline | None = None) -> FastAPI:
    """The app; pass ``pipeline`` to reuse one (tests, embedding), else the lifespan opens
    one from ``settings``."""
    app = FastAPI(
        title="rlmec token-reward service",
        version="1",
        description="RLMEC token rewards from a generative reward model, per team.",
        lifespan=_lifespan(settings, pipeline),
    )
    metrics = RewardMetrics()
    app.state.settings = settings
    app.state.teams = TeamDirectory(settings)
    app.state.metrics = metrics
    install_error_handlers(app)
    add_metrics_route(app, metrics.registry)
    app.middleware("http")(_metrics_middleware(metrics))
    app.include_router(router)
    app.include_router(rollouts.router)
    return app
