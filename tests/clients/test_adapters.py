"""The TRL, veRL and OpenRLHF adapters over real HTTP (stand-in reward app on loopback)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from fastapi import FastAPI

from rlmec.clients.adapters import openrlhf, trl, verl
from rlmec.clients.adapters._common import scalar, summarize
from rlmec.clients.adapters._samples import reference_fields
from rlmec.shared.schemas import ScoredSample
from tests.clients.fake_reward import create_fake_app
from tests.servers import serve_app

pytestmark = pytest.mark.integration

QUESTION = "What is 2 + 3?"


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FastAPI, str]]:
    app = create_fake_app()
    with serve_app(app) as url:
        yield app, url


async def test_trl_reward_func_plain_and_conversational(served: tuple[FastAPI, str]) -> None:
    app, url = served
    app.state.calls.clear()
    reward = trl.make_reward_func(url, api_key="k", batch_size=2)
    assert reward.__name__ == "rlmec_correctness"
    prompts = [[{"role": "system", "content": "be brief"}, {"role": "user", "content": QUESTION}]]
    completions = [[{"role": "assistant", "content": "2 + 3 = 5\nThe answer is: 5"}]]
    plain = await reward(
        prompts=[f"Q: {QUESTION}\nA:"] * 3,
        completions=["The answer is: 5", "The answer is: 6", "The answer is: 5"],
        completion_ids=[[1], [2], [3]],
        answer=["5", "5", "5"],
    )
    chat = await reward(prompts=prompts, completions=completions, completion_ids=[[1]],
                        answer=["5"])  # fmt: skip
    assert plain == [1.0, 0.0, 1.0]
    assert chat == [1.0]
    # Batches of 2, sent concurrently (so they may arrive in either order); results keep the
    # input order, which the rewards above check.
    sizes = [n for n, _ in app.state.calls]
    assert sorted(sizes[:2]) == [1, 2] and sizes[2:] == [1]


async def test_trl_mean_token_reward_and_missing_column(served: tuple[FastAPI, str]) -> None:
    _, url = served
    reward = trl.make_reward_func(url, score="mean_token_reward")
    out = await reward(prompts=["p"], completions=["The answer is: 6"], completion_ids=None,
                       question=[QUESTION], answer=["5"])  # fmt: skip
    assert out == [pytest.approx(-0.05)]
    with pytest.raises(ValueError, match="no 'answer' column"):
        await reward(prompts=["p"], completions=["x"], completion_ids=None)
    with pytest.raises(ValueError, match="score mode 'best'"):
        trl.make_reward_func(url, score="best")  # type: ignore[arg-type]


async def test_verl_compute_score(
    served: tuple[FastAPI, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, url = served
    monkeypatch.setenv("RLMEC_URL", url)
    info = {"question": QUESTION, "answer": "2 + 3 = 5\n#### 5", "index": 7}
    out = await verl.compute_score("openai/gsm8k", "2 + 3 = 5\nThe answer is: 5", "5", info)
    assert out["score"] == 1.0
    keys = {"score", "rlmec_correct", "rlmec_scored", "rlmec_mean_token_reward",
            "rlmec_kept_fraction", "rlmec_unjudged"}  # fmt: skip
    assert set(out) == keys and out["rlmec_unjudged"] == 0.0
    # A completion with a control character is judged 0, with the same keys (veRL collects
    # them into per-key lists), instead of failing the step.
    bad = await verl.compute_score("openai/gsm8k", "2 + 3 = 5\x07\nThe answer is: 5", "5", info)
    assert bad["score"] == 0.0 and bad["rlmec_unjudged"] == 1.0 and set(bad) == keys
    with pytest.raises(ValueError, match="extra_info has no 'question'"):
        await verl.compute_score("openai/gsm8k", "x", "5", {})
    monkeypatch.delenv("RLMEC_URL")
    with pytest.raises(ValueError, match="RLMEC_URL"):
        await verl.compute_score("openai/gsm8k", "x", "5", info)


def test_openrlhf_flags_and_file_hook(
    served: tuple[FastAPI, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, url = served
    assert openrlhf.openrlhf_flags("http://rm:8000/") == [
        "--reward.remote_url", "http://rm:8000/get_reward", "--data.label_key", "answer"
    ]  # fmt: skip
    assert openrlhf.openrlhf_flags("http://rm:8000", legacy=True, label_key=None) == [
        "--remote_rm_url", "http://rm:8000/get_reward"
    ]  # fmt: skip
    assert openrlhf.openrlhf_flags(use_file=True)[1].endswith("adapters/openrlhf.py")
    printed = subprocess.run(
        [sys.executable, "-m", "rlmec.clients.adapters.openrlhf", "--url", "http://rm:8000"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    assert printed == "--reward.remote_url http://rm:8000/get_reward --data.label_key answer"
    # The reward-function file path: OpenRLHF calls reward_func with the key from the env.
    monkeypatch.setenv("RLMEC_URL", url)
    monkeypatch.setenv("RLMEC_API_KEY", "team-key")
    app.state.calls.clear()
    out = openrlhf.reward_func(["p The answer is 5", "p 6"], ["p", "p"], ["5", "5"])
    assert out["rewards"].tolist() == [1.0, 0.0]
    assert out["extra_logs"]["kept"].tolist() == [0.5, 0.5]
    assert app.state.calls == [(2, "Bearer team-key")]


def test_summaries_and_reference_fields() -> None:
    base = {"question": "q", "prediction": "p", "predicted_answer": None,
            "reference_answer": "5"}  # fmt: skip
    unscored = ScoredSample(status="unscored", correct=False, reason="rewrite_incorrect", **base)
    assert summarize(unscored) == {"correct": 0.0, "scored": 0.0, "mean_token_reward": 0.0,
                                   "kept_fraction": 0.0, "unjudged": 0.0}  # fmt: skip
    assert scalar(unscored, "correctness") == 0.0
    assert scalar(unscored, "kept_fraction") is None
    assert scalar(None, "correctness") == 0.0 and scalar(None, "mean_token_reward") is None
    assert reference_fields("72", "math") == {
        "reference_solution": "The answer is: 72", "reference_answer": "72"
    }  # fmt: skip
    assert reference_fields("48/2 = 24\n#### 72", "math")["reference_answer"] is None
    assert json.loads(json.dumps(reference_fields("B", "qa")))["reference_solution"] == (
        "The answer is B"
    )
