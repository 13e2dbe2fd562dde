"""Per-team Redis users (Redis >= 6 / valkey ACLs): who may touch which keys with which commands.

Three kinds of user, so that a team's credentials reach only that team's keys *at the Redis
layer*, not just through our HTTP checks:

- ``rlmec-admin``: every command; used only to create the others (``rlmec reward redis-users``).
- ``rlmec-service``: the reward service and its workers: every ``rlmec:*`` key, the data
  commands they use, nothing that reconfigures or empties the server (no ``FLUSHALL``,
  ``CONFIG``, ``ACL``, ``DEBUG``, ``SHUTDOWN``, ``KEYS``).
- ``rlmec-trainer-<team>``: one per team, for a trainer that reads its scored batches from
  Redis directly: only ``rlmec:{<team>}:scored``, its counter, its batch status hashes and its
  dead-letter stream, and only the commands :class:`~rlmec.shared.queue.reader.ScoredBatchReader`
  runs (read with its consumer group, acknowledge, set an unreadable entry aside, trim what every
  group consumed), plus the team's policy version record (written by the trainer, read by its
  rollout actors). Another team's keys answer ``NOPERM``.

The default user is switched off: a client without credentials can do nothing. Passwords live
in files (``--secrets-dir``, mode 0600), one per user, generated on first use; the server only
ever sees their sha256 (``#<hex>`` in ACL rules and in the ACL file). Standard library only.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlmec.shared.queue.keys import check_team
from rlmec.shared.secret_files import read_secret_file

ADMIN_USER = "rlmec-admin"
SERVICE_USER = "rlmec-service"
TRAINER_USER_PREFIX = "rlmec-trainer-"

# What a trainer runs: its connection, ScoredBatchReader's commands and, inside its Lua scripts
# (ACLs apply to the commands a script calls, too), the ack and trim scripts' commands.
TRAINER_COMMANDS: tuple[str, ...] = (
    "+ping", "+echo", "+hello", "+auth", "+client|setname", "+client|setinfo", "+client|id",
    "+select", "+info", "+command", "+cluster|slots", "+cluster|shards",  # cluster clients
    "+xgroup|create", "+xreadgroup", "+xautoclaim", "+xack", "+xrange", "+xrevrange",
    "+xadd", "+xinfo|groups", "+xinfo|stream", "+xpending", "+xtrim", "+xlen",
    "+hexists", "+hget", "+hset", "+hsetnx", "+decrby", "+set", "+get",
    "+evalsha", "+eval", "+script|load", "+script|exists",
)  # fmt: skip

# The services use most data commands; these would let one team's request path (or a bug)
# reconfigure, empty or scan the server every team shares.
SERVICE_RULES: tuple[str, ...] = (
    "~rlmec:*", "resetchannels", "+@all",
    "-@admin", "-@dangerous", "-select", "-swapdb", "-flushdb", "-flushall", "-keys",
    "+info", "+client|setname", "+client|setinfo", "+client|id",
)  # fmt: skip


# The trainer's keys: its scored stream and counters, batch statuses, dead letters, and the
# policy version record it publishes for the team's rollout actors.
TRAINER_KEYS = ("scored", "scored_samples", "scored_bytes", "batch:*", "dead", "policy")


def trainer_user(team: str) -> str:
    return TRAINER_USER_PREFIX + check_team(team)


def trainer_key_patterns(team: str) -> tuple[str, ...]:
    """The team's keys a trainer needs (names from :func:`rlmec.shared.queue.keys.keys_for`).

    Team names hold only ``[A-Za-z0-9._-]``, so no glob character can widen a pattern; the
    ``{}`` of the Cluster hash tag are literal in Redis globs."""
    tag = f"rlmec:{{{check_team(team)}}}"
    return tuple(f"~{tag}:{name}" for name in TRAINER_KEYS)


def password_hash(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


@dataclass(frozen=True)
class AclUser:
    name: str
    password: str
    rules: tuple[str, ...]

    def setuser_args(self) -> list[str]:
        """Arguments of ``ACL SETUSER``: the user is reset first, so rerunning converges."""
        return [self.name, "reset", "on", f"#{password_hash(self.password)}", *self.rules]

    def acl_file_line(self) -> str:
        return " ".join(["user", self.name, "on", f"#{password_hash(self.password)}", *self.rules])


def admin(password: str) -> AclUser:
    return AclUser(ADMIN_USER, password, ("~*", "&*", "+@all"))


def service(password: str) -> AclUser:
    return AclUser(SERVICE_USER, password, SERVICE_RULES)


def trainer(team: str, password: str) -> AclUser:
    return AclUser(trainer_user(team), password, (*trainer_key_patterns(team), "resetchannels",
                                                  "-@all", *TRAINER_COMMANDS))  # fmt: skip


def read_or_create_password(secrets_dir: Path, user: str) -> str:
    """The user's password from ``secrets_dir/<user>``; a new random one (written with mode
    0600, never printed) when the file does not exist yet."""
    path = secrets_dir / user
    if path.is_file():
        password = path.read_text().strip()
        if password:
            return password
        raise ValueError(f"{path} is empty; delete it to have a new password generated")
    secrets_dir.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    return password


def all_users(teams: Iterable[str], secrets_dir: Path) -> list[AclUser]:
    """Admin, service and one trainer user per team, passwords from (or into) ``secrets_dir``."""
    users = [
        admin(read_or_create_password(secrets_dir, ADMIN_USER)),
        service(read_or_create_password(secrets_dir, SERVICE_USER)),
    ]
    for team in sorted(set(teams)):
        name = trainer_user(team)
        users.append(trainer(team, read_or_create_password(secrets_dir, name)))
    return users


def acl_file(users: Sequence[AclUser]) -> str:
    """An ACL file for ``redis-server --aclfile``: the users above, the default user off."""
    lines = ["user default off resetkeys resetchannels -@all"]
    lines += [u.acl_file_line() for u in users]
    return "\n".join(lines) + "\n"


def read_password_file(path: str | Path | None) -> str | None:
    """A password from a file (a Docker/Kubernetes secret), stripped; None without a path."""
    return None if path is None else read_secret_file(path, "redis password file")


def credentials(username: str | None, password_file: str | Path | None) -> dict[str, Any]:
    """Keyword arguments for ``redis.Redis.from_url``; a user and password in the URL win."""
    out: dict[str, Any] = {}
    if username:
        out["username"] = username
    password = read_password_file(password_file)
    if password is not None:
        out["password"] = password
    return out
