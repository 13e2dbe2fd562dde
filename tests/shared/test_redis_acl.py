"""Per-team Redis users on a real server: a team's trainer credentials reach its own scored
stream and nothing of another team's (NOPERM at the Redis layer), the service user runs the
whole queue but cannot reconfigure or empty the server, and everything still works with them:
``rlmec reward redis-users`` (the real command), a real worker subprocess and the trainer's
reader, all authenticated."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from rlmec.loop.redis_server import LocalRedis
from rlmec.shared import redis_acl
from rlmec.shared.policy_version import PolicyVersion, read_version, write_version
from rlmec.shared.queue import RolloutQueue, ScoredBatchReader, keys_for
from tests.shared.test_queue import samples

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TEAMS = "teams:\n  - name: alpha\n  - name: beta\n"


def rlmec(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rlmec", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalRedis, Path]]:
    """A server of its own (the default user ends up off), users set by the real command."""
    work = tmp_path_factory.mktemp("acl")
    (work / "teams.yaml").write_text(TEAMS)
    with LocalRedis() as server:
        done = rlmec(
            "reward", "redis-users", "--teams-file", str(work / "teams.yaml"),
            "--secrets-dir", str(work / "secrets"), "--apply", "--redis-url", server.url,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        yield server, work / "secrets"


def connect(server: LocalRedis, secrets: Path, user: str) -> redis.Redis:
    password = (secrets / user).read_text().strip()
    return redis.Redis.from_url(server.url, username=user, password=password)


@pytest.fixture
def as_user(acl_server: tuple[LocalRedis, Path]) -> Iterator[Callable[[str], redis.Redis]]:
    server, secrets = acl_server
    opened: list[redis.Redis] = []

    def make(user: str) -> redis.Redis:
        opened.append(connect(server, secrets, user))
        return opened[-1]

    admin = make(redis_acl.ADMIN_USER)
    admin.flushall()
    yield make
    for c in opened:
        c.close()


def test_passwords_are_private_files_and_the_default_user_is_off(
    acl_server: tuple[LocalRedis, Path],
) -> None:
    server, secrets = acl_server
    names = sorted(p.name for p in secrets.iterdir())
    assert names == ["rlmec-admin", "rlmec-service", "rlmec-trainer-alpha", "rlmec-trainer-beta"]
    for p in secrets.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    with redis.Redis.from_url(server.url) as anonymous, pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(server.url, username="rlmec-trainer-alpha", password="guess").ping()


def test_rerunning_converges_and_keeps_the_passwords(acl_server: tuple[LocalRedis, Path]) -> None:
    server, secrets = acl_server
    before = (secrets / "rlmec-trainer-alpha").read_text()
    teams = secrets.parent / "teams.yaml"
    done = rlmec("reward", "redis-users", "--teams-file", str(teams), "--secrets-dir",
                 str(secrets), "--apply", "--redis-url", server.url)  # fmt: skip
    assert done.returncode == 0, done.stderr  # this time as rlmec-admin: the default user is off
    assert (secrets / "rlmec-trainer-alpha").read_text() == before
    assert connect(server, secrets, "rlmec-trainer-alpha").ping()


def scored_batches(
    as_user: Callable[[str], redis.Redis], server: LocalRedis, secrets: Path
) -> None:
    """Push a batch per team and score them with a real worker subprocess that authenticates
    as rlmec-service through the command's own flags."""
    queue = RolloutQueue(as_user(redis_acl.SERVICE_USER))
    queue.push("alpha", samples("a", 2), batch_id="a-1")
    queue.push("beta", samples("b", 2), batch_id="b-1")
    worker = subprocess.Popen(
        [sys.executable, "-m", "rlmec", "reward", "worker", "--redis-url", server.url,
         "--redis-username", redis_acl.SERVICE_USER, "--redis-password-file",
         str(secrets / redis_acl.SERVICE_USER), "--scorer", "instant", "--block-ms", "100"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not all(
            (s := queue.status(t, b)) is not None and s.status == "scored"
            for t, b in (("alpha", "a-1"), ("beta", "b-1"))
        ):
            assert worker.poll() is None, worker.stderr.read().decode() if worker.stderr else ""
            assert time.monotonic() < deadline, "the authenticated worker scored nothing"
            time.sleep(0.05)
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def test_everything_works_with_the_users(
    acl_server: tuple[LocalRedis, Path], as_user: Callable[[str], redis.Redis]
) -> None:
    server, secrets = acl_server
    scored_batches(as_user, server, secrets)
    reader = ScoredBatchReader(as_user("rlmec-trainer-alpha"), "alpha")
    got = reader.pull(max_batches=4, block_ms=200)
    assert [d.batch.batch_id for d in got] == ["a-1"]
    reader.ack(got)  # the ack script (XACK, status hash, counter) and the trim script
    status = RolloutQueue(as_user(redis_acl.SERVICE_USER)).status("alpha", "a-1")
    assert status is not None and status.consumed
    assert reader.pull(max_batches=4, block_ms=50) == []
    # The trainer publishes policy versions for its team's rollout actors.
    record = PolicyVersion(1, "/runs/policy/v000001", 2, 0.0)
    write_version(as_user("rlmec-trainer-alpha"), "alpha", record)
    assert read_version(as_user("rlmec-trainer-alpha"), "alpha") == record


def _denied(call: Callable[[], Any]) -> None:
    with pytest.raises(redis.exceptions.NoPermissionError):
        call()


def test_a_trainer_cannot_reach_another_teams_keys(
    acl_server: tuple[LocalRedis, Path], as_user: Callable[[str], redis.Redis]
) -> None:
    server, secrets = acl_server
    scored_batches(as_user, server, secrets)
    alpha = as_user("rlmec-trainer-alpha")
    beta = keys_for("beta")
    # read, ack, trim, forge, delete: each refused by Redis itself
    _denied(lambda: ScoredBatchReader(alpha, "beta"))
    _denied(lambda: alpha.xreadgroup("trainer", "x", {beta.scored: ">"}, count=1))
    _denied(lambda: alpha.xrange(beta.scored))
    _denied(lambda: alpha.xack(beta.scored, "trainer", "0-1"))
    _denied(lambda: alpha.xtrim(beta.scored, maxlen=0))
    _denied(lambda: alpha.xadd(beta.scored, {"batch": "{}"}))
    _denied(lambda: alpha.hset(beta.status("b-1"), "status", "consumed"))
    _denied(lambda: alpha.delete(beta.scored))
    _denied(lambda: alpha.eval("return redis.call('XLEN', KEYS[1])", 1, beta.scored))
    _denied(lambda: write_version(alpha, "beta", PolicyVersion(9, "/elsewhere", 9, 0.0)))
    _denied(lambda: read_version(alpha, "beta"))
    # nor push rollouts (its own team's included: that is the service's job), scan or reset
    _denied(lambda: alpha.xadd(keys_for("alpha").rollouts, {"batch": "{}"}))
    _denied(lambda: alpha.keys("*"))
    _denied(lambda: alpha.flushall())
    _denied(lambda: alpha.config_set("maxmemory", "1"))
    _denied(lambda: alpha.execute_command("ACL", "LIST"))
    # beta's batch is untouched and its own trainer still gets it
    reader = ScoredBatchReader(as_user("rlmec-trainer-beta"), "beta")
    assert [d.batch.batch_id for d in reader.pull(max_batches=4, block_ms=200)] == ["b-1"]


def test_the_service_user_cannot_reconfigure_or_empty_the_server(
    as_user: Callable[[str], redis.Redis],
) -> None:
    svc = as_user(redis_acl.SERVICE_USER)
    assert svc.set("rlmec:reward:probe", "1")
    _denied(lambda: svc.set("other:key", "1"))  # outside rlmec:*
    _denied(lambda: svc.flushall())
    _denied(lambda: svc.flushdb())
    _denied(lambda: svc.keys("*"))
    _denied(lambda: svc.config_set("maxmemory", "1"))
    _denied(lambda: svc.execute_command("ACL", "SETUSER", "evil", "on", "+@all"))
    _denied(lambda: svc.shutdown())


def test_the_acl_file_gives_the_same_users_at_server_start(tmp_path: Path) -> None:
    teams = tmp_path / "teams.yaml"
    teams.write_text(TEAMS)
    acl = tmp_path / "users.acl"
    done = rlmec("reward", "redis-users", "--teams-file", str(teams), "--secrets-dir",
                 str(tmp_path / "secrets"), "--acl-file", str(acl))  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = acl.read_text()
    for p in (tmp_path / "secrets").iterdir():  # hashes only, never a password
        assert p.read_text().strip() not in text
    with LocalRedis(extra_args=("--aclfile", str(acl))) as server:
        anonymous = redis.Redis.from_url(server.url)
        with anonymous, pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        alpha = connect(server, tmp_path / "secrets", "rlmec-trainer-alpha")
        assert alpha.ping()
        _denied(lambda: alpha.xrange(keys_for("beta").scored))
        alpha.close()


def test_password_files(tmp_path: Path) -> None:
    first = redis_acl.read_or_create_password(tmp_path, "u")
    assert redis_acl.read_or_create_password(tmp_path, "u") == first and len(first) >= 40
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        redis_acl.read_or_create_password(tmp_path, "empty")
    assert redis_acl.credentials("svc", tmp_path / "u") == {"username": "svc", "password": first}
    assert redis_acl.credentials(None, None) == {}
    with pytest.raises(ValueError, match="cannot be read"):
        redis_acl.credentials("svc", tmp_path / "missing")


def test_a_missing_password_file_is_a_clear_cli_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    done = rlmec("reward", "worker", "--redis-username", "rlmec-service",
                 "--redis-password-file", missing, "--scorer", "instant")  # fmt: skip
    assert done.returncode == 2
    assert missing in done.stderr and "cannot be read" in done.stderr


def test_settings_read_the_password_file(tmp_path: Path) -> None:
    from rlmec.services.reward.settings import RewardSettings

    (tmp_path / "pw").write_text("s3cret\n")
    env = {"RLMEC_REWARD_REDIS_USERNAME": "rlmec-service",
           "RLMEC_REWARD_REDIS_PASSWORD_FILE": str(tmp_path / "pw")}  # fmt: skip
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        creds = RewardSettings().redis_credentials()
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    assert creds == {"username": "rlmec-service", "password": "s3cret"}


async def test_a_trainer_cannot_lift_its_own_scored_bound(
    acl_server: tuple[LocalRedis, Path], as_user: Callable[[str], redis.Redis]
) -> None:
    """Issue 26 item 6: the trainer user may DECRBY its counters (its ack script needs it), so
    the scored bound must hold on what the stream really holds, not on what they say."""
    import redis.asyncio

    from rlmec.shared.queue import QueueFullError, QueueLimits, RolloutConsumer
    from tests.shared.test_queue import score_all

    server, secrets = acl_server
    limits = QueueLimits(max_scored_bytes=40_000, max_scored_samples=1000)
    queue = RolloutQueue(as_user(redis_acl.SERVICE_USER), limits=limits)
    service = redis.asyncio.Redis.from_url(
        server.url, username=redis_acl.SERVICE_USER,
        password=(secrets / redis_acl.SERVICE_USER).read_text().strip(),
    )  # fmt: skip
    consumer = RolloutConsumer(service, consumer="w", teams=["beta"], limits=limits)
    trainer, keys = as_user("rlmec-trainer-beta"), keys_for("beta")
    refused = None
    try:
        for i in range(12):  # 12 x 20 KB, three times the bound
            try:
                queue.push("beta", samples(f"g{i}", 1, blob="x" * 20_000), batch_id=f"g-{i}")
            except QueueFullError as exc:
                refused = exc
                break
            await score_all(consumer)
            trainer.decrby(keys.scored_bytes, 10**9)  # what an ack would free, and far more
            trainer.decrby(keys.scored_samples, 10**9)
    finally:
        await service.aclose()
    assert refused is not None and refused.stream == "scored_bytes", "the bound was lifted"
    assert trainer.xlen(keys.scored) <= 3
