"""``deploy/monitoring``: every rlmec metric a dashboard panel or an alert names is on the
running services' ``/metrics`` (real GRM service on the tiny model, real reward service, real
Redis), the new gauges carry real values, and ``promtool`` accepts the rules, the scrape config
and every panel's PromQL."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from rlmec.loop.redis_server import LocalRedis
from rlmec.services.grm.app import create_app as grm_app
from rlmec.services.grm.settings import GrmSettings
from rlmec.services.reward.app import create_app
from tests.servers import serve_app
from tests.services.reward.conftest import CORRECT, auth, reward_settings, sample

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
DASHBOARD = MONITORING / "grafana" / "rlmec-dashboard.json"
PROMTOOL = shutil.which("promtool")
SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")


def _panel_exprs(*, variables: bool = False) -> list[str]:
    """The panels' PromQL, and with ``variables`` the template queries (Grafana syntax)."""
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    if variables:
        exprs += [v["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
    return exprs


def _rule_exprs() -> list[str]:
    groups = yaml.safe_load((MONITORING / "rules.yml").read_text())["groups"]
    return [r["expr"] for g in groups for r in g["rules"]]


def _named(exprs: list[str]) -> set[str]:
    return {m for e in exprs for m in re.findall(r"\brlmec_[a-z0-9_]+", e)}


def _declared(text: str) -> set[str]:
    return set(re.findall(r"^# TYPE (\S+) ", text, flags=re.M))


def _base(name: str, declared: set[str]) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in declared:
            return name.removesuffix(suffix)
    return name


def test_every_metric_of_the_dashboard_and_the_alerts_is_served(
    redis_server: LocalRedis, tiny_model_dir: Path
) -> None:
    with serve_app(grm_app(GrmSettings(model=str(tiny_model_dir), engine="hf"))) as grm:
        settings = reward_settings(grm, redis_server.url, redis_prefix="rlmec:monitoring")
        with serve_app(create_app(settings)) as reward:
            scored = httpx.post(f"{reward}/v1/token-rewards", headers=auth("alpha"), timeout=120,
                                json={"samples": [sample(CORRECT)]})  # fmt: skip
            assert scored.status_code == 200, scored.text
            pushed = httpx.post(f"{reward}/v1/rollouts", headers=auth("alpha"), timeout=60,
                                json={"samples": [sample(CORRECT)] * 3})  # fmt: skip
            assert pushed.status_code == 202, pushed.text
            texts = [httpx.get(f"{url}/metrics", timeout=30).text for url in (grm, reward)]
    declared = _declared(texts[0]) | _declared(texts[1])
    named = _named(_panel_exprs(variables=True) + _rule_exprs())
    assert named, "the dashboard names no rlmec metric"
    missing = sorted(n for n in named if _base(n, declared) not in declared)
    assert missing == [], f"named by deploy/monitoring but not on /metrics: {missing}"
    # The gauges read from Redis at scrape time, and the admission wait, carry real values.
    assert 'rlmec_reward_queue_samples{stream="queued",team="alpha"} 3.0' in texts[1]
    assert 'rlmec_reward_queue_samples{stream="dead",team="alpha"} 0.0' in texts[1]
    assert 'rlmec_reward_admission_wait_seconds_count{team="alpha"} 2.0' in texts[1]


def test_the_dashboard_is_well_formed() -> None:
    dash = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) and len(ids) >= 8
    for panel in dash["panels"]:
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
    names = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "team"} <= names


@pytest.mark.skipif(PROMTOOL is None, reason="no promtool: apt-get install prometheus")
def test_promtool_accepts_the_rules_the_config_and_every_panel_query(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    for args in (["check", "rules", "rules.yml"], ["check", "config", "prometheus.yml"]):
        run = subprocess.run([PROMTOOL, *args], cwd=MONITORING, capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr
    # Each panel's query as a recording rule: promtool parses its PromQL ($team as any team).
    rules = [{"record": f"rlmec:panel_{i}", "expr": e.replace("$team", ".*")}
             for i, e in enumerate(_panel_exprs())]  # fmt: skip
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    run = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
