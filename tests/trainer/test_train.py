"""The DeepSpeed recipe end to end on CPU with the tiny model: training moves the policy the
right way, resume is exact, the stream is consumed exactly once, 2 ranks == 1 rank × 2 acc."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from rlmec.trainer.config import TrainConfig
from rlmec.trainer.data import PolicyEncoder, collate, read_jsonl
from rlmec.trainer.train import policy_logprobs, train
from tests.trainer.records import scored_sample, token_record, write_jsonl

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def train_file(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    records = [token_record(tokenizer, i) for i in range(16)]
    return write_jsonl(tmp_path_factory.mktemp("data") / "train.jsonl", records)


def make_config(model: Path, out: Path, train_file: Path | None, **sections: Any) -> TrainConfig:
    raw: dict[str, Any] = {
        "model": str(model),
        "output_dir": str(out),
        "seed": 0,
        "data": {"train_file": str(train_file) if train_file else None, "max_length": 256},
        "optim": {"lr": 1e-3, "warmup_ratio": 0.0, "epochs": 1, "global_batch_size": 8,
                  "micro_batch_size": 2},
        "engine": {"zero_stage": 2, "precision": "fp32"},
    }  # fmt: skip
    for name, values in sections.items():
        if isinstance(values, dict):
            raw.setdefault(name, {}).update(values)
        else:
            raw[name] = values
    return TrainConfig.model_validate(raw)


def edit_token_logprob(model_dir: Path, train_file: Path) -> float:
    """Mean log-prob of the imitated edit tokens (weight 1.0) of every regular sequence."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = PolicyEncoder(AutoTokenizer.from_pretrained(model_dir), 256)
    batch = collate(read_jsonl(train_file, tok), int(tok.tokenizer.pad_token_id))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        _, reg_lp = policy_logprobs(model, batch)
    edited = batch.regular.loss_mask & (batch.regular.values == 1.0)
    return float(reg_lp[edited].mean())


def test_offline_training_lowers_loss_and_imitates_edits(
    tiny_model_dir: Path, train_file: Path, tmp_path: Path
) -> None:
    cfg = make_config(tiny_model_dir, tmp_path / "run", train_file, optim={"epochs": 4})
    result = train(cfg)

    assert result.steps == 8 and len(result.history) == 8
    losses = [m.loss for m in result.history]
    assert all(map(torch.isfinite, torch.tensor(losses)))
    assert sum(losses[-2:]) < sum(losses[:2])
    assert result.history[-1].imitation_loss < result.history[0].imitation_loss
    assert result.history[0].mean_ratio == pytest.approx(1.0, abs=1e-4)  # ref = initial policy
    assert result.final_dir is not None
    before = edit_token_logprob(tiny_model_dir, train_file)
    after = edit_token_logprob(result.final_dir, train_file)  # also: loads with transformers
    assert after > before + 0.5
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == list(range(1, 9))
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert (tmp_path / "run" / "curves.png").stat().st_size > 10_000  # drawn at the end
    state = json.loads((tmp_path / "run/checkpoints/step-8/rlmec_state.json").read_text())
    assert state["step"] == 8


@pytest.mark.slow
def test_resume_gives_the_same_next_loss(
    tiny_model_dir: Path, train_file: Path, tmp_path: Path
) -> None:
    sections: dict[str, Any] = {"optim": {"epochs": 2}, "save_every_steps": 2}
    sections["keep_checkpoints"] = 5
    full = train(make_config(tiny_model_dir, tmp_path / "a", train_file, **sections))
    assert full.steps == 4
    # A crash after step 2's checkpoint: the newest checkpoint on disk is step-2.
    shutil.copytree(tmp_path / "a" / "checkpoints", tmp_path / "b" / "checkpoints")
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "step-4")
    (tmp_path / "b" / "checkpoints" / "latest").write_text("step-2")

    resumed = train(make_config(tiny_model_dir, tmp_path / "b", train_file, **sections))

    assert [m.step for m in resumed.history] == [3, 4]
    for got, want in zip(resumed.history, full.history[2:], strict=True):
        assert got.loss == pytest.approx(want.loss, abs=1e-6)
        assert got.lr == pytest.approx(want.lr)


# --- online: the scored stream ------------------------------------------------------------


def _push_scored(
    client: Any, team: str, batch_id: str, results: list[Any], policy_version: int | None = None
) -> None:
    import time

    from rlmec.shared.queue import ScoredBatch, keys_for

    batch = ScoredBatch(
        batch_id=batch_id, team=team, results=results, created_at=time.time(),
        scored_at=time.time(), attempts=1, policy_version=policy_version,
    )  # fmt: skip
    client.xadd(keys_for(team).scored, {"batch_id": batch_id, "batch": batch.model_dump_json()})


