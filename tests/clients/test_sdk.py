"""SDK logic around the wire: request building, retries/backoff, error mapping (MockTransport)."""

from __future__ import annotations

import email.utils
import json
import random
import socket
import time

import httpx
import pytest
from pydantic import ValidationError

from rlmec.clients import (
    APIConnectionError,
    APIResponseError,
    APITimeoutError,
    AsyncClient,
    AsyncGrmClient,
    AuthenticationError,
    BadRequestError,
    Client,
    GrmClient,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    QueueFullError,
    RateLimitError,
    RetryPolicy,
    ServiceUnavailableError,
    parse_retry_after,
)
from rlmec.shared.schemas import RewardParams, TokenRewardsResponse
from tests.clients.helpers import SAMPLE, Recorder, envelope, scored_payload

URL = "http://rlmec.test"


def client(rec: Recorder, **kwargs: object) -> Client:
    kwargs.setdefault("backoff_base", 0.001)
    return Client(URL, transport=rec.sync(), **kwargs)  # type: ignore[arg-type]


def test_token_rewards_sends_bearer_and_validated_body_and_parses_response() -> None:
    rec = Recorder(httpx.Response(200, json=scored_payload()))
    with client(rec, api_key="k1") as c:
        out = c.token_rewards([SAMPLE], params=RewardParams(floor=-0.2), policy_tokenizer="pol")
    assert isinstance(out, TokenRewardsResponse)
    assert out.results[0].rewards is not None
    assert out.results[0].rewards.values == [0.0, -0.1]
    req = rec.requests[0]
    assert req.method == "POST" and req.url.path == "/v1/token-rewards"
    assert req.headers["authorization"] == "Bearer k1"
    body = rec.body()
    assert body["samples"][0]["question"] == SAMPLE["question"]
    assert body["params"]["floor"] == -0.2
    assert body["policy_tokenizer"] == "pol"


def _answer_each(request: httpx.Request) -> httpx.Response:
    """A scored result per sample of the request, each carrying its sample's id."""
    samples = json.loads(request.content)["samples"]
    payload = scored_payload(len(samples))
    payload["results"] = [
        {**r, "id": s["id"]} for r, s in zip(payload["results"], samples, strict=True)
    ]
    return httpx.Response(200, json=payload)


def test_token_rewards_over_1024_samples_go_in_slices_and_come_back_in_order() -> None:
    samples = [{**SAMPLE, "id": f"s{i}"} for i in range(1030)]
    rec = Recorder(_answer_each, _answer_each)
    with client(rec) as c:
        out = c.token_rewards(samples)
    assert [len(rec.body(i)["samples"]) for i in range(len(rec.requests))] == [1024, 6]
    assert [r.id for r in out.results] == [s["id"] for s in samples]


async def test_async_token_rewards_slices_too() -> None:
    samples = [{**SAMPLE, "id": f"s{i}"} for i in range(2049)]
    rec = Recorder(_answer_each, _answer_each, _answer_each)
    transport = httpx.MockTransport(rec)
    async with AsyncClient(URL, transport=transport) as c:
        out = await c.token_rewards(samples)
    assert [len(rec.body(i)["samples"]) for i in range(3)] == [1024, 1024, 1]
    assert [r.id for r in out.results] == [s["id"] for s in samples]


def test_api_key_falls_back_to_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLMEC_API_KEY", "from-env")
    rec = Recorder(httpx.Response(200, json={"status": "ok"}))
    with client(rec) as c:
        assert c.health() == {"status": "ok"}
    assert rec.requests[0].headers["authorization"] == "Bearer from-env"


