"""What the reward service shows to anyone who can reach it: /ready without internal URLs or
credentials, /metrics behind a token when one is configured, and the API-key scheme declared
in the OpenAPI document."""

from __future__ import annotations

from pathlib import Path

import httpx

from rlmec.loop.redis_server import LocalRedis
from rlmec.services.reward.app import PUBLIC_PATHS, create_app
from tests.servers import serve_app
from tests.services.reward.conftest import auth, reward_settings


def test_ready_names_no_address_or_credential(redis_server: LocalRedis) -> None:
    settings = reward_settings("http://grm-user:s3cret-pw@127.0.0.1:9/", redis_server.url)
    with serve_app(create_app(settings)) as url:
        ready = httpx.get(f"{url}/ready", timeout=30)
    assert ready.status_code == 503
    body = ready.text
    assert "s3cret-pw" not in body and "grm-user" not in body and "127.0.0.1" not in body
    assert ready.json()["error"]["message"] == "not ready: grm: unavailable"


def test_metrics_need_the_token_when_one_is_set(redis_server: LocalRedis, tmp_path: Path) -> None:
    (tmp_path / "token").write_text("m3trics-token\n")
    settings = reward_settings(
        "http://127.0.0.1:9", redis_server.url, metrics_token_file=tmp_path / "token"
    )
    with serve_app(create_app(settings)) as url:
        assert httpx.get(f"{url}/metrics").status_code == 401
        wrong = httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_metrics_token"
        assert httpx.get(f"{url}/metrics", headers=auth("alpha")).status_code == 401  # a team key
        ok = httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer m3trics-token"})
        assert ok.status_code == 200 and "rlmec_reward" in ok.text


def test_openapi_declares_the_api_key(redis_server: LocalRedis) -> None:
    with serve_app(create_app(reward_settings("http://127.0.0.1:9", redis_server.url))) as url:
        doc = httpx.get(f"{url}/openapi.json").json()
    assert doc["components"]["securitySchemes"]["apiKey"] == {
        "type": "http", "scheme": "bearer",
        "description": "The team's API key (`rlmec reward hash-key`).",
    }  # fmt: skip
    for path, operations in doc["paths"].items():
        for operation in operations.values():
            expected = [] if path in PUBLIC_PATHS else [{"apiKey": []}]
            assert operation.get("security", []) == expected, path
    assert doc["paths"]["/v1/token-rewards"]["post"]["security"] == [{"apiKey": []}]


def test_a_deployment_salt_changes_the_stored_digests(tmp_path: Path) -> None:
    """With key_salt_file, the teams file holds HMAC-SHA256(salt, key): the key works, a plain
    sha256 digest of it (what a leaked file from elsewhere would hold) does not."""
    import subprocess
    import sys

    from rlmec.services.reward.settings import RewardSettings, TeamConfig
    from rlmec.services.reward.teams import TeamDirectory, hash_key

    salt = tmp_path / "salt"
    salt.write_text("deployment-salt-123\n")
    out = subprocess.run(
        [sys.executable, "-m", "rlmec", "reward", "hash-key", "--team", "t", "--salt-file",
         str(salt)], capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    key = out.split("key:")[1].split()[0]
    digest = out.split("sha256:")[1].split()[0]
    assert digest != hash_key(key) and digest == hash_key(key, b"deployment-salt-123")

    def directory(digests: list[str]) -> TeamDirectory:
        team = TeamConfig(name="t", key_sha256=digests)
        return TeamDirectory(RewardSettings(teams=[team], key_salt_file=salt))

    assert directory([digest]).by_key(key) is not None
    assert directory([hash_key(key)]).by_key(key) is None
    missing = tmp_path / "nope"
    done = subprocess.run([sys.executable, "-m", "rlmec", "reward", "hash-key", "--salt-file",
                           str(missing)], capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2 and str(missing) in done.stderr
