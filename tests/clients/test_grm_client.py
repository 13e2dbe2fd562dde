"""GrmClient/AsyncGrmClient against the real GRM app (hf engine, tiny model) on loopback."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from rlmec.clients import AsyncGrmClient, BadRequestError, GrmClient, NotFoundError
from rlmec.clients._base import Call, model_parser
from rlmec.clients.cli import add_commands
from rlmec.shared.grm_schemas import LocateResponse

SAMPLE = {
    "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as "
    "many clips in May. How many clips did Natalia sell altogether?",
    "reference_solution": "Natalia sold 48/2 = 24 clips in May.\n"
    "Natalia sold 48+24 = 72 clips altogether.\n#### 72",
    "prediction": "Natalia sold 48*2 = 96 clips in May.\nNatalia sold 48+96 = 144 clips.\n"
    "The answer is: 144",
}

pytestmark = pytest.mark.integration


def test_models_locate_rewrite_score(grm_url: str) -> None:
    with GrmClient(grm_url, timeout=60) as grm:
        card = grm.models().data[0]
        assert card.engine == "hf" and card.eos_token_id >= 0
        located = grm.locate([SAMPLE, SAMPLE], max_new_tokens=8)
        assert len(located.results) == 2
        assert located.results[0].raw == located.results[1].raw  # greedy
        rewritten = grm.rewrite([{**SAMPLE, "step": 1}], max_new_tokens=6).results[0]
        assert rewritten.status == "rewritten"
        assert rewritten.prefix == "Natalia sold 48*2 = 96 clips in May."
        raw = grm.score(items=[{"prompt": "Question: 1+1?", "output": " 2"}]).results[0]
        assert raw.tokens[-1] == card.eos_token
        assert all(lp <= 0 for lp in raw.logprobs)
        rlmec = grm.score(samples=[SAMPLE]).results[0]
        assert rlmec.offsets[-1] == (len(SAMPLE["prediction"]),) * 2
        assert grm.health() == {"status": "ok"}


def test_tokenize_matches_score_tokenization(grm_url: str) -> None:
    texts = [SAMPLE["prediction"], "7½ — ✓"]
    with GrmClient(grm_url, timeout=60) as grm:
        tokenized = grm.tokenize(texts)
        scored = grm.score(items=[{"prompt": "Question: ?", "output": t} for t in texts])
        bare = grm.tokenize(texts[:1], add_eos=False).results[0]
        with pytest.raises(ValidationError):
            grm.tokenize([])  # rejected by the SDK before the network
        with pytest.raises(TypeError, match="wrap it"):
            grm.tokenize("one text")
    for tok, sc in zip(tokenized.results, scored.results, strict=True):
        assert (tok.token_ids, tok.tokens, tok.offsets) == (sc.token_ids, sc.tokens, sc.offsets)
    assert bare.token_ids == tokenized.results[0].token_ids[:-1]


async def test_async_tokenize(grm_url: str) -> None:
    async with AsyncGrmClient(grm_url, timeout=60) as grm:
        tokenized = await grm.tokenize(["2 + 3 = 5"], add_eos=False)
    result = tokenized.results[0]
    assert len(result.token_ids) == len(result.tokens) == len(result.offsets) > 0
    assert result.offsets[-1][1] == len("2 + 3 = 5")


def test_server_side_validation_error_is_parsed(grm_url: str) -> None:
    # Bypass the SDK's own validation to see how the service's 422 envelope comes back.
    bad = Call("POST", "/v1/locate", model_parser(LocateResponse), {"samples": [], "x": 1})
    with GrmClient(grm_url) as grm:
        with pytest.raises(BadRequestError) as info:
            grm._send(bad)
        assert info.value.status_code == 422
        assert info.value.error.type == "invalid_request"
        assert info.value.error.param
        with pytest.raises(NotFoundError):
            grm._send(Call("GET", "/v1/nowhere", model_parser(LocateResponse)))


async def test_async_grm_client_runs_requests_concurrently(grm_url: str) -> None:
    async with AsyncGrmClient(grm_url, timeout=60) as grm:
        models, located = await asyncio.gather(grm.models(), grm.locate([SAMPLE], max_new_tokens=4))
    assert models.data[0].engine == "hf"
    assert located.results[0].completion_tokens <= 4


def test_cli_grm_models(grm_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="rlmec client")
    add_commands(parser)
    args = parser.parse_args(["grm-models", "--url", grm_url])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert '"engine": "hf"' in out
