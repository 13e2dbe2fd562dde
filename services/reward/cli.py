"""``rlmec reward serve|hash-key``. Heavy imports stay inside the commands."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

# The settings `rlmec reward serve` takes as flags (generated from RewardSettings: the flag is
# the field's name); a flag overrides its RLMEC_REWARD_* variable.
SERVE_FIELDS = ("grm_urls", "redis_url", "teams_file", "host", "port", "cache_ttl_s",
                "cache_max_entries", "allow_anonymous", "coalesce_window_ms")  # fmt: skip


def add_commands(parser: argparse.ArgumentParser) -> None:
    from rlmec.services.reward.settings import RewardSettings
    from rlmec.shared.settings_cli import add_setting_flags

    sub = parser.add_subparsers(dest="reward_command", metavar="SUBCOMMAND", required=True)
    serve = sub.add_parser("serve", help="run the token-reward HTTP service",
                           description="Run the token-reward HTTP service (flags override the "
                           "RLMEC_REWARD_* variables).")  # fmt: skip
    add_setting_flags(serve, RewardSettings, SERVE_FIELDS, env_prefix="RLMEC_REWARD_")
    serve.add_argument(
        "--policy-tokenizer", action="append", default=None, metavar="NAME=DIR",
        help="register a policy tokenizer (local directory) under NAME; repeatable",
    )  # fmt: skip
    serve.add_argument("--log-level", default="info", help="uvicorn log level")
    serve.set_defaults(func=_serve)

    hash_key = sub.add_parser(
        "hash-key", help="generate an API key and print it with its sha256 for the teams config"
    )
    hash_key.add_argument("--team", default="my-team", help="team name for the printed entry")
    hash_key.add_argument(
        "--key", default=None, help="hash this existing key instead of generating one"
    )
    hash_key.add_argument(
        "--salt-file", default=None,
        help="the deployment's key salt (RLMEC_REWARD_KEY_SALT_FILE): print HMAC-SHA256 digests",
    )  # fmt: skip
    hash_key.set_defaults(func=_hash_key)

    from rlmec.services.reward import redis_users

    users = sub.add_parser(
        "redis-users",
        help="create per-team Redis ACL users (trainers reach only their team's keys)",
        description=redis_users.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    redis_users.add_arguments(users)
    users.set_defaults(func=redis_users.run)

    # The worker module is light (redis, pydantic); the pipeline loads only when it runs.
    from rlmec.services.reward import worker

    score_worker = sub.add_parser("worker", help="score queued rollouts (Redis Streams consumer)")
    worker.add_worker_arguments(score_worker)
    score_worker.set_defaults(func=worker.run_worker_command)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        f: getattr(args, f) for f in SERVE_FIELDS if getattr(args, f) is not None
    }
    if args.policy_tokenizer:
        tokenizers: dict[str, str] = {}
        for entry in args.policy_tokenizer:
            name, sep, path = entry.partition("=")
            if not sep or not name or not path:
                raise ValueError(f"--policy-tokenizer {entry!r} must look like NAME=DIR")
            tokenizers[name] = path
        out["policy_tokenizers"] = tokenizers
    return out


def _serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from rlmec.services.http_server import serve
    from rlmec.services.reward.app import create_app
    from rlmec.services.reward.settings import get_settings

    try:
        settings = get_settings(**_overrides(args))
    except ValueError as exc:
        problems = (
            [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.errors()]
            if isinstance(exc, ValidationError)
            else [("", str(exc))]
        )
        for where, msg in problems:
            print(f"rlmec reward serve: {where or 'settings'}: {msg} (flag or RLMEC_REWARD_* "
                  "variable)", file=sys.stderr)  # fmt: skip
        return 2
    if not settings.teams and not settings.allow_anonymous:
        print(
            "rlmec reward serve: no teams configured, so every request would get 401; set "
            "RLMEC_REWARD_TEAMS / --teams-file (see `rlmec reward hash-key`) or pass "
            "--allow-anonymous on a private network",
            file=sys.stderr,
        )
        return 2
    serve(
        create_app(settings), host=settings.host, port=settings.port,
        header_timeout_s=settings.header_timeout_s, log_level=args.log_level,
    )  # fmt: skip
    return 0


def _hash_key(args: argparse.Namespace) -> int:
    from rlmec.services.reward.teams import generate_key, hash_key
    from rlmec.shared.secret_files import read_secret_file

    try:
        salt = read_secret_file(args.salt_file, "--salt-file").encode() if args.salt_file else None
    except ValueError as exc:
        print(f"rlmec reward hash-key: {exc}", file=sys.stderr)
        return 2
    if args.key is not None:
        key, digest = args.key, hash_key(args.key, salt)
    else:
        key, digest = generate_key(salt)
    print(f"key:    {key}")
    print(f"sha256: {digest}")
    print("teams entry (store the hash, give the key to the team):")
    print(json.dumps({"name": args.team, "key_sha256": [digest]}))
    return 0
