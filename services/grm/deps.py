"""FastAPI dependencies of the GRM service: the resources the lifespan put on ``app.state``.
Routes declare them with the ``*Dep`` aliases (as the reward service's ``deps.py`` does)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from rlmec.services.grm.admission import Admission
from rlmec.services.grm.service import GrmService
from rlmec.services.grm.settings import GrmSettings
from rlmec.shared.errors import ServiceUnavailableError

__all__ = ["AdmissionDep", "ServiceDep", "SettingsDep"]


async def get_service(request: Request) -> GrmService:
    service = getattr(request.app.state, "service", None)
    if service is None:
        raise ServiceUnavailableError("the GRM engine is not loaded yet; retry shortly")
    return service


async def get_admission(request: Request) -> Admission:
    return request.app.state.admission


async def get_settings_dep(request: Request) -> GrmSettings:
    return request.app.state.settings


ServiceDep = Annotated[GrmService, Depends(get_service)]
AdmissionDep = Annotated[Admission, Depends(get_admission)]
SettingsDep = Annotated[GrmSettings, Depends(get_settings_dep)]
