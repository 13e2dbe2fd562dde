"""The token-reward service: ``create_app(settings)`` builds the FastAPI app; its lifespan
opens Redis and the scoring pipeline (GRM client, cache, policy tokenizers) onto
``app.state`` and closes them on shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.routing import Match

from rlmec.services.common import (
    DOCS_PATHS,
    ASGIApp,
    BodyGuard,
    Precheck,
    RequestObserver,
    Scope,
    add_metrics_route,
    declare_bearer_auth,
    error_response,
    install_error_handlers,
    is_docs_path,
    service_app,
)
from rlmec.services.reward import inspector, rollouts
from rlmec.services.reward.coalesce import Coalescer
from rlmec.services.reward.deps import CALLER, team_for
from rlmec.services.reward.metrics import RewardMetrics
from rlmec.services.reward.pipeline import RewardPipeline, open_pipeline
from rlmec.services.reward.pulls import WaitingPulls
from rlmec.services.reward.quotas import QuotaGate
from rlmec.services.reward.routes import router
from rlmec.services.reward.settings import RewardSettings
from rlmec.services.reward.teams import TeamDirectory
from rlmec.shared.errors import AuthenticationError

_ERROR_TYPES = {
    401: "auth", 403: "forbidden", 413: "too_large", 422: "invalid", 429: "rate_limited",
    499: "client_closed", 503: "unavailable",
}  # fmt: skip


def _lifespan(
    settings: RewardSettings, pipeline: RewardPipeline | None
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            redis = settings.connect_redis()
            stack.push_async_callback(redis.aclose)
            pull_redis = settings.connect_redis(settings.redis_max_pull_connections)
            stack.push_async_callback(pull_redis.aclose)
            app.state.redis, app.state.pull_redis = redis, pull_redis
            app.state.waiting_pulls = WaitingPulls()
            app.state.quotas = QuotaGate(
                redis,
                prefix=settings.redis_prefix,
                lease_ttl_s=settings.lease_ttl_s,
                admission_wait_s=settings.admission_wait_s,
                wait_seconds=app.state.metrics.admission_wait,
            )
            app.state.pipeline = pipeline or await stack.enter_async_context(
                open_pipeline(settings)
            )
            app.state.coalescer = Coalescer(
                app.state.pipeline.score,
                window_s=settings.coalesce_window_ms / 1000,
                max_samples=settings.grm_batch_size,
            )
            try:
                yield
            finally:
                app.state.pipeline = app.state.quotas = app.state.redis = None
                app.state.coalescer = None
                app.state.pull_redis = app.state.waiting_pulls = None

    return lifespan


class _RequestMetrics(RequestObserver):
    """Latency, requests and errors per team and route."""

    def __init__(self, app: ASGIApp, metrics: RewardMetrics) -> None:
        super().__init__(app)
        self.metrics = metrics

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", "unmatched")
        if route in ("/metrics", "/health", "/ready", "unmatched"):
            return
        team = scope.get("state", {}).get("team", "unknown")  # set by current_team
        self.metrics.latency.labels(team, route).observe(seconds)
        self.metrics.requests.labels(team, route, str(status)).inc()
        if status >= 400:
            kind = _ERROR_TYPES.get(status, "server" if status >= 500 else "client")
            self.metrics.errors.labels(team, route, kind).inc()


# Routes anyone may call; every other one needs a team's key before its body is read.
PUBLIC_PATHS = frozenset({"/health", "/ready", "/metrics"}) | DOCS_PATHS | inspector.PAGE_PATHS


def _key_before_body(app: FastAPI, directory: TeamDirectory) -> Precheck:
    """A request to a team route with no valid key is a 401 before its body is read; the team
    found is handed to the route's dependency (request state), so the key is hashed once."""

    def precheck(scope: Scope) -> JSONResponse | None:
        path = scope.get("path") or ""
        if path in PUBLIC_PATHS or is_docs_path(path):
            return None
        header = dict(scope.get("headers") or []).get(b"authorization")
        try:
            team = team_for(directory, header.decode("latin-1") if header is not None else None)
        except AuthenticationError as exc:
            # Routing never runs for this request: name its route for the metrics.
            matched = [r for r in app.router.routes if r.matches(scope)[0] == Match.FULL]
            if matched:
                scope["route"] = matched[0]
            return error_response(
                exc.status_code, exc.type, exc.message, code=exc.code, headers=exc.headers
            )
        scope.setdefault("state", {})[CALLER] = team  # the route's dependency reuses it
        return None

    return precheck


def create_app(settings: RewardSettings, *, pipeline: RewardPipeline | None = None) -> FastAPI:
    """The app; pass ``pipeline`` to reuse one (tests, embedding), else the lifespan opens
    one from ``settings``."""
    app = service_app(
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
    teams = [t.name for t in settings.teams]

    async def read_streams() -> None:  # the team streams' gauges, at each scrape
        await metrics.read_streams(getattr(app.state, "redis", None), teams)

    add_metrics_route(app, metrics.registry, settings.metrics_token_file, refresh=read_streams)
    app.add_middleware(
        BodyGuard,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
        precheck=_key_before_body(app, app.state.teams),
    )
    app.add_middleware(_RequestMetrics, metrics=metrics)
    app.include_router(router)
    app.include_router(rollouts.router)
    app.include_router(inspector.router)
    declare_bearer_auth(app, PUBLIC_PATHS)
    return app