def test_no_key_sends_no_authorization(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RLMEC_API_KEY", raising=False)
    rec = Recorder(httpx.Response(200, json={"status": "ok"}))
    with client(rec) as c:
        c.health()
    assert "authorization" not in rec.requests[0].headers


def test_invalid_sample_fails_before_the_network() -> None:
    rec = Recorder()
    with client(rec) as c, pytest.raises(ValidationError, match="question"):
        c.token_rewards([{**SAMPLE, "question": ""}])
    assert rec.requests == []


@pytest.mark.parametrize("timeout", [None, 0, -1.0, float("inf"), "60"])
def test_timeout_must_be_finite_and_positive(timeout: object) -> None:
    with pytest.raises(ValueError, match="timeout"):
        Client(URL, timeout=timeout)  # type: ignore[arg-type]


def test_base_url_needs_a_scheme() -> None:
    with pytest.raises(ValueError, match="http://"):
        Client("localhost:8000")


def test_the_url_comes_from_the_environment_with_or_without_v1(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RLMEC_URL", raising=False)
    with pytest.raises(ValueError, match="set RLMEC_URL"):
        Client()
    monkeypatch.setenv("RLMEC_URL", "http://reward:8002/v1/")
    with Client() as c:
        assert str(c._http.base_url) == "http://reward:8002"  # routes add their own /v1


def test_retries_503_then_succeeds() -> None:
    rec = Recorder(
        httpx.Response(503, json=envelope("service_unavailable", "engine warming up")),
        httpx.Response(503, json=envelope("service_unavailable", "engine warming up")),
        httpx.Response(200, json=scored_payload()),
    )
    with client(rec) as c:
        out = c.token_rewards([SAMPLE])
    assert len(out.results) == 1
    assert len(rec.requests) == 3


def test_retry_after_is_honoured_and_error_raised_when_retries_run_out() -> None:
    rec = Recorder(*[
        httpx.Response(429, headers={"Retry-After": "0"}, json=envelope("rate_limited", "slow"))
        for _ in range(3)
    ])  # fmt: skip
    with client(rec, max_retries=2) as c, pytest.raises(RateLimitError) as info:
        c.token_rewards([SAMPLE])
    assert len(rec.requests) == 3  # first try + 2 retries
    assert not isinstance(info.value, QueueFullError)
    assert info.value.status_code == 429
    assert info.value.retry_after == 0.0
    assert info.value.error.type == "rate_limited"


def test_push_429_is_queue_full_with_retry_after() -> None:
    rec = Recorder(
        httpx.Response(429, headers={"Retry-After": "900"}, json=envelope("queue_full", "full"))
    )
    with client(rec) as c, pytest.raises(QueueFullError) as info:
        c.push_rollouts([SAMPLE], batch_id="b1")
    # 900 s exceeds the default retry budget (600 s): raised at once, not slept through.
    assert len(rec.requests) == 1
    assert isinstance(info.value, RateLimitError)
    assert info.value.retry_after == 900.0
    assert "full" in str(info.value)


def test_push_429_with_another_code_stays_a_rate_limit() -> None:
    body = {"error": {"type": "rate_limited", "message": "quota", "param": None,
                      "code": "team_quota"}}  # fmt: skip
    rec = Recorder(httpx.Response(429, headers={"Retry-After": "3600"}, json=body))
    with client(rec) as c, pytest.raises(RateLimitError) as info:
        c.push_rollouts([SAMPLE])
    assert type(info.value) is RateLimitError


def test_push_and_status_round_trip() -> None:
    rec = Recorder(
        httpx.Response(
            202, json={"batch_id": "b/1", "team": "t", "status": "queued", "n_samples": 1}
        ),
        httpx.Response(200, json={"batch_id": "b/1", "team": "t", "status": "scored"}),
    )
    with client(rec) as c:
        pushed = c.push_rollouts([SAMPLE], batch_id="b/1")
        status = c.rollout_status(pushed.batch_id)
    assert pushed.status == "queued" and pushed.n_samples == 1 and not pushed.duplicate
    assert rec.body(0)["batch_id"] == "b/1"
    assert rec.requests[1].url.raw_path == b"/v1/rollouts/b%2F1"
    assert status.status == "scored"


@pytest.mark.parametrize(
    ("status", "exc"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (413, BadRequestError),
        (422, BadRequestError),
        (500, InternalServerError),
        (502, InternalServerError),
    ],
)
def test_status_errors_are_typed_and_not_retried(status: int, exc: type[Exception]) -> None:
    rec = Recorder(httpx.Response(status, json=envelope("some_type", "explained", "samples.0")))
    with client(rec) as c, pytest.raises(exc) as info:
        c.health()
    assert len(rec.requests) == 1
    err = info.value
    assert err.status_code == status  # type: ignore[attr-defined]
    assert err.error.message == "explained"  # type: ignore[attr-defined]
    assert err.error.param == "samples.0"  # type: ignore[attr-defined]
    assert "samples.0" in str(err)


def test_503_after_retries_is_service_unavailable() -> None:
    rec = Recorder(*[httpx.Response(503, text="<html>bad gateway</html>") for _ in range(2)])
    with client(rec, max_retries=1) as c, pytest.raises(ServiceUnavailableError) as info:
        c.health()
    assert len(rec.requests) == 2
    assert info.value.error.type == "http_error"
    assert "bad gateway" in info.value.error.message


def test_fastapi_detail_body_is_kept() -> None:
    rec = Recorder(httpx.Response(404, json={"detail": "Not Found"}))
    with client(rec) as c, pytest.raises(NotFoundError) as info:
        c.rollout_status("nope")
    assert info.value.error.message == "Not Found"


def test_unparseable_success_body_is_a_response_error() -> None:
    rec = Recorder(httpx.Response(200, json={"unexpected": True}))
    with client(rec) as c, pytest.raises(APIResponseError, match="TokenRewardsResponse"):
        c.token_rewards([SAMPLE])


def test_timeout_is_api_timeout_error() -> None:
    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("read timed out", request=request)

    rec = Recorder(hang)
    with client(rec) as c, pytest.raises(APITimeoutError, match="timed out"):
        c.health()
    assert len(rec.requests) == 1  # a timed-out request may have been processed: no retry


def test_connection_refused_is_connection_error() -> None:
    # A port we hold bound but not listening refuses connections, and no other process on
    # this machine can start a server on it meanwhile (a bare free port could be taken).
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        with (
            Client(f"http://127.0.0.1:{port}", timeout=5) as c,
            pytest.raises(APIConnectionError, match="could not reach"),
        ):
            c.health()


def test_get_reward_checks_lengths_and_forwards_lists() -> None:
    rec = Recorder(httpx.Response(200, json={"rewards": [1.0], "scores": [1.0], "extra_logs": {}}))
    with client(rec) as c:
        with pytest.raises(ValueError, match="labels has 2 entries"):
            c.get_reward(["q"], labels=["a", "b"])
        with pytest.raises(TypeError, match="list of strings"):
            c.get_reward("q")
        out = c.get_reward(["p r"], prompts=["p"], labels=["5"])
    assert out["rewards"] == [1.0]
    assert rec.body() == {"query": ["p r"], "prompts": ["p"], "labels": ["5"]}


def test_grm_client_models_and_locate() -> None:
    card = {
        "id": "tiny", "revision": "r", "tokenizer": "tiny", "max_model_len": 2048,
        "engine": "hf", "eos_token": "</s>", "eos_token_id": 2,
    }  # fmt: skip
    located = {
        "model": "tiny",
        "results": [
            {"status": "located", "step": 0, "raw": "The first error step is [0]",
             "prompt_tokens": 10, "completion_tokens": 8}
        ],
    }  # fmt: skip
    rec = Recorder(
        httpx.Response(200, json={"object": "list", "data": [card]}),
        httpx.Response(200, json=located),
    )
    with GrmClient(URL, transport=rec.sync()) as g:
        assert g.models().data[0].eos_token_id == 2
        out = g.locate([{k: SAMPLE[k] for k in ("question", "reference_solution", "prediction")}])
    assert out.results[0].step == 0
    assert rec.body()["max_new_tokens"] == 32
    with GrmClient(URL, transport=rec.sync()) as g, pytest.raises(ValueError, match="exactly one"):
        g.score()


def test_retry_policy_backoff_is_jittered_and_capped() -> None:
    policy = RetryPolicy(max_retries=10, backoff_base=1.0, max_backoff=4.0, rng=random.Random(0))
    busy = httpx.Response(503)
    for attempt, ceiling in [(0, 1.0), (1, 2.0), (2, 4.0), (5, 4.0)]:
        delay = policy.delay(busy, attempt)
        assert delay is not None and ceiling / 2 <= delay <= ceiling
    assert policy.delay(busy, 10) is None
    assert policy.delay(httpx.Response(500), 0) is None
    with pytest.raises(ValueError, match="max_retries"):
        RetryPolicy(max_retries=-1)
    with pytest.raises(ValueError, match="max_retry_wait"):
        RetryPolicy(max_wait=float("inf"))


def test_retries_follow_retry_after_within_the_total_wait_budget() -> None:
    """Many retries are fine while their waits fit the budget; the wait that would pass it is
    not made: the error comes back with its Retry-After."""
    policy = RetryPolicy(max_wait=10.0)
    busy = httpx.Response(429, headers={"Retry-After": "4"})
    assert policy.delay(busy, attempt=0, waited=0.0) == 4.0
    assert policy.delay(busy, attempt=1, waited=4.0) == 4.0
    assert policy.delay(busy, attempt=2, waited=8.0) is None  # 8 + 4 > 10
    long = httpx.Response(503, headers={"Retry-After": "120"})
    assert RetryPolicy().delay(long, 0) == 120.0  # within the default 600 s
    backoff = RetryPolicy(max_wait=1.0, backoff_base=1.0, rng=random.Random(0))
    assert backoff.delay(httpx.Response(503), attempt=3, waited=0.5) is None


def test_the_client_retries_until_the_budget_is_spent() -> None:
    rec = Recorder(*[
        httpx.Response(429, headers={"Retry-After": "0.2"}, json=envelope("rate_limited", "busy"))
        for _ in range(10)
    ])  # fmt: skip
    with client(rec, max_retry_wait=0.5) as c, pytest.raises(RateLimitError):
        c.token_rewards([SAMPLE])
    assert len(rec.requests) == 3  # waits 0.2 + 0.2; a third 0.2 would pass 0.5


def test_parse_retry_after_number_and_http_date() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    parsed = parse_retry_after(later)
    assert parsed is not None and 25 <= parsed <= 31


async def test_async_client_retries_and_raises_typed_errors() -> None:
    rec = Recorder(
        httpx.Response(503, json=envelope("service_unavailable", "warming")),
        httpx.Response(200, json=scored_payload(2)),
        httpx.Response(401, json=envelope("authentication_error", "bad key")),
    )
    async with AsyncClient(URL, transport=rec.sync(), backoff_base=0.001) as c:
        out = await c.token_rewards([SAMPLE, SAMPLE])
        assert len(out.results) == 2
        with pytest.raises(AuthenticationError, match="bad key"):
            await c.health()
    assert len(rec.requests) == 3


async def test_async_push_queue_full_and_grm_models() -> None:
    rec = Recorder(
        httpx.Response(429, headers={"Retry-After": "0"}, json=envelope("queue_full", "full")),
        httpx.Response(429, headers={"Retry-After": "0"}, json=envelope("queue_full", "full")),
    )
    async with AsyncClient(URL, transport=rec.sync(), max_retries=1) as c:
        with pytest.raises(QueueFullError):
            await c.push_rollouts([SAMPLE])
    assert len(rec.requests) == 2
    rec2 = Recorder(httpx.Response(200, json={"object": "list", "data": []}))
    async with AsyncGrmClient(URL, transport=rec2.sync()) as g:
        assert (await g.models()).data == []
