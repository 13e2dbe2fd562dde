"""Service behaviour around the engine (real HTTP on loopback, scripted engine): the exact
prompts sent, the rewrite flow, saturation, disconnects, timeouts, shutdown, bad input."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rlmec.services.grm.app import create_app
from rlmec.services.grm.settings import GrmSettings
from tests.servers import serve_app
from tests.services.grm.conftest import SAMPLE
from tests.services.grm.fakes import ScriptedEngine

Q, REF = "What is 2+3?", "2+3 = 5\n#### 5"
PRED = "2+3 = 6\nThe answer is: 6"
# docs/method.md §2.1, written out literally (not built with shared.prompts).
LOCATE_LITERAL = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n### Instruction:\nGiven the problem, correct solution and the "
    "prediction from language models. The method in prediction might be different with correct "
    "solution, but it is also correct. You need to identify which step of the prediction is the "
    "first wrong step, and write down the label of the first wrong step.\n\n### Input:\n"
    "Problem: What is 2+3?\nCorrect solution: [0] 2+3 = 5\n[1] #### 5\n"
    "Prediction: [0] 2+3 = 6\n[1] The answer is: 6\n\n### Response:\n"
)
REWRITE_HEAD = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n### Instruction:\nGiven the problem and the correct solution, you "
    "need to correct the mistakes in prediction to get the correct answer. You should make "
    "minimal modifications.\n\n### Input:\nProblem: What is 2+3?\nCorrect solution: 2+3 = 5\n"
    "#### 5\nPrediction: 2+3 = 6\nThe answer is: 6\n\n### Response:\nCorrect prediction:"
)


def _settings(model_dir: Path, **kw: Any) -> GrmSettings:
    return GrmSettings(model=str(model_dir), engine="hf", **kw)


@pytest.fixture
def engine(tiny_model_dir: Path) -> ScriptedEngine:
    return ScriptedEngine(tiny_model_dir)


@pytest.fixture
def url(tiny_model_dir: Path, engine: ScriptedEngine) -> Iterator[str]:
    with serve_app(create_app(_settings(tiny_model_dir), engine=engine)) as base:
        yield base


def test_prompts_match_method_page_byte_for_byte(url: str, engine: ScriptedEngine) -> None:
    sample = {"question": Q, "reference_solution": REF, "prediction": PRED}
    assert httpx.post(f"{url}/v1/locate", json={"samples": [sample]}).status_code == 200
    assert httpx.post(f"{url}/v1/rewrite", json={"samples": [sample]}).status_code == 200
    # locate, then locate + rewrite from the located step 1 (prefix = step 0 verbatim)
    assert engine.prompts == [
        LOCATE_LITERAL, LOCATE_LITERAL, REWRITE_HEAD + "2+3 = 6\n"
    ]  # fmt: skip


def test_rewrite_flow_statuses(tiny_model_dir: Path) -> None:
    replies = {"[7]": "The first error step is [7]", "ok": "The prediction is correct."}
    engine = ScriptedEngine(
        tiny_model_dir,
        reply=lambda p: next(
            (r for k, r in replies.items() if f"Problem: {k}" in p and "first wrong step" in p),
            "fixed\n",
        ),
    )
    samples = [
        {"question": "[7]", "reference_solution": REF, "prediction": PRED},
        {"question": "ok", "reference_solution": REF, "prediction": PRED},
    ]
    with serve_app(create_app(_settings(tiny_model_dir), engine=engine)) as base:
        body = httpx.post(f"{base}/v1/rewrite", json={"samples": samples}).json()
    out_of_range, no_error = body["results"]
    assert out_of_range["status"] == "out_of_range"
    assert out_of_range["rewrite"] is None
    assert "step 7" in out_of_range["message"]
    assert no_error["status"] == "rewritten"
    assert no_error["locate"]["status"] == "no_error"
    assert no_error["located_step"] == 0
    assert no_error["rewrite"] == "fixed"  # step 0: no prefix, trailing newline stripped
    assert no_error["continuation"] == "fixed\n"


def test_given_step_out_of_range_is_422_naming_sample(url: str) -> None:
    sample = {"question": Q, "reference_solution": REF, "prediction": PRED, "step": 2}
    resp = httpx.post(f"{url}/v1/rewrite", json={"samples": [SAMPLE, sample]})
    assert resp.status_code == 422
    err = resp.json()["error"]
    assert err["param"] == "samples.1.step"
    assert "0..1" in err["message"]


def test_malformed_json_and_unknown_fields(url: str) -> None:
    bad = httpx.post(
        f"{url}/v1/score", content=b'{"items": [', headers={"content-type": "application/json"}
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["type"] == "invalid_request"
    unknown = httpx.post(f"{url}/v1/locate", json={"samples": [{**SAMPLE, "answer": "x"}]})
    assert unknown.status_code == 422
    assert unknown.json()["error"]["param"] == "samples.0.answer"
    wrong_type = httpx.post(f"{url}/v1/locate", json={"samples": [SAMPLE], "max_new_tokens": "x"})
    assert wrong_type.json()["error"]["param"] == "max_new_tokens"
    mode = httpx.post(
        f"{url}/v1/score", json={"mode": "rlmec", "items": [{"prompt": "a", "output": "b"}]}
    )
    assert mode.status_code == 422
    assert "needs a non-empty 'samples'" in mode.json()["error"]["message"]


def test_oversize_input_is_413_naming_limit(tiny_model_dir: Path, engine: ScriptedEngine) -> None:
    app = create_app(_settings(tiny_model_dir, max_request_tokens=500), engine=engine)
    with serve_app(app) as base:
        long = {"prompt": "p", "output": "1 2 3 " * 2000}
        items = [{"prompt": "p", "output": "x"}, long, {"prompt": "p", "output": "y"}, long]
        resp = httpx.post(f"{base}/v1/score", json={"items": items})
        assert resp.status_code == 413
        err = resp.json()["error"]
        assert err["param"] == "items.1,items.3"  # every one at once (issue 26 item 4)
        assert "and 1 more samples" in err["message"]
        assert "4096" in err["message"] and "RLMEC_GRM_MAX_MODEL_LEN" in err["message"]
        many = [{"prompt": "p", "output": "1 2 3 " * 30}] * 10
        resp = httpx.post(f"{base}/v1/score", json={"items": many})
        assert resp.status_code == 413
        assert "RLMEC_GRM_MAX_REQUEST_TOKENS" in resp.json()["error"]["message"]
        budget = httpx.post(f"{base}/v1/locate", json={"samples": [SAMPLE], "max_new_tokens": 8})
        assert budget.status_code == 200
    assert engine.prompts and all("Problem:" in p for p in engine.prompts)


def test_saturation_gives_429_with_retry_after(
    tiny_model_dir: Path, engine: ScriptedEngine
) -> None:
    settings = _settings(tiny_model_dir, max_concurrent_requests=1, max_queued_requests=0)
    engine.gate.clear()
    result: dict[str, httpx.Response] = {}
    with serve_app(create_app(settings, engine=engine)) as base:
        first = threading.Thread(
            target=lambda: result.update(
                a=httpx.post(f"{base}/v1/locate", json={"samples": [SAMPLE]}, timeout=30)
            )
        )
        first.start()
        assert engine.started.wait(10)
        busy = httpx.post(f"{base}/v1/locate", json={"samples": [SAMPLE]})
        engine.gate.set()
        first.join(30)
        metrics = httpx.get(f"{base}/metrics").text
    assert busy.status_code == 429
    assert busy.headers["Retry-After"] == "1"
    assert busy.json()["error"]["type"] == "rate_limited"
    assert result["a"].status_code == 200
    assert 'rlmec_grm_requests_total{endpoint="locate",status="429"} 1.0' in metrics
    assert 'rlmec_grm_errors_total{type="rate_limited"} 1.0' in metrics


def test_client_disconnect_cancels_work_and_frees_slot(
    tiny_model_dir: Path, engine: ScriptedEngine
) -> None:
    settings = _settings(tiny_model_dir, max_concurrent_requests=1, max_queued_requests=0)
    engine.gate.clear()
    with serve_app(create_app(settings, engine=engine)) as base:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{base}/v1/score",
                json={"items": [{"prompt": "a", "output": "b"}]},
                timeout=httpx.Timeout(30, read=0.5),
            )
        deadline = time.monotonic() + 10
        while engine.cancelled == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.cancelled == 1
        engine.gate.set()
        after = httpx.post(f"{base}/v1/score", json={"items": [{"prompt": "a", "output": "b"}]})
    assert after.status_code == 200  # the slot was released, no 429


def test_timeout_is_504(tiny_model_dir: Path, engine: ScriptedEngine) -> None:
    engine.gate.clear()
    with serve_app(
        create_app(_settings(tiny_model_dir, request_timeout_s=0.3), engine=engine)
    ) as b:
        resp = httpx.post(f"{b}/v1/locate", json={"samples": [SAMPLE]}, timeout=30)
    engine.gate.set()
    assert resp.status_code == 504
    assert "RLMEC_GRM_REQUEST_TIMEOUT_S" in resp.json()["error"]["message"]


def test_shutdown_finishes_in_flight_request(tiny_model_dir: Path, engine: ScriptedEngine) -> None:
    engine.gate.clear()
    server = serve_app(create_app(_settings(tiny_model_dir), engine=engine))
    base = server.__enter__()
    result: dict[str, httpx.Response] = {}
    client = threading.Thread(
        target=lambda: result.update(
            r=httpx.post(f"{base}/v1/locate", json={"samples": [SAMPLE]}, timeout=60)
        )
    )
    client.start()
    assert engine.started.wait(10)
    stopper = threading.Thread(target=server.__exit__, args=(None, None, None))
    stopper.start()  # shutdown begins while the request is in flight
    time.sleep(0.3)
    assert not engine.closed  # the engine stays open for the in-flight request
    engine.gate.set()
    stopper.join(30)
    client.join(30)
    assert result["r"].status_code == 200
    assert engine.finished_before_close == 1
    assert engine.closed
