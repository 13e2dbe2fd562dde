"""A real TRL ``GRPOTrainer`` step against the live reward service (real GRM on the tiny
model, real Redis): the tiny random policy writes completions full of control characters,
which fail alone (reward 0, logged as unjudged) instead of killing the step, and the RLMEC
figures reach TRL's logs through ``log_metric`` / ``log_extra``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rlmec.clients.adapters import trl as rlmec_trl
from rlmec.loop.redis_server import LocalRedis
from tests.clients.conftest import team_service

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY = "trl-key-0123456789"


@pytest.fixture(scope="module")
def reward_url(grm_url: str, redis_server: LocalRedis) -> Iterator[str]:
    with team_service(grm_url, redis_server.url, "trl", KEY) as url:
        yield url


def test_grpo_step_survives_control_characters(
    reward_url: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    datasets = pytest.importorskip("datasets")
    trl = pytest.importorskip("trl")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    rows = [{"prompt": "Q: Natalia sold 48/2 clips. How many?\nA:", "answer": "24"}] * 4
    config = trl.GRPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=4,
        max_completion_length=24, max_steps=1, logging_steps=1, report_to="none",
        save_strategy="no", use_cpu=True, bf16=False, seed=0, log_completions=False,
    )  # fmt: skip
    trainer = trl.GRPOTrainer(
        model=model, reward_funcs=[rlmec_trl.make_reward_func(reward_url, api_key=KEY)],
        args=config, train_dataset=datasets.Dataset.from_list(rows), processing_class=tokenizer,
    )  # fmt: skip
    statuses: list[str] = []
    original = trainer._log_completion_extra

    def capture(column: str, values: list[str]) -> None:
        if column == "rlmec_status":
            statuses.extend(values)
        original(column, values)

    trainer._log_completion_extra = capture  # what the reward function's log_extra reaches
    trainer.train()
    logged = trainer.state.log_history[0]
    assert len(statuses) == 4
    assert any(s.startswith("unjudged:") for s in statuses), statuses  # the precondition
    assert logged["rlmec/unjudged"] > 0
    assert {"rlmec/correct", "rlmec/scored", "rlmec/mean_token_reward"} <= set(logged)
    assert "rewards/rlmec_correctness/mean" in logged