@pytest.mark.integration
def test_online_training_acks_after_the_step_and_skips_applied_batches(
    tiny_model_dir: Path, redis_url: str, tmp_path: Path
) -> None:
    import redis
    from transformers import AutoTokenizer

    from rlmec.shared.queue import keys_for

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    client = redis.Redis.from_url(redis_url)
    unscored = scored_sample(tokenizer, 5).model_copy(update={"status": "unscored"})
    for b in range(3):
        results = [scored_sample(tokenizer, 2 * b), scored_sample(tokenizer, 2 * b + 1)]
        _push_scored(client, "team-a", f"batch-{b}", [*results, unscored])
    online = {"redis_url": redis_url, "team": "team-a", "block_ms": 100, "idle_timeout_s": 1.5}
    sections: dict[str, Any] = {
        "data": {"mode": "online", "online": online},
        "optim": {"max_steps": 10, "global_batch_size": 2, "micro_batch_size": 2},
    }
    cfg = make_config(tiny_model_dir, tmp_path / "run", None, **sections)

    result = train(cfg)

    assert result.steps == 3  # 3 batches × 2 scored samples, then the stream went idle
    keys = keys_for("team-a")
    assert client.xpending(keys.scored, "trainer")["pending"] == 0
    assert all(client.hexists(keys.status(f"batch-{b}"), "acked_by:trainer") for b in range(3))
    state = json.loads((tmp_path / "run/checkpoints/step-3/rlmec_state.json").read_text())
    assert set(state["data"]["applied_batch_ids"]) == {"batch-0", "batch-1", "batch-2"}

    # After a restart the stream hands back batch-1 (its ack was lost): the checkpoint says
    # it was applied, so only the new batch-3 is trained on.
    client.delete(keys.status("batch-1"))
    _push_scored(client, "team-a", "batch-1", [scored_sample(tokenizer, 2)])
    _push_scored(client, "team-a", "batch-3", [scored_sample(tokenizer, i) for i in (8, 9)])
    again = train(cfg)
    assert again.steps == 4 and [m.step for m in again.history] == [4]
    assert client.xpending(keys.scored, "trainer")["pending"] == 0


def _run_trainer(cfg_path: Path, failpoint: str | None) -> subprocess.CompletedProcess[str]:
    # A launcher's variables left by an in-process train() would point at a port in use.
    drop = ("RLMEC_TRAINER_FAILPOINT", "RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR",
            "MASTER_PORT")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in drop}
    if failpoint:
        env["RLMEC_TRAINER_FAILPOINT"] = failpoint
    cmd = [sys.executable, "-m", "rlmec", "train", "--config", str(cfg_path)]
    return subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.slow
@pytest.mark.integration
def test_online_default_applies_every_batch_once_across_kill_9(
    tiny_model_dir: Path, redis_url: str, tmp_path: Path
) -> None:
    # With the old default (ack_after=step) a kill between checkpoints lost the batches it
    # had acknowledged: 3 of 30 in the attack. The default now acks only what a checkpoint
    # holds, and the checkpoint remembers which batches it applied.
    import redis
    from transformers import AutoTokenizer

    from rlmec.shared.queue import keys_for

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    client = redis.Redis.from_url(redis_url)
    for b in range(8):
        pair = [scored_sample(tokenizer, 2 * b), scored_sample(tokenizer, 2 * b + 1)]
        _push_scored(client, "team-k", f"batch-{b}", pair)
    online = {"redis_url": redis_url, "team": "team-k", "block_ms": 100, "idle_timeout_s": 3}
    sections: dict[str, Any] = {
        "data": {"mode": "online", "online": online},
        "optim": {"max_steps": 8, "global_batch_size": 2, "micro_batch_size": 2},
        "save_every_steps": 3,
    }
    cfg = make_config(tiny_model_dir, tmp_path / "run", None, **sections)
    assert cfg.data.online is not None and cfg.data.online.ack_after == "checkpoint"
    cfg_path = tmp_path / "online.json"
    cfg_path.write_text(cfg.model_dump_json())

    # Killed between checkpoints, after a checkpoint but before its acks, in the middle of a
    # step (batch fetched, not trained), and right after the acks.
    for point in ("after_step:2", "before_ack:3", "before_step:5", "after_ack:6"):
        killed = _run_trainer(cfg_path, point)
        assert killed.returncode == -signal.SIGKILL, (point, killed.stderr[-2000:])
    done = _run_trainer(cfg_path, None)
    assert done.returncode == 0, done.stderr[-3000:]

    root = tmp_path / "run" / "checkpoints"
    assert (root / "latest").read_text() == "step-8"
    state = json.loads((root / "step-8" / "rlmec_state.json").read_text())
    assert state["step"] == 8  # 8 batches, one step each: none applied twice, none lost
    assert sorted(state["data"]["applied_batch_ids"]) == [f"batch-{b}" for b in range(8)]
    assert client.xpending(keys_for("team-k").scored, "trainer")["pending"] == 0


