"""The one-machine stack's services for ``rlmec demo`` and ``rlmec up``: which policy and GRM
to run (:func:`resolve_models`) and Redis, the GRM service, the reward service with one team
and a reward worker started on a :class:`rlmec.loop.stack.Stack` (:func:`start_services`)."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

DEMO_TEAM = "demo"
POLICY_TOKENIZER = "smollm2"
GRM_TRAINING_MINUTES = 90  # benchmarks.grm_quality.run on 2 cores: 106 min with tests beside it
# Where the arith start policy is made once (beside the demo's and up's work dirs).
WARM_START_WORKDIR = Path.home() / ".cache" / "rlmec" / "warm-start"


def start_services(
    stack: Any, args: argparse.Namespace, model: Path, grm: Path, env: dict[str, str],
    limits: dict[str, Any] | None = None, *, fresh_redis: bool = True,
    ports: tuple[int, int] | None = None, anonymous: bool = False,
) -> dict[str, str]:  # fmt: skip
    """Redis, the GRM service, the reward service with the demo team (key
    ``env["RLMEC_API_KEY"]``) and a worker; their URLs. ``fresh_redis``: the demo starts
    empty; ``rlmec up`` keeps what an earlier ``up`` left (queued and scored batches).
    ``ports``: (GRM, reward) ports, else free ones; ``anonymous``: key-less requests are
    served as team 'anonymous' (loopback only: the services bind 127.0.0.1)."""
    from rlmec.loop.stack import RLMEC, grm_args, loopback_url, port_of, reward_env

    if fresh_redis:
        shutil.rmtree(args.workdir / "redis", ignore_errors=True)
    redis_url = stack.start_redis(args.workdir / "redis")
    say(f"redis: {redis_url} (valkey, AOF on)")
    grm_url, reward_url = (
        (f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[1]}")
        if ports else (loopback_url(), loopback_url())
    )  # fmt: skip
    log = stack.start("grm", grm_args(grm, args.engine, port_of(grm_url)), env)
    say(f"GRM service ({args.engine}) starting at {grm_url}, log {log} (a few minutes on CPU)")
    stack.wait_ready("grm", grm_url, args.startup_timeout, heartbeat=say)
    renv = reward_env(env, grm_url=grm_url, redis_url=redis_url, team=DEMO_TEAM,
                      key=env["RLMEC_API_KEY"], policy_tokenizer=(POLICY_TOKENIZER, model),
                      limits=limits)  # fmt: skip
    if anonymous:
        renv["RLMEC_REWARD_ALLOW_ANONYMOUS"] = "true"
    stack.start("reward", [*RLMEC, "reward", "serve", "--port", str(port_of(reward_url))], renv)
    stack.start("worker", [*RLMEC, "reward", "worker", "--consumer", "demo-worker"], renv)
    stack.wait_ready("reward", reward_url, args.startup_timeout, heartbeat=say)
    say(
        f"reward service at {reward_url} (OpenAPI docs: {reward_url}/docs; token-reward "
        f"inspector: {reward_url}/inspect), worker started"
    )
    return {"redis": redis_url, "grm": grm_url, "reward": reward_url}


def resolve_models(args: argparse.Namespace, *, make_start: bool = True) -> tuple[Path, Path]:
    """(policy, GRM), and in ``args.reference_rewrite`` whether the actor sends reference
    rewrites. Policy: ``--model``, else on arith the warm-started start policy (made here
    unless ``make_start`` is False: ``rlmec up`` needs only its tokenizer, which is SmolLM2's),
    on gsm8k SmolLM2-135M. GRM: ``--grm``, else the task's trained GRM when there is one and no
    ``--model`` was given, else the policy model with reference rewrites."""
    import rlmec.services.grm.model_files as files

    if args.model is not None:
        model = args.model
    else:
        model = files.convert_smollm2(files.SMOLLM2_DIR)
        if args.task == "arith" and (
            make_start or (files.ARITH_START_DIR / "config.json").is_file()
        ):
            model = _arith_start(model, files.ARITH_START_DIR)
    say(f"policy: {model}")
    trained = files.ARITH_GRM_DIR if args.task == "arith" else files.TRAINED_GRM_DIR
    if args.task == "arith" and args.grm is None and args.model is None:
        # The shipped adapter, merged into SmolLM2 once (the GRM engine serves one model).
        trained = files.arith_grm(files.SMOLLM2_DIR) or files.ARITH_GRM_DIR
    args.reference_rewrite = True
    if args.grm is not None:
        grm = args.grm
    elif args.model is None and (trained / "config.json").is_file():
        # The GSM8K GRM rewrites only 42% of the policy's own errors into correct ones: it
        # scores, the reference rewrites. The arith GRM learnt from the policy's own errors.
        grm, args.reference_rewrite = trained, args.task == "gsm8k"
    else:
        grm = model
        if args.model is None:
            say(f"GRM: the policy model, never trained as a GRM: {trained} is not there, and "
                f"making it takes {_GRM_MAKER[args.task]}. Until then the actor sends each "
                "problem's reference solution as the rewrite and the GRM only scores")  # fmt: skip
    say(f"GRM: {grm}" + (" (with reference rewrites)" if args.reference_rewrite else
                          " (its own locate and rewrite; no reference rewrite)"))  # fmt: skip
    return model, grm


_GRM_MAKER = {
    "arith": "about 40 min on 2 cores: `.venv/bin/python -m benchmarks.learning.run`",
    "gsm8k": f"about {GRM_TRAINING_MINUTES} min on 2 cores: "
    "`.venv/bin/python -m benchmarks.grm_quality.run`",
}


def _arith_start(base: Path, dest: Path) -> Path:
    from rlmec.warm_start import STEPS, make_start_policy

    if not (dest / "config.json").is_file():
        say(f"making the arith start policy once: {STEPS} SFT steps on reference solutions "
            f"(about 8 min on 2 cores; not counted in --minutes), into {dest}")  # fmt: skip
    return make_start_policy(base, WARM_START_WORKDIR, dest)


def say(message: str) -> None:
    print(f"\033[1m[rlmec demo]\033[0m {message}" if sys.stdout.isatty() else f"[demo] {message}",
          flush=True)  # fmt: skip
