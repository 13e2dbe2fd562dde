"""Records, tokenisation, span projection, configs and the command's error messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rlmec.cli import main
from rlmec.trainer.config import ConfigError, load_config
from rlmec.trainer.data import DataError, PolicyEncoder, read_jsonl
from tests.trainer.records import scored_sample, token_record, write_jsonl


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path) -> PolicyEncoder:
    from transformers import AutoTokenizer

    return PolicyEncoder(AutoTokenizer.from_pretrained(tiny_model_dir), max_length=512)


def test_token_record_and_scored_sample_give_the_same_sample(
    tok: PolicyEncoder, tmp_path: Path
) -> None:
    records: list[dict[str, Any]] = [token_record(tok.tokenizer, i) for i in range(4)]
    records += [json.loads(scored_sample(tok.tokenizer, i).model_dump_json()) for i in range(4)]
    unscored = json.loads(scored_sample(tok.tokenizer, 0).model_dump_json())
    unscored.update(status="unscored", reason="rewrite_incorrect", reward_spans=None)
    samples = read_jsonl(write_jsonl(tmp_path / "d.jsonl", [*records, unscored]), tok)
    assert len(samples) == 8  # the unscored record is dropped
    for a, b in zip(samples[:4], samples[4:], strict=True):
        # Same tokenizer: the §6 projection gives back exactly the token values.
        assert a.prediction_ids == b.prediction_ids and a.regular_ids == b.regular_ids
        assert a.rewards == pytest.approx(b.rewards)
        assert a.imitation_weights == pytest.approx(b.imitation_weights)
        assert a.prompt_ids == b.prompt_ids
    s = samples[0]
    assert s.prediction_ids[-1] == tok.eos_id and s.regular_ids[-1] == tok.eos_id
    assert len(s.rewards) == len(s.prediction_ids) and -0.1 in s.rewards
    assert 1.0 in s.imitation_weights and s.ref_logprobs is None


def test_wrong_lengths_name_the_line_and_the_fix(tok: PolicyEncoder, tmp_path: Path) -> None:
    good = token_record(tok.tokenizer, 0)
    bad = dict(token_record(tok.tokenizer, 1), rewards=[0.0, 0.1])
    path = write_jsonl(tmp_path / "bad.jsonl", [good, bad])
    with pytest.raises(DataError, match=r"bad\.jsonl:2: rewards has 2 values .* one value per"):
        read_jsonl(path, tok)
    ref = dict(good, ref_logprobs=[-1.0])
    with pytest.raises(DataError, match=r":1: ref_logprobs has 1 values"):
        read_jsonl(write_jsonl(tmp_path / "ref.jsonl", [ref]), tok)
    (tmp_path / "junk.jsonl").write_text('{"prediction": 1\n')
    with pytest.raises(DataError, match=r"junk\.jsonl:1:"):
        read_jsonl(tmp_path / "junk.jsonl", tok)
    with pytest.raises(DataError, match="neither 'prompt' nor 'question'"):
        read_jsonl(write_jsonl(tmp_path / "np.jsonl", [dict(good, question=None)]), tok)


def test_long_samples_are_cut_with_their_values(tok: PolicyEncoder) -> None:
    short = PolicyEncoder(tok.tokenizer, max_length=80)
    from rlmec.trainer.data import TokenRecord, from_token_record

    s = from_token_record(TokenRecord.model_validate(token_record(tok.tokenizer, 0)), short)
    assert len(s.prompt_ids) + len(s.prediction_ids) == 80
    assert len(s.rewards) == len(s.prediction_ids)


def _config(tmp_path: Path, **extra: Any) -> Path:
    path = tmp_path / "c.yaml"
    data = {"model": "m", "output_dir": str(tmp_path / "o"), "data": {"train_file": "x.jsonl"}}
    data.update(extra)
    path.write_text(json.dumps(data))  # JSON is YAML
    return path


def test_config_defaults_overrides_and_errors(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path), ["optim.lr=1e-5", "engine.zero_stage=2"])
    assert (cfg.optim.lr, cfg.engine.zero_stage, cfg.loss.epsilon) == (1e-5, 2, 0.3)
    assert cfg.loss.normalization == "step" and cfg.loss.imitation_coef == 1.0
    paper = load_config("paper.yaml")
    assert (paper.optim.lr, paper.optim.global_batch_size, paper.engine.zero_stage) == (
        5e-6,
        128,
        3,
    )
    assert paper.engine.precision == "bf16" and paper.optim.warmup_ratio == 0.03
    with pytest.raises(ConfigError, match=r"loss\.epsilon"):
        load_config(_config(tmp_path), ["loss.epsilon=2"])
    with pytest.raises(ConfigError, match=r"optim\.lrr: Extra inputs"):
        load_config(_config(tmp_path), ["optim.lrr=1"])
    with pytest.raises(ConfigError, match=r"needs optim\.max_steps"):
        load_config(_config(tmp_path), ["data.mode=online", "data.online={redis_url: x, team: t}"])
    with pytest.raises(ConfigError, match=r"global_batch_size \(128\) is not a multiple"):
        load_config(_config(tmp_path), ["optim.micro_batch_size=5"]).accumulation_steps(1)


def test_command_reports_bad_input_clearly(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist; give a YAML" in capsys.readouterr().err
    assert main(["train", "--config", str(_config(tmp_path))]) == 2
    assert "model ('m') is not a local model directory" in capsys.readouterr().err
    cfg = str(_config(tmp_path, model=str(tiny_model_dir)))
    assert main(["train", "--config", cfg]) == 2
    assert "data.train_file ('x.jsonl') does not exist" in capsys.readouterr().err
    assert main(["train", "--config", cfg, "--set", "optim.lr"]) == 2
    assert "is not KEY=VALUE" in capsys.readouterr().err
    assert main(["train", "--config", cfg, "--print-config", "--set", "loss.epsilon=0.2"]) == 0
    assert json.loads(capsys.readouterr().out)["loss"]["epsilon"] == 0.2


@pytest.mark.parametrize(("fast", "expected"), [(True, "bf16"), (False, "fp32")])
def test_precision_auto_picks_bf16_only_where_the_hardware_computes_it(
    monkeypatch: pytest.MonkeyPatch, fast: bool, expected: str
) -> None:
    from rlmec.trainer import config

    monkeypatch.setattr(config, "bf16_is_fast", lambda: fast)
    assert config.EngineConfig(precision="auto").precision == expected
    assert config.EngineConfig(precision="fp32").precision == "fp32"  # explicit wins
    # autocast is an fp32 recipe with bf16 matmuls: plain fp32 where bf16 would be emulated
    assert config.EngineConfig(precision="autocast").precision == ("autocast" if fast else "fp32")


def test_bf16_is_fast_reads_the_cpu_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from rlmec.trainer import config

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    cpuinfo = tmp_path / "cpuinfo"
    real = Path

    def fake_path(p: str) -> Path:
        return cpuinfo if p == "/proc/cpuinfo" else real(p)

    monkeypatch.setattr(config, "Path", fake_path)
    cpuinfo.write_text("flags\t\t: fpu sse avx2 avx512f\n")
    assert not config.bf16_is_fast()
    cpuinfo.write_text("flags\t\t: fpu sse avx2 avx512f avx512_bf16\n")
    assert config.bf16_is_fast()


def test_warmup_steps_override_the_ratio() -> None:
    from rlmec.trainer.config import OptimConfig

    assert OptimConfig(warmup_ratio=0.03).warmup(100) == 3
    assert OptimConfig(warmup_ratio=0.03).warmup(1000) == 30
    # A run cut into segments (max_steps 24, then 48) warms up over the same steps in both.
    assert OptimConfig(warmup_ratio=0.03, warmup_steps=4).warmup(24) == 4
    assert OptimConfig(warmup_ratio=0.03, warmup_steps=4).warmup(48) == 4
    assert OptimConfig(warmup_steps=0).warmup(48) == 0


def test_a_token_records_share_of_right_lines_reaches_the_batch(
    tok: PolicyEncoder, tmp_path: Path
) -> None:
    from rlmec.trainer.data import collate

    rows = [
        token_record(tok.tokenizer, 1) | {"partial_credit": 0.75},
        token_record(tok.tokenizer, 2),
    ]
    samples = read_jsonl(write_jsonl(tmp_path / "a.jsonl", rows), tok)
    assert [s.partial_credit for s in samples] == [0.75, None]
    batch = collate(samples, pad_id=0)
    assert batch.partial_credit is not None and batch.partial_credit.tolist() == [0.75, 0.0]
    bad = write_jsonl(
        tmp_path / "b.jsonl", [token_record(tok.tokenizer, 1) | {"partial_credit": 2}]
    )
    with pytest.raises(DataError, match=r"b.jsonl:1: (?s:.)*partial_credit"):
        read_jsonl(bad, tok)
