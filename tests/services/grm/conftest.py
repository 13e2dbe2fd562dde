"""Shared pieces of the GRM tests: sample inputs and a running hf-engine server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rlmec.services.grm.app import create_app
from rlmec.services.grm.settings import GrmSettings
from tests.servers import serve_app

SAMPLE = {
    "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as "
    "many clips in May. How many clips did Natalia sell altogether in April and May?",
    "reference_solution": "Natalia sold 48/2 = 24 clips in May.\n"
    "Natalia sold 48+24 = 72 clips altogether in April and May.\n#### 72",
    "prediction": "Natalia sold 48*2 = 96 clips in May.\nNatalia sold 48+96 = 144 clips.\n"
    "The answer is: 144",
}


@pytest.fixture(scope="module")
def hf_url(tiny_model_dir: Path) -> Iterator[str]:
    """A real uvicorn server with the hf engine on the tiny model, shared by a module."""
    app = create_app(GrmSettings(model=str(tiny_model_dir), engine="hf"))
    with serve_app(app) as url:
        yield url


@pytest.fixture
def hf_client(hf_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hf_url, timeout=60) as client:
        yield client
