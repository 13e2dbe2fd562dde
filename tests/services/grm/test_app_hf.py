"""The GRM HTTP API on the hf engine, against a real server on loopback."""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from rlmec.shared import prompts
from rlmec.shared.grm_schemas import (
    LocateResponse,
    ModelList,
    RewriteResponse,
    ScoreResponse,
    TokenizeResponse,
)
from tests.services.grm.conftest import SAMPLE


def test_models_reports_card(hf_client: httpx.Client) -> None:
    models = ModelList.model_validate(hf_client.get("/v1/models").json())
    card = models.data[0]
    assert card.engine == "hf"
    assert card.max_model_len == 4096
    assert len(card.revision) == 16
    assert card.eos_token == "<|endoftext|>"


def test_health_and_ready(hf_client: httpx.Client) -> None:
    assert hf_client.get("/health").json() == {"status": "ok"}
    ready = hf_client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["engine"] == "hf"


def test_locate_returns_one_result_per_sample(hf_client: httpx.Client) -> None:
    resp = hf_client.post("/v1/locate", json={"samples": [SAMPLE, SAMPLE], "max_new_tokens": 8})
    assert resp.status_code == 200, resp.text
    body = LocateResponse.model_validate(resp.json())
    assert len(body.results) == 2
    expected_prompt = prompts.locate_prompt(
        SAMPLE["question"], SAMPLE["reference_solution"], SAMPLE["prediction"]
    )
    for result in body.results:
        assert 1 <= result.completion_tokens <= 8
        assert result.prompt_tokens > len(expected_prompt) // 8
        assert result.raw == body.results[0].raw  # greedy: same input, same reply


def test_rewrite_with_given_step_keeps_prefix_verbatim(hf_client: httpx.Client) -> None:
    sample = {**SAMPLE, "step": 1}
    resp = hf_client.post("/v1/rewrite", json={"samples": [sample], "max_new_tokens": 6})
    assert resp.status_code == 200, resp.text
    result = RewriteResponse.model_validate(resp.json()).results[0]
    assert result.status == "rewritten"
    assert result.locate is None
    assert result.located_step == 1
    assert result.prefix == "Natalia sold 48*2 = 96 clips in May."
    assert result.rewrite is not None and result.rewrite.startswith(result.prefix + "\n")


def test_score_rlmec_lines_up_tokens_with_characters(hf_client: httpx.Client) -> None:
    resp = hf_client.post("/v1/score", json={"mode": "rlmec", "samples": [SAMPLE]})
    assert resp.status_code == 200, resp.text
    result = ScoreResponse.model_validate(resp.json()).results[0]
    pred = SAMPLE["prediction"]
    assert result.tokens[-1] == "<|endoftext|>"
    assert result.offsets[-1] == (len(pred), len(pred))
    assert "".join(pred[a:b] for a, b in result.offsets) == pred
    assert len(result.logprobs) == len(result.token_ids) == len(result.tokens)
    assert all(lp <= 0.0 for lp in result.logprobs)


def test_concurrent_callers_are_batched_without_changing_values(hf_url: str) -> None:
    """Different-length outputs from 6 callers share padded batches; each value must equal the
    one scored alone, and the requests all succeed."""
    outputs = ["The answer is: 72", "1 2 3", "Natalia sold 48/2 = 24 clips in May.\n#### 72"] * 2
    body = [{"items": [{"prompt": "Problem: clips", "output": o}]} for o in outputs]
    alone = [httpx.post(f"{hf_url}/v1/score", json=b).json()["results"][0] for b in body[:3]]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda b: httpx.post(f"{hf_url}/v1/score", json=b), body))
    assert all(r.status_code == 200 for r in together)
    for i, resp in enumerate(together):
        got = resp.json()["results"][0]
        assert got["token_ids"] == alone[i % 3]["token_ids"]
        pairs = zip(got["logprobs"], alone[i % 3]["logprobs"], strict=True)
        assert max(abs(a - b) for a, b in pairs) < 1e-4
    metrics = httpx.get(f"{hf_url}/metrics").text
    assert "rlmec_grm_tokens_scored_total" in metrics
    assert 'rlmec_grm_requests_total{endpoint="score",status="200"}' in metrics


TOKENIZE_TEXTS = [
    "Natalia sold 48/2 = 24 clips in May.\n#### 72",
    "Prix : 12 € — réponse 7½ ✓ 日本語",  # multi-byte: offsets count characters, not bytes
    "",
]


