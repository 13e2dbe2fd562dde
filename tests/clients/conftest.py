"""One real GRM service (hf engine, tiny model) on loopback, shared by the client tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import serve_app


@pytest.fixture(scope="package")
def grm_url(tiny_model_dir: Path) -> Iterator[str]:
    from rlmec.services.grm.app import create_app
    from rlmec.services.grm.settings import GrmSettings

    app = create_app(GrmSettings(model=str(tiny_model_dir), engine="hf"))
    with serve_app(app) as url:
        yield url
