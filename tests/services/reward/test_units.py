"""Unit tests of the pieces around the pipeline: settings, cache keys and bound, the GRM
client's batching and failure isolation (fake GRM over httpx.MockTransport), the CLI."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from rlmec.services.reward.admission import current_team
from rlmec.services.reward.cache import RewardCache, cache_key
from rlmec.services.reward.cli import add_commands
from rlmec.services.reward.grm_backend import GrmBackend, GrmFailure
from rlmec.services.reward.settings import RewardSettings, TeamConfig
from rlmec.services.reward.teams import TeamDirectory, hash_key
from rlmec.shared.errors import RateLimitError, ServiceUnavailableError
from rlmec.shared.grm_schemas import (
    TENANT_HEADER,
    TENANT_WEIGHT_HEADER,
    GrmSampleInput,
    ModelCard,
    ModelList,
    ScoreResult,
)
from rlmec.shared.schemas import GrmInfo, RewardParams, Sample, ScoredSample
from tests.services.reward.conftest import CORRECT, sample

DIGEST = hash_key("k")
GRM = GrmInfo(model_id="m", revision="r1")


# --- settings and teams ---------------------------------------------------------------------


def test_teams_from_env_json_and_yaml_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "teams.yaml"
    path.write_text(f"teams:\n  - name: b\n    key_sha256: {hash_key('kb')}\n    rate_limit: 5\n")
    monkeypatch.setenv("RLMEC_REWARD_TEAMS", json.dumps([{"name": "a", "key_sha256": DIGEST}]))
    monkeypatch.setenv("RLMEC_REWARD_TEAMS_FILE", str(path))
    settings = RewardSettings()
    assert [(t.name, t.rate_limit) for t in settings.teams] == [("a", 10_000), ("b", 5)]
    directory = TeamDirectory(settings)
    assert directory.by_key("k") is not None and directory.by_key("k").name == "a"  # type: ignore[union-attr]
    assert directory.by_key("kb").rate_limit == 5  # type: ignore[union-attr]
    assert directory.by_key("nope") is None and directory.anonymous is None


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"teams": [{"name": "a", "key_sha256": "plain-key"}]}, "not a lowercase sha256"),
        ({"teams": [{"name": "a"}, {"name": "a"}]}, "appear more than once"),
        ({"teams": [{"name": "anonymous"}]}, "reserved"),
        ({"teams": [{"name": "a b"}]}, "team name 'a b' is invalid"),
        ({"teams": [{"name": "a", "key_sha256": DIGEST}, {"name": "b", "key_sha256": DIGEST}]},
         "two teams"),
        ({"grm_urls": ["grm:8001"]}, "must start with http"),
        ({"policy_tokenizers": {"p": "/no/such/dir"}}, "is not a directory"),
        ({"teams_file": "/no/such/teams.json"}, "does not exist"),
        ({"teams": [{"name": "a", "chat_template": "llama3"}]},
         "chat_template 'llama3' is not a registered policy tokenizer"),
    ],
)  # fmt: skip
def test_bad_settings_name_the_value(values: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        RewardSettings(**values)  # type: ignore[arg-type]


def test_renamed_queue_bounds_still_read_with_a_deprecation_warning() -> None:
    with pytest.warns(DeprecationWarning, match="'queue_max_pending' is deprecated"):
        old = TeamConfig.model_validate({"name": "a", "queue_max_len": 7, "queue_max_pending": 3})
    assert (old.max_queued_samples, old.max_scored_samples) == (7, 3)
    new = TeamConfig(name="a")
    assert (new.max_queued_samples, new.max_scored_samples) == (100_000, 10_000)
    with pytest.raises(ValueError, match="not both"), pytest.warns(DeprecationWarning):
        TeamConfig.model_validate({"name": "a", "queue_max_len": 7, "max_queued_samples": 7})


# --- cache --------------------------------------------------------------------------------


LEGACY_KEY = "p:{cache}:cdec1905e8f2d51d0c04d2701c194221b053e9b36c001da87347f82eedc7a7ee"


def test_cache_key_covers_every_input() -> None:
    base = Sample(**sample(CORRECT))  # type: ignore[arg-type]
    params = RewardParams()
    key = cache_key(base, params, GRM, None, prefix="p")
    updates: list[dict[str, str]] = [
        {"prediction": CORRECT + " "},
        {"question": "Q"},
        {"reference_answer": "72"},
        {"rewrite": "x"},
        {"task": "qa"},
    ]
    variants = [
        cache_key(base.model_copy(update=u), params, GRM, None, prefix="p") for u in updates
    ]
    variants += [
        cache_key(base, RewardParams(cap=0.4), GRM, None, prefix="p"),
        cache_key(base, RewardParams(edit_penalty=True), GRM, None, prefix="p"),
        cache_key(base, RewardParams(check_equations=False), GRM, None, prefix="p"),
        cache_key(base, params, GrmInfo(model_id="m", revision="r2"), None, prefix="p"),
        cache_key(base, params, GRM, "tiny", prefix="p"),
    ]
    assert len({key, *variants}) == len(variants) + 1
    same = base.model_copy(update={"id": "other", "metadata": {"a": 1}})
    assert cache_key(same, params, GRM, None, prefix="p") == key
    # The equation check (on by default since 1.3) changes what a key may hold, so the default
    # key is new; with it off, the key is the one made before either option existed (0c4353d).
    assert key != LEGACY_KEY
    off = cache_key(base, RewardParams(check_equations=False), GRM, None, prefix="p")
    assert off == LEGACY_KEY


def _result(i: int) -> ScoredSample:
    return ScoredSample(status="scored", question="q", prediction=str(i), correct=True,
                        predicted_answer=str(i), reference_answer=str(i), id="x")  # fmt: skip


async def test_cache_round_trip_ttl_and_size_bound(redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    cache = RewardCache(client, prefix="t", ttl_s=100, max_entries=3)
    await cache.put_many([(f"t:cache:{i}", _result(i)) for i in range(5)])
    got = await cache.get_many([f"t:cache:{i}" for i in range(5)])
    assert got[:2] == [None, None]  # the oldest two were evicted
    assert [r.prediction for r in got[2:] if r] == ["2", "3", "4"]
    assert all(r is not None and r.id is None for r in got[2:])  # echoed fields not stored
    assert await cache.size() == 3
    assert 90 < await client.ttl("t:cache:4") <= 100
    await client.set("t:cache:bad", b"{not json")
    assert await cache.get_many(["t:cache:bad"]) == [None]
    await client.aclose()


async def test_cache_index_drops_expired_entries(redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    cache = RewardCache(client, prefix="t", ttl_s=100, max_entries=10)
    await client.zadd(cache.index_key, {"t:cache:old": time.time() - 1000})
    await cache.put_many([("t:cache:new", _result(1))])
    assert await cache.size() == 1
    await client.aclose()


# --- GRM client -------------------------------------------------------------------------------


def _score_result(text: str) -> dict[str, object]:
    ids = [*range(len(text)), 0]
    offsets = [*((i, i + 1) for i in range(len(text))), (len(text), len(text))]
    return ScoreResult(token_ids=ids, tokens=["t"] * len(ids), offsets=offsets,
                       logprobs=[-0.1] * len(ids), prompt_tokens=3).model_dump()  # fmt: skip


def _fake_grm(calls: list[int]) -> httpx.MockTransport:
    """A fake GRM /v1/score: rejects any batch holding a prediction 'bad' with 422."""

    def handler(request: httpx.Request) -> httpx.Response:
        samples = json.loads(request.content)["samples"]
        calls.append(len(samples))
        if any(s["prediction"] == "bad" for s in samples):
            return httpx.Response(422, json={"error": {"type": "invalid_request",
                                                       "message": "too long"}})  # fmt: skip
        results = [_score_result(s["prediction"]) for s in samples]
        return httpx.Response(200, json={"model": "m", "results": results})

    return httpx.MockTransport(handler)


def _inputs(*predictions: str) -> list[GrmSampleInput]:
    return [GrmSampleInput(question="q", reference_solution="r", prediction=p) for p in predictions]


async def test_grm_backend_chunks_batches() -> None:
    calls: list[int] = []
    client = GrmBackend(["http://grm"], batch_size=2, transport=_fake_grm(calls))
    results = await client.score_rlmec(_inputs("a", "bb", "ccc", "dddd", "e"))
    assert sorted(calls) == [1, 2, 2] and client.calls == 3
    assert [len(r.token_ids) for r in results if isinstance(r, ScoreResult)] == [2, 3, 4, 5, 2]
    assert client.busy_seconds > 0
    await client.aclose()


async def test_grm_backend_names_the_team_and_its_weight() -> None:
    """The GRM orders its engine's work by team too (rlmec.inference.tenants)."""
    seen: list[tuple[str | None, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.headers.get(TENANT_HEADER), request.headers.get(TENANT_WEIGHT_HEADER)))
        samples = json.loads(request.content)["samples"]
        return httpx.Response(200, json={"model": "m", "results": [
            _score_result(s["prediction"]) for s in samples]})  # fmt: skip

    client = GrmBackend(["http://grm"], transport=httpx.MockTransport(handler),
                        team_weights={"alpha": 2.5})  # fmt: skip
    token = current_team.set("alpha")
    try:
        await client.score_rlmec(_inputs("a"))
    finally:
        current_team.reset(token)
    await client.score_rlmec(_inputs("a"))  # no team (e.g. the worker's own calls)
    assert seen == [("alpha", "2.5"), (None, None)]
    await client.aclose()


