"""SDK, CLI and adapters against the real reward service (real GRM on the tiny model, real
Redis, uvicorn on loopback)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from rlmec.cli import main
from rlmec.clients import (
    AsyncClient,
    AuthenticationError,
    BadRequestError,
    Client,
    NotFoundError,
    QueueFullError,
    RateLimitError,
)
from rlmec.clients.adapters import openrlhf, trl, verl
from rlmec.loop.redis_server import LocalRedis
from tests.servers import serve_app

pytestmark = pytest.mark.integration

KEY, SLOW_KEY = "client-key-0123456789", "client-slow-0123456789"
SMALL_KEY = "client-small-queue-0123456789"
QUESTION = "Natalia sold 48 clips in April and half as many in May. How many in total?"
REFERENCE = "In May she sold 48/2 = 24 clips.\nIn total 48+24 = 72 clips.\n#### 72"
CORRECT = "She sold 48/2 = 24 clips in May.\nShe sold 48+24 = 72 clips.\nThe answer is: 72"
WRONG = "She sold 48*2 = 96 clips in May.\nShe sold 48+96 = 144 clips.\nThe answer is: 144"


def sample(prediction: str, **extra: object) -> dict[str, object]:
    return {"question": QUESTION, "reference_solution": REFERENCE, "prediction": prediction,
            **extra}  # fmt: skip


@pytest.fixture(scope="module")
def reward_url(grm_url: str, redis_server: LocalRedis, tiny_model_dir: Path) -> Iterator[str]:
    from rlmec.services.reward.app import create_app
    from rlmec.services.reward.settings import RewardSettings, TeamConfig
    from rlmec.services.reward.teams import hash_key

    settings = RewardSettings(
        grm_urls=[grm_url],
        redis_url=redis_server.url,
        redis_prefix="rlmec:clients-test",
        teams=[
            TeamConfig(name="sdk", key_sha256=[hash_key(KEY)]),
            TeamConfig(name="slow", key_sha256=[hash_key(SLOW_KEY)], rate_limit=1),
            TeamConfig(name="small", key_sha256=[hash_key(SMALL_KEY)], max_queued_samples=1),
        ],
        grm_max_new_tokens=12,
        grm_timeout_s=60.0,
        policy_tokenizers={"tiny": tiny_model_dir},
    )
    with serve_app(create_app(settings)) as url:
        yield url


def test_token_rewards_with_policy_projection(reward_url: str) -> None:
    with Client(reward_url, api_key=KEY) as client:
        out = client.token_rewards(
            [sample(CORRECT, id="c"), sample(WRONG, id="w")], policy_tokenizer="tiny"
        )
        assert client.health()["status"] == "ok"
    correct, wrong = out.results
    assert (correct.id, correct.correct, wrong.id, wrong.correct) == ("c", True, "w", False)
    assert correct.status == "scored" and correct.rewards is not None
    assert all(0.0 <= v <= 0.5 for v in correct.rewards.values)
    assert correct.policy is not None and correct.policy.tokenizer == "tiny"
    assert out.grm.model_id


def test_usage_counts_the_teams_own_requests(reward_url: str) -> None:
    with Client(reward_url, api_key=SMALL_KEY) as client:
        before = client.usage()
        client.token_rewards([sample(CORRECT), sample(WRONG)])
        after = client.usage()
    assert before.team == after.team == "small"
    assert after.usage["requests"] == before.usage.get("requests", 0) + 1
    assert after.usage["samples"] == before.usage.get("samples", 0) + 2


async def test_async_usage(reward_url: str) -> None:
    async with AsyncClient(reward_url, api_key=SMALL_KEY) as client:
        assert (await client.usage()).team == "small"


def test_bad_key_and_server_side_errors_are_typed(reward_url: str) -> None:
    with Client(reward_url, api_key="not-a-key") as client, pytest.raises(AuthenticationError):
        client.token_rewards([sample(CORRECT)])
    with Client(reward_url, api_key=KEY) as client, pytest.raises(BadRequestError) as info:
        client.token_rewards([sample(CORRECT)], policy_tokenizer="unregistered")
    assert info.value.error.message


def test_quota_gives_rate_limit_error_with_retry_after(reward_url: str, redis_url: str) -> None:
    with Client(reward_url, api_key=SLOW_KEY, max_retries=0) as client:
        client.token_rewards([sample(CORRECT)])
        with pytest.raises(RateLimitError) as info:
            client.token_rewards([sample(CORRECT)])
    assert info.value.status_code == 429
    assert info.value.retry_after is not None and info.value.retry_after >= 1


async def test_async_client_and_get_reward(reward_url: str) -> None:
    async with AsyncClient(reward_url, api_key=KEY) as client:
        out = await client.get_reward(
            [f"Q: {QUESTION}\nA: {CORRECT}", f"Q: {QUESTION}\nA: {WRONG}"],
            prompts=[f"Q: {QUESTION}\nA: "] * 2,
            labels=["72", "72"],
        )
    assert len(out["rewards"]) == len(out["scores"]) == 2
    assert out["scores"][0] > out["scores"][1]


async def test_trl_and_verl_adapters(reward_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    reward = trl.make_reward_func(reward_url, api_key=KEY)
    values = await reward(
        prompts=[[{"role": "user", "content": QUESTION}]] * 2,
        completions=[[{"role": "assistant", "content": CORRECT}],
                     [{"role": "assistant", "content": WRONG}]],
        completion_ids=[[1], [2]], answer=[REFERENCE, REFERENCE],
    )  # fmt: skip
    assert values == [1.0, 0.0]
    monkeypatch.setenv("RLMEC_URL", reward_url)
    monkeypatch.setenv("RLMEC_API_KEY", KEY)
    scored = await verl.compute_score("openai/gsm8k", CORRECT, "72", {"question": QUESTION})
    assert scored["score"] == 1.0 and scored["rlmec_correct"] == 1.0


def test_openrlhf_file_hook(reward_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLMEC_URL", reward_url)
    monkeypatch.setenv("RLMEC_API_KEY", KEY)
    out = openrlhf.reward_func([f"Q: {QUESTION}\nA: {WRONG}"], [f"Q: {QUESTION}\nA: "], ["72"])
    assert out["rewards"].shape == (1,)
    assert set(out) == {"rewards", "scores", "extra_logs"}


def test_cli_score_against_the_service(
    reward_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLMEC_API_KEY", KEY)
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(sample(p, id=str(i))) for i, p in
                             enumerate([CORRECT, WRONG, CORRECT])))  # fmt: skip
    out = tmp_path / "out.jsonl"
    code = main(["client", "score", "--url", reward_url, "--input", str(src),
                 "--output", str(out), "--batch-size", "2", "--quiet"])  # fmt: skip
    assert code == 0
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["id"], r["correct"]) for r in results] == [("0", True), ("1", False), ("2", True)]


def test_push_rollouts_status_and_queue_full(reward_url: str, redis_url: str) -> None:
    with Client(reward_url, api_key=SMALL_KEY, max_retries=0) as client:
        pushed = client.push_rollouts([sample(CORRECT)], batch_id="run-1")
        assert (pushed.batch_id, pushed.status, pushed.n_samples) == ("run-1", "queued", 1)
        again = client.push_rollouts([sample(CORRECT)], batch_id="run-1")
        assert again.duplicate  # idempotent on batch_id: nothing queued twice
        assert client.rollout_status("run-1").status == "queued"
        with pytest.raises(QueueFullError) as info:
            client.push_rollouts([sample(WRONG)], batch_id="run-2")
        assert info.value.error.code == "queue_full"
        assert info.value.retry_after is not None and info.value.retry_after >= 1
        with pytest.raises(NotFoundError):
            client.rollout_status("run-2")  # refused pushes leave nothing behind
    with Client(reward_url, api_key=KEY) as other, pytest.raises(NotFoundError):
        other.rollout_status("run-1")  # another team's batch is invisible


def test_cli_push_and_status_against_the_service(
    reward_url: str, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, key = tmp_path / "in.jsonl", tmp_path / "key"
    src.write_text("\n".join(json.dumps(sample(CORRECT, id=str(i))) for i in range(3)))
    key.write_text(KEY + "\n")
    code = main(["client", "push", "--url", reward_url, "--api-key-file", str(key), "--input",
                 str(src), "--batch-size", "2", "--batch-id-prefix", "cli", "--quiet"])  # fmt: skip
    assert code == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(x["batch_id"], x["n_samples"]) for x in lines] == [("cli-00000", 2), ("cli-00001", 1)]
    conn = ["--url", reward_url, "--api-key-file", str(key)]
    assert main(["client", "status", "cli-00001", *conn]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "queued"
    assert main(["client", "result", "cli-00001", *conn]) == 1
    assert "it is queued" in capsys.readouterr().err
    # The old spelling, a key on the command line, still works for a release, and says so.
    assert main(["client", "status", "cli-00001", "--url", reward_url, "--api-key", KEY]) == 0
    assert "--api-key is deprecated" in capsys.readouterr().err
    assert main(["client", "status", "cli-00001", "--url", reward_url, "--api-key-file",
                 str(tmp_path / "none")]) == 2  # fmt: skip
    assert "--api-key-file" in capsys.readouterr().err


async def test_http_trainer_calls_reach_only_the_teams_own_stream(
    reward_url: str, redis_url: str
) -> None:
    """The SDK's result / pull / ack wiring against the live routes (scoring itself, and a
    successful pull and ack, are in tests/services/reward/test_rollouts.py)."""
    with Client(reward_url, api_key=KEY) as client:
        client.push_rollouts([sample(CORRECT)], batch_id="http-1")
        with pytest.raises(NotFoundError, match="it is queued"):
            client.rollout_result("http-1")
        assert client.pull_scored(4, wait_ms=10) == []  # nothing scored yet
        assert client.ack_scored(["1-1"]).unknown == ["1-1"]
        with pytest.raises(ValueError, match="entry_ids is empty"):
            client.ack_scored([])
    async with AsyncClient(reward_url, api_key=KEY) as aclient:
        assert await aclient.pull_scored() == []
