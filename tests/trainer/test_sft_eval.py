"""Held-out scores of ``rlmec grm train`` (``data.eval_file``): "exact match" is what greedy
decoding would reproduce, per example kind, and a run writes its learning curve."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from rlmec.trainer.sft import SftSample, read_examples, train_grm
from rlmec.trainer.sft_eval import _shard, evaluate_sft, score_batch
from tests.trainer.test_sft import _config, _examples


def test_exact_match_needs_every_target_token_to_be_the_argmax() -> None:
    vocab = 5
    ids = torch.tensor([[1, 2, 3, 4], [1, 2, 3, 4]])
    mask = torch.tensor([[False, False, True, True], [False, False, True, True]])
    logits = torch.zeros(2, 4, vocab)
    logits[:, 1, 3] = 5.0  # position 1 predicts token 3: right for both rows
    logits[0, 2, 4] = 5.0  # row 0 predicts its last token 4; row 1 predicts 0 there
    logits[1, 2, 0] = 5.0
    logits[:, 0, 0] = 9.0  # a prompt position's argmax never counts
    loss, exact = score_batch(logits, ids, mask)
    assert exact.tolist() == [True, False]
    assert loss[0] < loss[1]


def test_every_rank_gets_the_same_number_of_forwards() -> None:
    samples = [SftSample((i,), (i,)) for i in range(5)]
    shards = [_shard(samples, r, 2) for r in range(2)]
    assert [len(s) for s, _ in shards] == [3, 3]
    assert [counted for _, counted in shards] == [3, 2]


class _Engine:
    """The model with the calls of a DeepSpeed engine that ``evaluate_sft`` makes."""

    def __init__(self, model: Any) -> None:
        self.model, self.device = model, torch.device("cpu")

    def __call__(self, **kwargs: Any) -> Any:
        return self.model(**kwargs)

    def eval(self) -> None:
        self.model.eval()

    def train(self) -> None:
        self.model.train()


def _greedy_reproduces(model: Any, sample: SftSample) -> bool:
    prompt = torch.tensor([sample.prompt_ids])
    out = model.generate(
        prompt, max_new_tokens=len(sample.target_ids), do_sample=False,
        attention_mask=torch.ones_like(prompt), pad_token_id=0,
    )[0, prompt.size(1) :].tolist()  # fmt: skip
    return out == list(sample.target_ids)


def test_exact_match_is_what_greedy_decoding_reproduces(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Train the tiny model part way, so some examples are reproduced and some are not, then
    compare the score of each example with greedy generation."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    train_file = _examples(tmp_path / "sft.jsonl", n=12)
    cfg = _config(tiny_model_dir, tmp_path / "run", train_file, epochs=4)
    result = train_grm(cfg)
    assert result.final_dir is not None
    model = AutoModelForCausalLM.from_pretrained(result.final_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(result.final_dir)
    samples, _ = read_examples(str(train_file), tok, 128)
    greedy = [_greedy_reproduces(model, s) for s in samples]
    one_by_one = [
        evaluate_sft(_Engine(model), [s], 1, tok.pad_token_id, 0, 1)["locate"]["exact_match"]
        for s in samples
    ]
    assert 0 < sum(greedy) < len(greedy), greedy  # both outcomes occur
    assert one_by_one == [float(g) for g in greedy]
    batched = evaluate_sft(_Engine(model), samples, 4, tok.pad_token_id, 0, 1)["locate"]
    assert batched["n"] == len(samples)
    assert batched["exact_match"] == sum(greedy) / len(samples)


def test_a_run_writes_its_learning_curve_per_kind(tiny_model_dir: Path, tmp_path: Path) -> None:
    train_file = _examples(tmp_path / "sft.jsonl")
    held_out = tmp_path / "val.jsonl"
    rows = [json.loads(line) for line in train_file.read_text().splitlines()[:6]]
    rows[0]["kind"] = "rewrite"
    held_out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = _config(tiny_model_dir, tmp_path / "run", train_file, epochs=3, max_steps=5)
    cfg = cfg.model_copy(
        update={"eval_every_steps": 2,
                "data": cfg.data.model_copy(update={"eval_file": str(held_out)})}
    )  # fmt: skip
    train_grm(cfg)
    lines = (tmp_path / "run" / "eval.jsonl").read_text().splitlines()
    curve = [json.loads(line) for line in lines]
    assert [r["step"] for r in curve] == [0, 2, 4, 5]  # before, every 2 steps, the last step
    assert all(r["locate"]["n"] == 5 and r["rewrite"]["n"] == 1 for r in curve)
    assert curve[-1]["locate"]["loss"] < curve[0]["locate"]["loss"]


def test_the_shipped_grm_configs_load_and_a_missing_eval_file_is_named(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rlmec.cli import main
    from rlmec.trainer.config import load_recipe_config
    from rlmec.trainer.sft import SftConfig

    cpu = load_recipe_config("grm-cpu.yaml", None, SftConfig)
    assert cpu.eval_every_steps > 0 and cpu.data.loss_per == "example"
    load_recipe_config("grm-paper.yaml", None, SftConfig)
    train_file = _examples(tmp_path / "sft.jsonl")
    args = ["grm", "train", "--model", str(tiny_model_dir), "--input", str(train_file),
            "--output", str(tmp_path / "run"),
            "--set", "data.eval_file=nope.jsonl"]  # fmt: skip
    assert main(args) == 2
    assert "data.eval_file ('nope.jsonl') does not exist" in capsys.readouterr().err
