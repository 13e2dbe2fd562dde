"""``rlmec reward redis-users``: create the per-team Redis users (:mod:`rlmec.shared.redis_acl`).

Two ways to hand them to Redis, both from the same teams file and password files:

- ``--acl-file PATH`` writes an ACL file for ``redis-server --aclfile PATH`` (compose and
  Kubernetes mount it from a secret): password hashes only, the default user off;
- ``--apply --redis-url URL`` sets the users on a running server (``ACL SETUSER``, idempotent),
  connecting as ``rlmec-admin`` when it exists, else as the default user of a fresh server,
  and then switches the default user off.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from urllib.parse import urlsplit

import redis
from redis.exceptions import RedisClusterException

from rlmec.shared import redis_acl
from rlmec.shared.redis_acl import AclUser
from rlmec.shared.redis_client import cluster_seeds, cluster_url, connect, is_cluster


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--teams-file", default=None,
        help="teams JSON/YAML (default: RLMEC_REWARD_TEAMS / RLMEC_REWARD_TEAMS_FILE)",
    )  # fmt: skip
    parser.add_argument(
        "--secrets-dir", type=Path, required=True,
        help="one password file per user (read, or generated with mode 0600 when missing)",
    )  # fmt: skip
    parser.add_argument("--acl-file", type=Path, default=None, help="write an ACL file here")
    parser.add_argument(
        "--apply", action="store_true", help="set the users on the server at --redis-url"
    )
    parser.add_argument("--redis-url", default=None, help="default: RLMEC_REWARD_REDIS_URL")
    parser.add_argument(
        "--keep-default-user", action="store_true",
        help="with --apply: leave Redis's default user on (not recommended)",
    )  # fmt: skip


def apply_users(client: redis.Redis, users: list[AclUser], *, disable_default: bool) -> None:
    """Set every user (reset first, so a rerun converges), then switch the default user off
    and persist with ``ACL SAVE`` when the server runs with an ACL file."""
    # ACLs are per node: on a Redis Cluster every primary and replica gets the same users.
    where = {"target_nodes": "all"} if is_cluster(client) else {}
    for user in users:
        client.execute_command("ACL", "SETUSER", *user.setuser_args(), **where)
    if disable_default:
        client.execute_command("ACL", "SETUSER", "default", "off", **where)
    try:
        client.execute_command("ACL", "SAVE", **where)
    except redis.ResponseError as exc:
        if "ACL file" not in str(exc) and "aclfile" not in str(exc).lower():
            raise


def _where(url: str) -> str:
    """Host and port(s) of a URL, without its credentials."""
    if cluster_url(url) is not None:
        return "the cluster at " + ",".join(f"{h}:{p}" for h, p in cluster_seeds(url))
    where = urlsplit(url)
    return f"{where.hostname}:{where.port or 6379}"


def admin_client(url: str, users: list[AclUser]) -> redis.Redis:
    """A connection as rlmec-admin, or as the default user of a server without our users."""
    admin = next(u for u in users if u.name == redis_acl.ADMIN_USER)
    try:
        client = connect(url, username=admin.name, password=admin.password)
    except (redis.AuthenticationError, RedisClusterException):  # a cluster client logs in
        client = None  # as it starts; unreachable, it fails again below with its own error
    if client is not None:
        try:
            client.ping()
            return client
        except redis.AuthenticationError:
            client.close()
    client = connect(url)
    client.ping()  # NOAUTH here: the server has users, but not ours; the error says so
    return client


def run(args: argparse.Namespace) -> int:
    from rlmec.services.reward.settings import get_settings

    overrides = {"teams_file": args.teams_file} if args.teams_file else {}
    settings = get_settings(**overrides)
    teams = [t.name for t in settings.teams]
    if not teams:
        print("rlmec reward redis-users: no teams configured; pass --teams-file", file=sys.stderr)
        return 2
    if not args.acl_file and not args.apply:
        print("rlmec reward redis-users: pass --acl-file PATH, --apply, or both", file=sys.stderr)
        return 2
    users = redis_acl.all_users(teams, args.secrets_dir)
    if args.acl_file:
        args.acl_file.parent.mkdir(parents=True, exist_ok=True)
        args.acl_file.write_text(redis_acl.acl_file(users))
        args.acl_file.chmod(0o600)
        print(f"wrote {args.acl_file} ({len(users)} users, default user off)")
    if args.apply:
        url = args.redis_url or settings.redis_url
        try:
            client = admin_client(url, users)
            with client:
                apply_users(client, users, disable_default=not args.keep_default_user)
        except redis.RedisError as exc:
            print(f"rlmec reward redis-users: {_where(url)}: {exc}", file=sys.stderr)
            return 1
        print(f"set {len(users)} users on {_where(url)}")
    for user in users:
        print(f"  {user.name:<32} password file {args.secrets_dir / user.name}")
    return 0
