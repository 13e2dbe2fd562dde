"""A stand-in reward service for CLI and transport tests over real HTTP: same routes and wire
schemas as services/reward, trivial scoring, and scripted failures (503s, a full queue)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from rlmec.services.common import error_response, install_error_handlers
from rlmec.shared.queue import BatchStatus, PushResult
from rlmec.shared.schemas import (
    GrmInfo,
    ScoredSample,
    TokenRewardsRequest,
    TokenRewardsResponse,
    TokenValues,
)


def _score(sample: Any) -> ScoredSample:
    correct = sample.prediction.strip().endswith(sample.reference_solution.split()[-1])
    value = 0.25 if correct else -0.1
    return ScoredSample(
        id=sample.id, status="scored", question=sample.question, prediction=sample.prediction,
        correct=correct, predicted_answer=None, reference_answer=sample.reference_answer,
        rewards=TokenValues(token_ids=[1, 2], tokens=["a", "</s>"], offsets=[(0, 1), (1, 1)],
                            values=[value, 0.0]),
    )  # fmt: skip


def create_fake_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.state.fail_503 = 0  # the next N token-reward calls answer 503
    app.state.queue_full = 0  # the next N pushes answer 429 queue_full
    app.state.calls = []
    app.state.batches = {}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/token-rewards", response_model=None)
    async def token_rewards(body: TokenRewardsRequest, request: Request) -> Any:
        app.state.calls.append((len(body.samples), request.headers.get("authorization")))
        if app.state.fail_503 > 0:
            app.state.fail_503 -= 1
            return error_response(503, "service_unavailable", "GRM warming up",
                                  headers={"Retry-After": "0"})  # fmt: skip
        return TokenRewardsResponse(
            results=[_score(s) for s in body.samples], grm=GrmInfo(model_id="fake", revision="0")
        )

    @app.post("/v1/rollouts", status_code=202, response_model=None)
    async def push(body: dict[str, Any]) -> Any:
        if app.state.queue_full > 0:
            app.state.queue_full -= 1
            return error_response(429, "rate_limited", "team 't' queue is full",
                                  code="queue_full", headers={"Retry-After": "0"})  # fmt: skip
        batch_id = body.get("batch_id") or f"auto-{len(app.state.batches)}"
        app.state.batches[batch_id] = len(body["samples"])
        return PushResult(batch_id=batch_id, team="t", status="queued",
                          n_samples=len(body["samples"]))  # fmt: skip

    @app.get("/v1/rollouts/{batch_id}")
    async def status(batch_id: str) -> Any:
        if batch_id not in app.state.batches:
            return error_response(404, "not_found", f"no batch {batch_id!r}")
        return BatchStatus(batch_id=batch_id, team="t", status="scored")

    @app.post("/get_reward")
    async def get_reward(body: dict[str, Any], request: Request) -> dict[str, Any]:
        app.state.calls.append((len(body["query"]), request.headers.get("authorization")))
        labels = body.get("labels") or [""] * len(body["query"])
        pairs = zip(body["query"], labels, strict=True)
        rewards = [1.0 if q.endswith(lab) else 0.0 for q, lab in pairs]
        logs = {"kept": [0.5] * len(rewards)}
        return {"rewards": rewards, "scores": rewards, "extra_logs": logs}

    @app.get("/slow")
    async def slow() -> JSONResponse:
        await asyncio.sleep(3)
        return JSONResponse({"status": "late"})

    return app