@pytest.mark.integration
def test_sigterm_stops_after_the_step_with_a_checkpoint_and_final(
    tiny_model_dir: Path, redis_url: str, tmp_path: Path
) -> None:
    """A scheduler's SIGTERM (or rlmec demo at its time limit) while the trainer waits for
    data: it stops at once, saving what it trained, instead of waiting out idle_timeout_s."""
    import time

    import redis
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    client = redis.Redis.from_url(redis_url)
    _push_scored(client, "team-t", "only", [scored_sample(tokenizer, i) for i in (0, 1)])
    online = {"redis_url": redis_url, "team": "team-t", "block_ms": 100, "idle_timeout_s": 600}
    sections: dict[str, Any] = {
        "data": {"mode": "online", "online": online},
        "optim": {"max_steps": 50, "global_batch_size": 2, "micro_batch_size": 2},
    }
    cfg = make_config(tiny_model_dir, tmp_path / "run", None, **sections)
    cfg_path = tmp_path / "online.json"
    cfg_path.write_text(cfg.model_dump_json())
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlmec", "train", "--config", str(cfg_path)], cwd=REPO, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while not metrics.is_file():  # step 1 done; now it waits for a batch that never comes
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text() == "step-1"
    assert (tmp_path / "run" / "final" / "config.json").is_file()


# --- several ranks ------------------------------------------------------------------------


@pytest.mark.slow
def test_two_ranks_match_one_rank_with_twice_the_accumulation(
    tiny_model_dir: Path, train_file: Path, tmp_path: Path
) -> None:
    sections: dict[str, Any] = {"optim": {"global_batch_size": 4, "max_steps": 3}}
    one = train(make_config(tiny_model_dir, tmp_path / "one", train_file, **sections))
    assert one.steps == 3

    cfg = make_config(tiny_model_dir, tmp_path / "two", train_file, **sections)
    cfg_path = tmp_path / "two.json"
    cfg_path.write_text(cfg.model_dump_json())
    launcher_env = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in launcher_env}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(_free_port()),
           "-m", "rlmec", "train", "--config", str(cfg_path)]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:  # never leave the ranks running
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, output[-3000:]

    lines = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    two = [json.loads(x) for x in lines]
    assert [m["step"] for m in two] == [1, 2, 3]
    for a, b in zip(one.history, two, strict=True):
        assert b["loss"] == pytest.approx(a.loss, abs=1e-5, rel=1e-5)
        assert b["tokens"] == a.tokens
    assert two[2]["loss"] != pytest.approx(two[0]["loss"])  # the steps did change the model


