"""``/docs`` and ``/redoc`` of both services work with no internet: their scripts and styles come
from the service itself, public like the pages (no key), and Swagger UI renders in a real
headless Chromium that is refused every request leaving loopback."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import httpx
import pytest

from rlmec.loop.redis_server import LocalRedis
from rlmec.services.grm.app import create_app as grm_app
from rlmec.services.grm.settings import GrmSettings
from rlmec.services.reward.app import create_app
from tests.servers import serve_app
from tests.services.reward.conftest import reward_settings

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _assets(url: str, page: str) -> list[str]:
    html = httpx.get(f"{url}{page}", timeout=30)
    assert html.status_code == 200, html.text
    found = re.findall(r'(?:src|href)="([^"]+\.(?:js|css|png))"', html.text)
    assert found and all(a.startswith("/docs-assets/") for a in found), found
    return found


def test_the_pages_and_their_assets_are_served_locally_without_a_key(
    redis_server: LocalRedis, tiny_model_dir: Path
) -> None:
    settings = reward_settings("http://127.0.0.1:9", redis_server.url)
    with (
        serve_app(create_app(settings)) as reward,
        serve_app(grm_app(GrmSettings(model=str(tiny_model_dir), engine="hf"))) as grm,
    ):
        for url in (reward, grm):
            for page in ("/docs", "/redoc"):
                for asset in _assets(url, page):
                    got = httpx.get(f"{url}{asset}", timeout=30)
                    assert got.status_code == 200 and len(got.content) > 1000, (url, asset)
        # Anything else under the service still needs a key.
        assert httpx.get(f"{reward}/v1/usage").status_code == 401


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: apt-get install chromium")
def test_swagger_ui_renders_in_chromium_with_the_internet_cut_off(
    redis_server: LocalRedis, tmp_path: Path
) -> None:
    from playwright.sync_api import Route, sync_playwright

    left: list[str] = []

    def loopback_only(route: Route) -> None:
        if route.request.url.startswith("http://127.0.0.1:"):
            route.continue_()
        else:
            left.append(route.request.url)
            route.abort()

    settings = reward_settings("http://127.0.0.1:9", redis_server.url)
    with serve_app(create_app(settings)) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.route("**/*", loopback_only)
            page.goto(f"{url}/docs")
            page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
            title = page.inner_text(".swagger-ui .info .title")
            page.get_by_text("/v1/token-rewards", exact=True).first.wait_for(timeout=30_000)
            page.screenshot(path=str(tmp_path / "docs.png"))
        finally:
            browser.close()
    assert "rlmec token-reward service" in title
    assert left == [], f"the page asked the internet for {left}"
