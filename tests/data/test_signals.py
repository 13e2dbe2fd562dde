"""``rlmec data signals`` against the real reward service (GRM on the tiny model, real Redis,
uvicorn on loopback): ScoredSample lines with the initial policy's reference log-probs, which
the trainer reads as they are; resume; clear errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rlmec.cli import main
from rlmec.data.synth import corrupt
from rlmec.data.tasks import load_task
from rlmec.loop.redis_server import LocalRedis
from rlmec.shared.jsonl import read_rows
from rlmec.shared.schemas import ScoredSample
from tests.servers import serve_app

pytestmark = pytest.mark.integration
KEY = "signals-key-0123456789"


@pytest.fixture(scope="module")
def reward_url(tiny_model_dir: Path, redis_server: LocalRedis) -> Iterator[str]:
    from rlmec.services.grm.app import create_app as grm_app
    from rlmec.services.grm.settings import GrmSettings
    from rlmec.services.reward.app import create_app
    from rlmec.services.reward.settings import RewardSettings, TeamConfig
    from rlmec.services.reward.teams import hash_key

    with serve_app(grm_app(GrmSettings(model=str(tiny_model_dir), engine="hf"))) as grm:
        settings = RewardSettings(
            grm_urls=[grm], redis_url=redis_server.url, redis_prefix="rlmec:signals-test",
            teams=[TeamConfig(name="data", key_sha256=[hash_key(KEY)])],
            grm_max_new_tokens=12, cache_enabled=False,
        )  # fmt: skip
        with serve_app(create_app(settings)) as url:
            yield url


def test_signals_are_trainer_records_with_reference_logprobs(
    reward_url: str, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoTokenizer

    from rlmec.shared.tokenization import encode_output
    from rlmec.trainer.data import PolicyEncoder, read_jsonl

    monkeypatch.setenv("RLMEC_API_KEY", KEY)
    made = [r for p in load_task("gsm8k_train", limit=8) if (r := corrupt(p)) is not None][:3]
    records = [*made, made[0].model_copy(update={"id": "ok", "correct": True,
                                                 "prediction": made[0].rewrite})]  # fmt: skip
    inp, out = tmp_path / "in.jsonl", tmp_path / "signals.jsonl"
    inp.write_text("".join(r.model_dump_json() + "\n" for r in records))
    args = ["data", "signals", "--input", str(inp), "--output", str(out), "--reward-url",
            reward_url, "--policy", str(tiny_model_dir), "--policy-engine", "hf",
            "--batch-size", "2", "--use-rewrites"]  # fmt: skip
    assert main(args) == 0
    rows = [ScoredSample.model_validate(r) for r in read_rows(out)]
    assert [r.id for r in rows] == [r.id for r in records]
    scored = [r for r in rows if r.status == "scored"]
    assert scored, [r.reason for r in rows]  # the synthetic rewrites reach the reference
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    for r in scored:
        assert r.behaviour_logprobs is not None
        assert len(r.behaviour_logprobs) == len(encode_output(tok, r.prediction).token_ids)
        assert all(lp <= 0 for lp in r.behaviour_logprobs)
    samples = read_jsonl(out, PolicyEncoder(tok, 1024))  # what rlmec train reads
    assert len(samples) == len(scored) and all(s.ref_logprobs is not None for s in samples)
    assert main(args) == 0  # resume: nothing new
    assert len(read_rows(out)) == len(records)


def test_signals_errors_name_the_fix(
    reward_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp, out = tmp_path / "in.jsonl", tmp_path / "o.jsonl"
    made = [r for p in load_task("gsm8k_train", limit=4) if (r := corrupt(p)) is not None]
    inp.write_text(made[0].model_dump_json() + "\n")
    base = ["data", "signals", "--input", str(inp), "--output", str(out), "--reward-url"]
    assert main([*base, reward_url, "--api-key-env", "NO_SUCH_VARIABLE_SET"]) == 2
    err = capsys.readouterr().err
    assert "401" in err and "rerun to continue" in err  # no key: the service refuses
    assert read_rows(out) == []  # nothing half-written
    assert main([*base, reward_url, "--batch-size", "0"]) == 2
    assert "--batch-size (0)" in capsys.readouterr().err
    assert main([*base, reward_url, "--threshold", "2"]) == 2
    assert "--threshold 2.0: Input should be less than or equal to 1" in capsys.readouterr().err


def test_edit_penalty_floors_what_the_rewrite_changes(
    reward_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--edit-penalty`` through the real service: each wrong sample's reward is the floor
    on the prediction tokens its rewrite does not keep, and the §3.1 value elsewhere."""
    from rlmec.shared.alignment import not_kept

    monkeypatch.setenv("RLMEC_API_KEY", KEY)
    made = [r for p in load_task("gsm8k_train", limit=8) if (r := corrupt(p)) is not None][:3]
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(r.model_dump_json() + "\n" for r in made))
    runs = {}
    for name, extra in (("paper", []), ("edits", ["--edit-penalty"])):
        out = tmp_path / f"{name}.jsonl"
        args = ["data", "signals", "--input", str(inp), "--output", str(out), "--reward-url",
                reward_url, "--use-rewrites", *extra]  # fmt: skip
        assert main(args) == 0
        runs[name] = [ScoredSample.model_validate(r) for r in read_rows(out)]
    scored = 0
    for paper, edits in zip(runs["paper"], runs["edits"], strict=True):
        if edits.status != "scored" or paper.status != "scored":
            continue
        assert edits.params.edit_penalty and not paper.params.edit_penalty
        assert paper.rewards is not None and edits.rewards is not None
        assert edits.imitation_weights is not None
        dropped = not_kept(edits.rewards.token_ids, edits.imitation_weights.token_ids)
        assert any(dropped), "a synthetic corruption changes some token"
        want = [-0.1 if d else v for v, d in zip(paper.rewards.values, dropped, strict=True)]
        assert edits.rewards.values == pytest.approx(want)
        scored += 1
    assert scored, [r.reason for r in runs["edits"]]
