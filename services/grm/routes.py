"""Thin HTTP layer of the GRM service: admission, deadline, disconnect watch, metrics; the
work itself is :class:`GrmService`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from rlmec.services.common import ERROR_RESPONSES, run_until_disconnect
from rlmec.services.grm.admission import Admission
from rlmec.services.grm.deps import AdmissionDep, ServiceDep, SettingsDep
from rlmec.services.grm.service import GrmService
from rlmec.services.grm.settings import GrmSettings
from rlmec.shared.errors import (
    RequestTimeoutError,
    RlmecError,
    ServiceUnavailableError,
)
from rlmec.shared.grm_schemas import (
    LocateRequest,
    LocateResponse,
    ModelList,
    RewriteRequest,
    RewriteResponse,
    ScoreRequest,
    ScoreResponse,
    TokenizeRequest,
    TokenizeResponse,
)

T = TypeVar("T")


async def run_guarded(
    request: Request, admission: Admission, settings: GrmSettings, work: Awaitable[T]
) -> T:
    """Take an engine slot (or 429), run ``work`` as a task under the request deadline, and
    cancel it when the client disconnects, so abandoned work never holds the engine."""
    service: GrmService = request.app.state.service
    started = False
    try:
        async with admission.slot():
            started = True
            try:
                return await run_until_disconnect(
                    request, work, timeout_s=settings.request_timeout_s
                )
            except TimeoutError as exc:
                raise RequestTimeoutError(
                    f"the request took longer than {settings.request_timeout_s} s; send fewer "
                    "samples per request or raise RLMEC_GRM_REQUEST_TIMEOUT_S",
                ) from exc
    except RlmecError as exc:
        service.metrics.errors.labels(exc.type).inc()
        raise
    except Exception as exc:
        service.metrics.errors.labels(type(exc).__name__).inc()
        raise
    finally:
        if not started and asyncio.iscoroutine(work):
            work.close()  # never started (429/503): no "never awaited" warning


router = APIRouter()
v1 = APIRouter(prefix="/v1", tags=["grm"], responses=ERROR_RESPONSES)


@v1.post("/locate", response_model=LocateResponse, summary="First wrong step of each prediction")
async def locate(
    body: LocateRequest,
    request: Request,
    service: ServiceDep,
    admission: AdmissionDep,
    settings: SettingsDep,
) -> LocateResponse:
    """§2.1 locate subtask with greedy decoding and the RLMEC stop strings; §2.4 parsing."""
    return await run_guarded(request, admission, settings, service.locate(body))


@v1.post("/rewrite", response_model=RewriteResponse, summary="Minimal-edit rewrite")
async def rewrite(
    body: RewriteRequest,
    request: Request,
    service: ServiceDep,
    admission: AdmissionDep,
    settings: SettingsDep,
) -> RewriteResponse:
    """Locate (unless ``step`` is given), then rewrite from that step with the prediction's
    earlier steps copied verbatim into the prompt (the minimum-editing constraint, §2.1)."""
    return await run_guarded(request, admission, settings, service.rewrite(body))


@v1.post("/score", response_model=ScoreResponse, summary="Teacher-forced per-token log-probs")
async def score(
    body: ScoreRequest,
    request: Request,
    service: ServiceDep,
    admission: AdmissionDep,
    settings: SettingsDep,
) -> ScoreResponse:
    """Log-probs of each output's tokens (and EOS) after its prompt; ``mode=rlmec`` builds the
    §3.1 scoring prompt from (question, reference, prediction)."""
    return await run_guarded(request, admission, settings, service.score(body))


@v1.post("/tokenize", response_model=TokenizeResponse, summary="Output tokenization of /v1/score")
async def tokenize(body: TokenizeRequest, service: ServiceDep) -> TokenizeResponse:
    """Token ids, token strings and character offsets (+EOS) of each text, exactly as
    ``/v1/score`` tokenizes an output, without its forward pass. No engine slot is taken (so
    no 429 behind engine work); the tokenizer runs in a worker thread."""
    try:
        return await service.tokenize(body)
    except Exception as exc:
        kind = exc.type if isinstance(exc, RlmecError) else type(exc).__name__
        service.metrics.errors.labels(kind).inc()
        raise


@v1.get("/models", response_model=ModelList, summary="The served GRM")
async def models(service: ServiceDep) -> ModelList:
    return service.models()


@router.get("/health", summary="Liveness")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", summary="Readiness: 503 until the engine answers")
async def ready(request: Request) -> JSONResponse:
    service: GrmService | None = getattr(request.app.state, "service", None)
    admission: Admission | None = getattr(request.app.state, "admission", None)
    if service is None or admission is None or admission.closing:
        raise ServiceUnavailableError("the GRM engine is not loaded or is shutting down")
    if not await service.engine.ready():
        raise ServiceUnavailableError(f"the {service.engine.name} engine does not answer yet")
    return JSONResponse({"status": "ready", "engine": service.engine.name})


router.include_router(v1)