@pytest.mark.integration
def test_online_trainer_publishes_versions_and_skips_stale_batches(
    tiny_model_dir: Path, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis
    from safetensors.torch import load_file

    from rlmec.trainer.publish import PolicyPublisher

    # Keep the shared-memory copies past the end of training, to look at them (close() below).
    close = PolicyPublisher.close
    monkeypatch.setattr(PolicyPublisher, "close", lambda self: self.client and self.client.close())
    from transformers import AutoTokenizer

    from rlmec.shared.policy_version import read_version
    from rlmec.shared.queue import keys_for

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    client = redis.Redis.from_url(redis_url)
    online = {
        "redis_url": redis_url, "team": "team-a", "block_ms": 100, "idle_timeout_s": 1.5,
        "publish_every_steps": 1, "keep_versions": 2, "max_policy_lag": 1,
        "memory_dir": str(tmp_path / "shm" / "rlmec"),  # stands in for /dev/shm/rlmec
    }  # fmt: skip
    (tmp_path / "shm").mkdir()
    sections: dict[str, Any] = {
        "data": {"mode": "online", "online": online},
        "optim": {"max_steps": 10, "global_batch_size": 2, "micro_batch_size": 2},
    }
    cfg = make_config(tiny_model_dir, tmp_path / "run", None, **sections)
    for b in range(2):
        results = [scored_sample(tokenizer, 2 * b), scored_sample(tokenizer, 2 * b + 1)]
        _push_scored(client, "team-a", f"first-{b}", results)
    first = train(cfg)
    assert first.steps == 2 and [m.policy_version for m in first.history] == [1, 2]

    # The trainer is at version 2 now: a batch from version 0 is 2 behind (max_policy_lag 1).
    for b, version in enumerate([0, 1, 2]):
        results = [scored_sample(tokenizer, 2 * b), scored_sample(tokenizer, 2 * b + 1)]
        _push_scored(client, "team-a", f"v{version}", results, policy_version=version)
    again = train(cfg)

    assert again.steps == 4  # the v1 and v2 batches; the v0 one was skipped
    last = again.history[-1]
    assert (last.policy_version, last.stale_batches, last.stale_samples) == (4, 1, 2)
    assert (last.lag_0, last.lag_1, last.lag_2, last.lag_3plus) == (1, 1, 0, 0)
    keys = keys_for("team-a")
    assert client.xpending(keys.scored, "trainer")["pending"] == 0
    assert client.hexists(keys.status("v0"), "acked_by:trainer")  # skipped, not left pending

    record = read_version(client, "team-a")
    assert record is not None and (record.version, record.step) == (4, 4)
    publish_root = tmp_path / "run/policy"
    assert sorted(p.name for p in publish_root.iterdir()) == ["v000003", "v000004"]
    final = load_file(str(tmp_path / "run/final/model.safetensors"))
    # the same weights on disk and in shared memory, both pruned to the newest 2
    memory_root = tmp_path / "shm/rlmec/team-a"
    assert record.memory_path == str(memory_root / "v000004")
    assert sorted(p.name for p in memory_root.iterdir()) == ["v000003", "v000004"]
    assert record.readable_path() == Path(record.memory_path)
    for where in (record.path, record.memory_path):
        published = load_file(str(Path(where) / "model.safetensors"))
        assert published.keys() == final.keys()
        assert all(torch.equal(published[k], final[k]) for k in final)
    # The shared-memory copies go with the trainer: then actors read the disk copy.
    close(PolicyPublisher(cfg, tokenizer, rank=0))
    assert not memory_root.exists()
    assert record.readable_path() == Path(record.path)

    # A stale batch alone is acknowledged when skipped, not with a next step that may never
    # come: held, it would fill the team's scored bound and the actor could not push.
    _push_scored(client, "team-a", "late-v1", [scored_sample(tokenizer, 0)], policy_version=1)
    assert train(cfg).steps == 4  # no step more
    assert client.xpending(keys.scored, "trainer")["pending"] == 0
    assert client.hexists(keys.status("late-v1"), "acked_by:trainer")

    # A new run from the start points the actors back at version 0: the initial model.
    fresh = make_config(tiny_model_dir, tmp_path / "run2", None, **sections)
    PolicyPublisher(fresh, tokenizer, rank=0).start(0)
    record = read_version(client, "team-a")
    assert record is not None and record.version == 0
    assert Path(record.path) == tiny_model_dir.resolve()


def test_a_full_shared_memory_publishes_to_disk_only(tmp_path: Path) -> None:
    from rlmec.trainer.publish import has_room

    assert has_room(tmp_path / "shm" / "rlmec" / "team", 1)  # not made yet: its parent's room
    assert not has_room(tmp_path, 1 << 62)  # e.g. a container's 64 MiB /dev/shm and a 7B model


def test_one_rank_fast_path_takes_the_same_step_as_zero2_foreach(tiny_model_dir: Path) -> None:
    """ZeRO-0 without the one-rank all-reduce and torch's fused AdamW (the demo's trainer) move
    the weights exactly as ZeRO-2 with the foreach AdamW does, gradient clipping included."""
    from rlmec.trainer.distributed import init_process_group
    from rlmec.trainer.train import ReferencePolicy, deepspeed_config, init_deepspeed, train_step
    from tests.trainer.test_packing import _model, _samples

    _, world, device = init_process_group()
    samples, after = _samples(), []
    for zero, fused in ((2, False), (0, True)):
        cfg = make_config(tiny_model_dir, Path("/unused"), Path("unused.jsonl"),
                          optim={"fused": fused, "global_batch_size": 3, "micro_batch_size": 3,
                                 "max_grad_norm": 0.05},
                          engine={"zero_stage": zero})  # fmt: skip
        torch.manual_seed(0)
        engine = init_deepspeed(cfg, deepspeed_config(cfg, 1, world), total_steps=10)
        assert engine.enable_backward_allreduce is (zero != 0)
        reference = ReferencePolicy(str(tiny_model_dir), device, torch.float32)
        train_step(engine, [samples], cfg, reference=reference, pad_id=0, world=world)
        after.append([p.detach().clone() for p in engine.module.parameters()])
    start = [p.detach() for p in _model(tiny_model_dir).parameters()]
    moved = [not torch.equal(a, s) for a, s in zip(after[0], start, strict=True)]
    assert sum(moved) > len(moved) // 2  # the step did something to compare
    for old, new in zip(*after, strict=True):
        torch.testing.assert_close(new, old, atol=1e-6, rtol=1e-5)