async def test_grm_backend_isolates_a_rejected_sample() -> None:
    calls: list[int] = []
    client = GrmBackend(["http://grm"], batch_size=8, transport=_fake_grm(calls))
    results = await client.score_rlmec(_inputs("a", "bad", "c"))
    assert calls[0] == 3 and sorted(calls[1:]) == [1, 1, 1]
    assert isinstance(results[1], GrmFailure) and "422: too long" in results[1].message
    assert isinstance(results[0], ScoreResult) and isinstance(results[2], ScoreResult)
    await client.aclose()


async def test_grm_backend_503_and_unreachable_are_service_unavailable() -> None:
    not_ready = httpx.MockTransport(lambda r: httpx.Response(503, json={"error": {"message": "x"}}))
    client = GrmBackend(["http://grm"], transport=not_ready)
    with pytest.raises(ServiceUnavailableError, match="answered 503: x; retry later"):
        await client.score_rlmec(_inputs("a"))
    await client.aclose()

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client = GrmBackend(["http://grm:1"], transport=httpx.MockTransport(refuse))
    with pytest.raises(ServiceUnavailableError, match=r"http://grm:1/v1/score is unreachable"):
        await client.score_rlmec(_inputs("a"))
    await client.aclose()


def _status_grm(calls: list[int], status: int, headers: dict[str, str]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(len(json.loads(request.content)["samples"]))
        return httpx.Response(status, headers=headers, json={"error": {"message": "busy"}})

    return httpx.MockTransport(handler)


@pytest.mark.parametrize(
    ("status", "error"),
    [(429, RateLimitError), (500, ServiceUnavailableError), (502, ServiceUnavailableError),
     (504, ServiceUnavailableError)],
)  # fmt: skip
async def test_a_saturated_or_failing_grm_is_transient_and_never_split(
    status: int, error: type[Exception]
) -> None:
    # A busy GRM used to become per-sample grm_error (lost samples) after re-sending every
    # sample alone into the saturated GRM (6 requests -> 49 calls).
    calls: list[int] = []
    client = GrmBackend(["http://grm"], batch_size=8,
                       transport=_status_grm(calls, status, {"Retry-After": "7"}))  # fmt: skip
    with pytest.raises(error) as raised:
        await client.score_rlmec(_inputs("a", "b", "c", "d"))
    assert calls == [4]  # one call, no single-sample retries
    assert raised.value.headers["Retry-After"] == "7"  # type: ignore[attr-defined]
    await client.aclose()


def _context_grm(calls: list[int], too_long: set[str], budget: int) -> httpx.MockTransport:
    """A fake GRM /v1/score checking lengths before any work, as the real one does: the
    samples in ``too_long`` are one 413 naming them all; more than ``budget`` samples a 413
    for the request."""

    def handler(request: httpx.Request) -> httpx.Response:
        samples = json.loads(request.content)["samples"]
        calls.append(len(samples))
        over = [f"samples.{i}" for i, s in enumerate(samples) if s["prediction"] in too_long]
        if over:
            error = {"type": "payload_too_large", "message": f"{over[0]} too long",
                     "param": ",".join(over), "code": "context_length_exceeded"}  # fmt: skip
            return httpx.Response(413, json={"error": error})
        if len(samples) > budget:
            error = {"type": "payload_too_large", "message": "over budget", "param": "samples",
                     "code": "request_token_budget_exceeded"}  # fmt: skip
            return httpx.Response(413, json={"error": error})
        return httpx.Response(200, json={"model": "m", "results": [
            _score_result(s["prediction"]) for s in samples]})  # fmt: skip

    return httpx.MockTransport(handler)


async def test_a_sample_over_the_grm_context_is_reported_without_amplification() -> None:
    # One oversize sample in 8 used to cost a call per sample on every request (1 -> 520).
    calls: list[int] = []
    client = GrmBackend(["http://grm"], batch_size=8,
                       transport=_context_grm(calls, {"long"}, budget=100))  # fmt: skip
    results = await client.score_rlmec(_inputs("a", "b", "long", "d", "e", "f", "g", "h"))
    assert calls == [8, 7]
    assert isinstance(results[2], GrmFailure) and results[2].reason == "grm_input_too_long"
    assert [isinstance(r, ScoreResult) for r in results] == [True] * 2 + [False] + [True] * 5
    assert [len(r.token_ids) for r in results if isinstance(r, ScoreResult)] == [2] * 7
    await client.aclose()


async def test_many_samples_over_the_grm_context_cost_two_calls() -> None:
    # Issue 26 item 4: 64 over-context samples used to cost a call each, one after another
    # (O(n^2) bytes). The GRM names them all in one 413; the rest are re-sent once.
    calls: list[int] = []
    names = [f"long{i}" if i % 4 else f"ok{i}" for i in range(80)]
    too_long = {n for n in names if "long" in n}
    client = GrmBackend(["http://grm"], batch_size=80, transport=_context_grm(calls, too_long, 100))
    results = await client.score_rlmec(_inputs(*names))
    assert calls == [80, 20]
    assert [isinstance(r, ScoreResult) for r in results] == ["ok" in n for n in names]
    assert {r.reason for r in results if isinstance(r, GrmFailure)} == {"grm_input_too_long"}
    await client.aclose()


async def test_a_chunk_over_the_request_budget_is_halved() -> None:
    calls: list[int] = []
    client = GrmBackend(["http://grm"], batch_size=8,
                       transport=_context_grm(calls, set(), budget=3))  # fmt: skip
    results = await client.score_rlmec(_inputs(*"abcdefgh"))
    assert all(isinstance(r, ScoreResult) for r in results) and len(results) == 8
    assert calls == [8, 4, 4, 2, 2, 2, 2]
    await client.aclose()


# --- CLI --------------------------------------------------------------------------------------


def test_hash_key_prints_a_key_and_its_hash(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_commands(parser)
    args = parser.parse_args(["hash-key", "--team", "vision"])
    assert args.func(args) == 0
    lines = capsys.readouterr().out.splitlines()
    key, digest = lines[0].split()[1], lines[1].split()[1]
    assert hash_key(key) == digest
    assert json.loads(lines[3]) == {"name": "vision", "key_sha256": [digest]}
    assert TeamConfig.model_validate(json.loads(lines[3])).name == "vision"


def test_serve_refuses_without_teams(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_commands(parser)
    args = parser.parse_args(["serve", "--grm-url", "http://127.0.0.1:1"])
    assert args.func(args) == 2
    assert "no teams configured" in capsys.readouterr().err
    args = parser.parse_args(["serve", "--grm-url", "grm:1", "--allow-anonymous"])
    assert args.func(args) == 2
    assert "grm_urls" in capsys.readouterr().err


def test_trailing_special_tokens_are_stripped_in_linear_time() -> None:
    """OpenRLHF decodes with special tokens; they end a response but are not the solution. A
    regex over the whole text took 0.3 s on 20k spaces (quadratic); this is linear."""
    from rlmec.services.reward.openrlhf import strip_trailing_special

    assert strip_trailing_special("5<|im_end|>\n<|endoftext|><|endoftext|>") == "5"
    assert strip_trailing_special("x </s> ") == "x"
    assert strip_trailing_special("keep  ") == "keep  "  # no token: untouched
    assert strip_trailing_special("a <b> c") == "a <b> c"
    huge = " " * 100_000 + "x"
    assert strip_trailing_special(huge) == huge
    assert strip_trailing_special("\n" * 100_000) == "\n" * 100_000


@pytest.mark.parametrize(
    ("label", "text"),
    [(1234567, "1234567"), (72.0, "72"), (2.5, "2.5"), (" 7 ", "7"), (True, None), ("", None)],
)
def test_labels_read_as_written(label: object, text: str | None) -> None:
    from rlmec.services.reward.openrlhf import _label_text

    assert _label_text(label) == text  # type: ignore[arg-type]


async def test_ready_asks_the_grm_engine_not_only_its_model_list() -> None:
    """Issue 27: a GRM whose engine died still listed its model, so /ready said grm: ok."""

    def grm(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            card = ModelCard(id="m", revision="r", tokenizer="t", max_model_len=2048,
                             engine="vllm", eos_token="</s>", eos_token_id=2)  # fmt: skip
            return httpx.Response(200, json=ModelList(data=[card]).model_dump())
        assert request.url.path == "/ready"
        error = {"type": "service_unavailable", "message": "engine not ready"}
        return httpx.Response(503, json={"error": error})

    client = GrmBackend(["http://grm"], transport=httpx.MockTransport(grm))
    assert (await client.model_card()).id == "m"
    with pytest.raises(ServiceUnavailableError, match=r"not ready \(503\): engine not ready"):
        await client.ready()
    await client.aclose()


def _card(model: str, revision: str) -> ModelCard:
    return ModelCard(id=model, revision=revision, tokenizer="t", max_model_len=2048,
                     engine="vllm", eos_token="</s>", eos_token_id=2)  # fmt: skip


def _slow_grm(release: asyncio.Event, cards: list[str]) -> httpx.MockTransport:
    """A GRM whose /v1/score waits for ``release``; /v1/models answers ``cards`` at once."""

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            data = [_card(c, "r") for c in cards]
            return httpx.Response(200, json=ModelList(data=data).model_dump())
        await release.wait()
        samples = json.loads(request.content)["samples"]
        return httpx.Response(200, json={"model": "m", "results": [
            _score_result(s["prediction"]) for s in samples]})  # fmt: skip

    return httpx.MockTransport(handler)


async def test_model_cards_never_queue_behind_a_teams_backlog() -> None:
    """Issue 45, P1: the refresh went through the caller's lane of the GRM slots, so a busy
    team's backlog held it, and every team waited on it."""
    release = asyncio.Event()
    client = GrmBackend(["http://grm"], max_concurrency=1, transport=_slow_grm(release, ["m"]))
    token = current_team.set("busy")
    try:
        backlog = [asyncio.create_task(client.score_rlmec(_inputs("a"))) for _ in range(3)]
        await asyncio.sleep(0.05)  # the one slot is taken, two calls wait
        cards = await asyncio.wait_for(client.model_cards(), timeout=2)
    finally:
        current_team.reset(token)
        release.set()
    assert [c.id for c in cards] == ["m"]
    await asyncio.gather(*backlog)
    await client.aclose()


async def test_stale_grm_info_is_served_while_a_refresh_runs_in_the_background() -> None:
    from rlmec.services.reward.pipeline import RewardPipeline

    answered = asyncio.Event()
    fetches: list[int] = []

    class Grm:
        async def model_cards(self) -> list[ModelCard]:
            fetches.append(1)
            if len(fetches) > 1:
                await answered.wait()  # the second fetch hangs until told
            return [_card("m", f"r{len(fetches)}")]

    grm: Any = Grm()
    pipeline = RewardPipeline(grm, None, None, None, redis=None, grm_info_ttl_s=0.05)  # type: ignore[arg-type]
    assert (await pipeline.grm_info()).revision == "r1"  # the first request waits for it
    await asyncio.sleep(0.06)  # stale now
    stale = await asyncio.wait_for(pipeline.grm_info(), timeout=0.5)
    assert stale.revision == "r1" and len(fetches) == 2  # served at once; one refresh started
    await pipeline.grm_info()
    assert len(fetches) == 2  # never two refreshes at once
    answered.set()
    await asyncio.sleep(0.01)
    assert (await pipeline.grm_info()).revision == "r2"
    await pipeline.aclose()


async def test_the_first_grm_info_is_fetched_whatever_the_ttl() -> None:
    from rlmec.services.reward.pipeline import RewardPipeline

    class Grm:
        async def model_cards(self) -> list[ModelCard]:
            return [_card("m", "r1")]

    grm: Any = Grm()
    pipeline = RewardPipeline(grm, None, None, None, redis=None, grm_info_ttl_s=1e9)  # type: ignore[arg-type]
    assert (await pipeline.grm_info()).revision == "r1"