def test_tokenize_equals_score_output_tokenization(hf_client: httpx.Client) -> None:
    """/v1/tokenize is /v1/score's output side without the forward pass: same ids, token
    strings and offsets (EOS included) for the same text, whatever the prompt."""
    resp = hf_client.post("/v1/tokenize", json={"texts": TOKENIZE_TEXTS})
    assert resp.status_code == 200, resp.text
    tokenized = TokenizeResponse.model_validate(resp.json())
    items = [{"prompt": "Problem: clips", "output": t} for t in TOKENIZE_TEXTS]
    scored = ScoreResponse.model_validate(
        hf_client.post("/v1/score", json={"mode": "raw", "items": items}).json()
    )
    assert tokenized.model == scored.model
    for text, tok, sc in zip(TOKENIZE_TEXTS, tokenized.results, scored.results, strict=True):
        assert (tok.token_ids, tok.tokens, tok.offsets) == (sc.token_ids, sc.tokens, sc.offsets)
        assert tok.tokens[-1] == "<|endoftext|>" and tok.offsets[-1] == (len(text), len(text))
        # Byte-level BPE: a multi-byte character's tokens share its character span.
        spans = [o for i, o in enumerate(tok.offsets) if i == 0 or o != tok.offsets[i - 1]]
        assert "".join(text[a:b] for a, b in spans) == text
    multi = tokenized.results[1]
    assert len(multi.token_ids) > len(set(multi.offsets))  # some characters span several tokens


def test_tokenize_without_eos_drops_only_the_eos(hf_client: httpx.Client) -> None:
    with_eos = hf_client.post("/v1/tokenize", json={"texts": TOKENIZE_TEXTS[:2]}).json()
    resp = hf_client.post("/v1/tokenize", json={"texts": TOKENIZE_TEXTS[:2], "add_eos": False})
    assert resp.status_code == 200, resp.text
    for full, bare in zip(with_eos["results"], resp.json()["results"], strict=True):
        assert "<|endoftext|>" not in bare["tokens"]
        for key in ("token_ids", "tokens", "offsets"):
            assert bare[key] == full[key][:-1]


def test_tokenize_bad_input_is_a_422_envelope(hf_client: httpx.Client) -> None:
    for body, param in (({"texts": []}, "texts"), ({"texts": ["a"], "mode": "raw"}, "mode")):
        resp = hf_client.post("/v1/tokenize", json=body)
        assert resp.status_code == 422, resp.text
        error = resp.json()["error"]
        assert error["type"] == "invalid_request"
        assert param in (error["param"] or ""), error
    metrics = hf_client.get("/metrics").text
    assert 'rlmec_grm_requests_total{endpoint="tokenize",status="200"}' in metrics
    assert 'rlmec_grm_requests_total{endpoint="tokenize",status="422"}' in metrics


def test_tokenize_is_bounded_before_any_work(hf_client: httpx.Client) -> None:
    """A request within the schema but over the per-request budget (262,144 characters by
    default; 51 MB such requests once peaked at 9.4 GB) is a 413 before tokenizing, and the
    reward service's backend halves such a chunk on 413."""
    texts = ["9" * 90_000] * 3  # 270,000 characters, each text within the schema
    resp = hf_client.post("/v1/tokenize", json={"texts": texts})
    assert resp.status_code == 413, resp.text
    assert resp.json()["error"]["code"] == "request_token_budget_exceeded"
    assert hf_client.post("/v1/tokenize", json={"texts": texts[:2]}).status_code == 200


async def test_tokenize_concurrency_is_capped(tiny_model_dir: Path) -> None:
    """At most TOKENIZE_CONCURRENCY tokenizations at once; past TOKENIZE_QUEUE waiting: 429."""
    import asyncio

    from rlmec.services.grm import service as grm_service
    from rlmec.shared.errors import RateLimitError
    from rlmec.shared.grm_schemas import TokenizeRequest
    from tests.services.grm.fakes import ScriptedEngine

    svc = grm_service.GrmService(ScriptedEngine(tiny_model_dir), max_request_tokens=262_144)
    running = 0
    peak = 0
    release = asyncio.Event()
    original = svc._tokenize_all

    def slow(texts: list[str], add_eos: bool) -> list[Any]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        while not release.is_set():
            time.sleep(0.001)
        running -= 1
        return original(texts, add_eos)

    svc._tokenize_all = slow  # type: ignore[method-assign]
    request = TokenizeRequest(texts=["72"])
    n = grm_service.TOKENIZE_CONCURRENCY + grm_service.TOKENIZE_QUEUE
    tasks = [asyncio.create_task(svc.tokenize(request)) for _ in range(n)]
    await asyncio.sleep(0.1)
    with pytest.raises(RateLimitError):
        await svc.tokenize(request)
    release.set()
    assert len(await asyncio.gather(*tasks)) == n
    assert peak == grm_service.TOKENIZE_CONCURRENCY
