"""``/inspect`` in a real headless Chromium against the real reward service (tiny GRM, real Redis,
a real reward worker): open a pushed batch with the team's key, the coloured tokens carry the
API's values, the rewrite diff marks the located step, filters, 1,000 results stay paged, and a
prediction holding HTML or script renders as text. Set RLMEC_INSPECTOR_SCREENSHOT=PATH to keep
the screenshot."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from rlmec.services.reward.app import create_app
from tests.servers import serve_app
from tests.services.reward.conftest import CORRECT, REWRITE, WRONG, auth, reward_settings, sample
from tests.services.reward.test_rollouts import _score_all

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HOSTILE = (
    '<img src=x onerror="window.__pwned=1"><script>window.__pwned=1</script>\nThe answer is: 5'
)


@pytest.fixture(scope="module")
def service(grm_url: str, redis_server: Any) -> Iterator[tuple[str, Any]]:
    settings = reward_settings(grm_url, redis_server.url)
    with serve_app(create_app(settings)) as url:
        yield url, settings


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip("no Chromium: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _scored_batch(url: str, settings: Any, redis_url: str, batch_id: str) -> list[dict[str, Any]]:
    samples = [
        sample(WRONG, id="w", rewrite=REWRITE), sample(CORRECT, id="c"),
        sample(HOSTILE, id="x", rewrite=REWRITE),
        {**sample(WRONG, id="u"), "reference_solution": "no final answer here"},
    ]  # fmt: skip
    with httpx.Client(base_url=url, timeout=60) as c:
        pushed = c.post("/v1/rollouts", headers=auth("alpha"),
                        json={"samples": samples, "batch_id": batch_id})  # fmt: skip
        assert pushed.status_code == 202, pushed.text
        # Playwright's sync API holds this thread's event loop: the worker runs in another.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, _score_all(settings, redis_url, c, [batch_id])).result()
        result = c.get(f"/v1/rollouts/{batch_id}/result", headers=auth("alpha"))
    assert result.status_code == 200, result.text
    return list(result.json()["results"])


def test_the_page_is_public_strict_and_needs_the_key_for_data(service: tuple[str, Any]) -> None:
    url, _ = service
    page = httpx.get(f"{url}/inspect")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert httpx.get(f"{url}/inspect/page.js").status_code == 200
    assert httpx.get(f"{url}/v1/rollouts/any/result").status_code == 401


def test_a_batch_in_chromium(
    service: tuple[str, Any], browser: Any, redis_url: str, tmp_path: Path
) -> None:
    url, settings = service
    api = {r["id"]: r for r in _scored_batch(url, settings, redis_url, "insp-1")}
    assert api["w"]["status"] == api["x"]["status"] == "scored"
    assert api["u"]["reason"] == "no_reference_answer"
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(f"{url}/inspect")
    page.fill("#key", "")
    page.fill("#batch", "insp-1")
    page.click("#open")
    status_shows(page, "401")  # no key, no data
    page.fill("#key", auth("alpha")["Authorization"].removeprefix("Bearer "))
    page.click("#open")
    page.wait_for_selector(".card[data-id='u']", timeout=30_000)
    assert page.locator(".card").count() == 4

    # The coloured tokens carry the API's values, EOS included; negative ones are red.
    wrong = page.locator(".card[data-id='w'] .prediction .tok")
    values = [float(v) for v in wrong.evaluate_all("els => els.map(e => e.dataset.value)")]
    assert values == pytest.approx(api["w"]["rewards"]["values"])
    negative = page.locator(".card[data-id='w'] .prediction .tok").nth(values.index(min(values)))
    assert "220, 38, 38" in negative.evaluate("e => e.style.backgroundColor")  # red
    assert negative.get_attribute("title").endswith(f"{min(values):.3f}")
    # The rewrite as a diff against the prediction; the imitation weights on the rewrite.
    dels = page.locator(".card[data-id='w'] .diff .del").all_inner_texts()
    ins = page.locator(".card[data-id='w'] .diff .ins").all_inner_texts()
    assert "48*2" in dels and "48/2" in ins
    weights = page.locator(".card[data-id='w'] .weights .tok").evaluate_all(
        "els => els.map(e => Number(e.dataset.weight))"
    )
    assert weights == pytest.approx(api["w"]["imitation_weights"]["values"])
    # Unscored: reason and message.
    assert "unscored: no_reference_answer" in page.locator(".card[data-id='u']").inner_text()
    # Model text stays text.
    assert page.evaluate("window.__pwned") is None
    assert "<script>window.__pwned=1</script>" in page.locator(".card[data-id='x']").inner_text()
    # Filters.
    page.uncheck(".kind[value='wrong']")
    page.uncheck(".kind[value='correct']")
    assert page.locator(".card").count() == 1
    page.select_option("#reason", "no_reference_answer")
    assert page.locator(".card[data-id='u']").count() == 1
    page.check(".kind[value='wrong']")
    page.check(".kind[value='correct']")
    page.select_option("#reason", "")
    shot = Path(os.environ.get("RLMEC_INSPECTOR_SCREENSHOT") or tmp_path / "inspector.png")
    page.locator(".card[data-id='w']").scroll_into_view_if_needed()
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    page.close()


def test_a_results_file_marks_the_located_step_and_a_thousand_stay_paged(
    service: tuple[str, Any], browser: Any, tmp_path: Path
) -> None:
    url, _ = service
    located = {
        "id": "loc", "status": "scored", "question": "Calculate 9 + 8 + 1.", "correct": False,
        "prediction": "9 + 8 = 17\n17 + 1 = 19\nThe answer is: 19", "predicted_answer": "19",
        "reference_answer": "18", "located_step": 1,
        "rewrite": "9 + 8 = 17\n17 + 1 = 18\nThe answer is: 18",
    }  # fmt: skip
    rows = [located] + [{**located, "id": f"r{i}", "located_step": None} for i in range(999)]
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    page = browser.new_page()
    page.goto(f"{url}/inspect")
    page.set_input_files("#file", str(path))
    page.wait_for_selector(".card[data-id='loc']", timeout=30_000)
    assert page.locator("#page").inner_text() == "page 1 of 20 (1000 shown)"
    assert page.locator(".card").count() == 50
    marked = page.locator(".card[data-id='loc'] .diff .line.located")
    assert marked.count() == 1 and marked.inner_text().startswith("\u25b6 17 + 1 =")
    assert (
        page.locator(".card[data-id='loc'] .diff .line")
        .nth(1)
        .evaluate("e => e.classList.contains('located')")
    )
    page.click("#next")
    assert page.locator("#page").inner_text() == "page 2 of 20 (1000 shown)"
    page.set_input_files("#file", {"name": "bad.jsonl", "mimeType": "text/plain",
                                   "buffer": b'{"id": 1}\nnot json\n'})  # fmt: skip
    status_shows(page, "bad.jsonl line 2: not valid JSON")
    page.close()


def status_shows(page: Any, text: str) -> None:
    """Wait until the page's status line contains ``text`` (a timeout fails the test): the
    page fetches and reads files asynchronously, and reading the status at once failed on a
    busy machine."""
    page.wait_for_function(
        "t => document.querySelector('#status').innerText.includes(t)", arg=text, timeout=30_000
    )
