"""Runtime adapter management: ``POST /admin/adapters`` loads a LoRA adapter, ``DELETE
/admin/adapters/{name}`` unloads it, without a restart (issue 28).

Only with ``RLMEC_GRM_ADMIN_TOKEN_FILE`` (a secret) and ``Authorization: Bearer <token>``; without
the setting the routes do not exist (404). The engine checks the adapter's provenance against
its base model before loading (an adapter of another base is a 422 naming both), takes it up
between batches, and on unload lets the work already queued for it finish.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Request

from rlmec.services.grm.service import GrmService
from rlmec.shared.errors import AuthenticationError, InvalidRequestError, ServiceUnavailableError
from rlmec.shared.grm_schemas import AdapterResponse, LoadAdapterRequest
from rlmec.shared.secret_files import read_secret_file


def add_admin_routes(app: FastAPI, token_file: Path | None) -> None:
    if token_file is None:
        return
    token = read_secret_file(token_file, "admin token file")

    def check(request: Request) -> None:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise AuthenticationError(
                "the admin routes need the admin token: Authorization: Bearer TOKEN",
                code="invalid_admin_token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(check)])

    def engine(request: Request) -> object:
        service = request.app.state.service
        if not isinstance(service, GrmService):
            raise ServiceUnavailableError("the GRM service is starting")
        if not hasattr(service.engine, "load_adapter"):
            raise InvalidRequestError(
                f"the {service.engine.name} engine loads no adapters itself; load them on its "
                "upstream (vLLM: --enable-lora --lora-modules NAME=PATH, or its "
                "/v1/load_lora_adapter), or use --engine hf or vllm",
                code="adapters_unsupported",
            )
        return service.engine

    @router.post("/adapters", response_model=AdapterResponse)
    async def load(body: LoadAdapterRequest, request: Request) -> AdapterResponse:
        try:
            revision = await engine(request).load_adapter(body.name, body.path)  # type: ignore[attr-defined]
        except ValueError as exc:  # wrong base, no adapter there, a name already taken
            raise InvalidRequestError(str(exc), param="path", code="adapter_refused") from None
        return AdapterResponse(name=body.name, revision=revision, status="loaded")

    @router.delete("/adapters/{name}", response_model=AdapterResponse)
    async def unload(name: str, request: Request) -> AdapterResponse:
        await engine(request).unload_adapter(name)  # type: ignore[attr-defined]
        return AdapterResponse(name=name, status="unloaded")

    app.include_router(router)
