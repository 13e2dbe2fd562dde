"""Token-reward service: throughput, share of time outside the GRM, cache-hit latency.

Workload: 256 GSM8K test problems; half the predictions are the reference solution (correct),
half the reference with its final number changed (wrong). The GPT-style wrong solutions of
the paper are not in the repo, and the GRM here (SmolLM2-135M-Instruct, not trained as a GRM)
cannot rewrite them into correct ones, so the wrong samples carry the reference as a given
``rewrite`` (a "teacher" rewrite): every sample then goes the full scoring path (§3.1 scoring,
rewrite tokenization, §3.3 alignment, spans). ``--grm-rewrite N`` instead lets the GRM rewrite
with a budget of N new tokens (those samples end ``unscored/rewrite_incorrect``).

The GRM runs as ``rlmec grm serve --engine vllm`` in a subprocess; the reward service runs on
loopback in this process, with a real Redis. Requests of ``--batch`` samples go out
``--clients`` at a time. "Outside the GRM" = 1 - (wall time during which at least one GRM call
was in flight) / (client wall time). Cache hits: every sample again, one per request,
sequentially; latency measured by the client over HTTP.

    .venv/bin/python -m benchmarks.reward.run [--samples 256] [--batch 32] [--clients 4]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.report import replace_section
from rlmec.data.tasks import raw_rows

ROOT = Path(__file__).resolve().parents[2]
SMOLLM2_DIR = Path("~/.cache/rlmec/models/smollm2-135m").expanduser()
KEY = "bench-key-0123456789"
_FINAL = re.compile(r"#### *(-?\d[\d,]*)\s*$")


def load_samples(n: int, *, given_rewrite: bool) -> list[dict[str, Any]]:
    rows = raw_rows("gsm8k_test")[:n]
    out: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        sample: dict[str, Any] = {
            "id": str(i),
            "question": row["question"],
            "reference_solution": row["answer"],
            "prediction": row["answer"],
        }
        if i % 2:
            match = _FINAL.search(row["answer"])
            assert match, f"GSM8K row {i} has no '#### N' line"
            wrong = int(match.group(1).replace(",", "")) + 1
            sample["prediction"] = row["answer"][: match.start()] + f"#### {wrong}"
            if given_rewrite:
                sample["rewrite"] = row["answer"]
        out.append(sample)
    return out


def start_grm(model: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2", "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable, "-m", "rlmec", "grm", "serve", "--model", str(model),
        "--engine", "vllm", "--dtype", "float32", "--max-model-len", "2048",
        "--max-batch-size", "256", "--max-batch-tokens", "16384", "--port", str(port),
        "--log-level", "warning",
    ]  # fmt: skip
    return subprocess.Popen(cmd, env=env)


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 600) -> None:
    """A benchmark's server is ready, or the run stops (:func:`rlmec.loop.stack.wait_http`)."""
    from rlmec.loop.stack import wait_http

    wait_http(url, proc, timeout)


async def score_all(
    base: str, samples: list[dict[str, Any]], batch: int, clients: int
) -> tuple[float, list[dict[str, Any]], list[tuple[float, float]]]:
    chunks = [samples[i : i + batch] for i in range(0, len(samples), batch)]
    gate = asyncio.Semaphore(clients)
    headers = {"Authorization": f"Bearer {KEY}"}

    async def post(http: httpx.AsyncClient, chunk: list[dict[str, Any]]) -> list[dict[str, Any]]:
        async with gate:
            resp = await http.post("/v1/token-rewards", json={"samples": chunk}, headers=headers)
        resp.raise_for_status()
        results = list(resp.json()["results"])
        # Per-request server timings (same for every sample of the batch): GRM wait vs total.
        timings.append((results[0]["timings"].get("grm", 0.0), results[0]["timings"]["total"]))
        return results

    timings: list[tuple[float, float]] = []

    async with httpx.AsyncClient(base_url=base, timeout=900) as http:
        start = time.perf_counter()
        parts = await asyncio.gather(*(post(http, c) for c in chunks))
        elapsed = time.perf_counter() - start
    return elapsed, [r for part in parts for r in part], timings


def cache_hits(base: str, samples: list[dict[str, Any]]) -> list[float]:
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=base, timeout=60, headers=headers) as http:
        for sample in samples:
            t0 = time.perf_counter()
            resp = http.post("/v1/token-rewards", json={"samples": [sample]})
            latencies.append(time.perf_counter() - t0)
            resp.raise_for_status()
            assert resp.json()["results"][0]["cached"] is True, "expected a cache hit"
    return latencies


def run(args: argparse.Namespace) -> dict[str, Any]:
    from rlmec.loop.redis_server import LocalRedis, free_port
    from rlmec.services.grm.model_files import convert_smollm2
    from rlmec.services.reward.app import create_app
    from rlmec.services.reward.settings import RewardSettings, TeamConfig
    from rlmec.services.reward.teams import hash_key
    from tests.servers import serve_app

    load_before = os.getloadavg()[0]  # the report states it: is the machine quiet?
    model = convert_smollm2(args.model)
    samples = load_samples(args.samples, given_rewrite=args.grm_rewrite == 0)
    port = free_port()
    grm_url = f"http://127.0.0.1:{port}"
    proc = start_grm(model, port)
    try:
        wait_ready(grm_url, proc)
        with LocalRedis() as redis_server:
            team = TeamConfig(name="bench", key_sha256=[hash_key(KEY)], rate_limit=10**9,
                              max_concurrency=64)  # fmt: skip
            settings = RewardSettings(
                grm_urls=[grm_url], redis_url=redis_server.url, teams=[team],
                grm_max_new_tokens=max(args.grm_rewrite, 1), grm_batch_size=args.batch,
                grm_timeout_s=3600,  # a call waits behind the others in the GRM's queue
            )  # fmt: skip
            app = create_app(settings)
            with serve_app(app, timeout=120) as base:
                warm = [dict(s, question=s["question"] + " (warm-up)") for s in samples[:4]]
                asyncio.run(score_all(base, warm, 4, 1))
                grm = app.state.pipeline.grm
                busy0 = grm.busy_seconds
                wall, results, timings = asyncio.run(
                    score_all(base, samples, args.batch, args.clients)
                )
                busy = grm.busy_seconds - busy0
                calls0 = grm.calls
                hits = cache_hits(base, samples)
                assert grm.calls == calls0, "cache hits must not call the GRM"
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    statuses: dict[str, int] = {}
    for r in results:
        name = r["status"] if r["status"] == "scored" else f"unscored/{r['reason']}"
        statuses[name] = statuses.get(name, 0) + 1
    hits.sort()
    return {
        "wall": wall, "busy": busy, "outside": 1 - busy / wall, "statuses": statuses,
        "outside_per_request": sum(t - g for g, t in timings) / sum(t for _, t in timings),
        "hit_p50_ms": 1000 * statistics.median(hits),
        "hit_p99_ms": 1000 * hits[min(len(hits) - 1, int(0.99 * len(hits)))],
        "tokens": sum(len(r["rewards"]["token_ids"]) for r in results if r.get("rewards")),
        "load_before": load_before,
    }  # fmt: skip


def report(args: argparse.Namespace, m: dict[str, Any]) -> str:
    n = args.samples
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    command = (
        f".venv/bin/python -m benchmarks.reward.run --samples {n} --batch {args.batch} "
        f"--clients {args.clients}"
    )
    if args.grm_rewrite:
        command += f" --grm-rewrite {args.grm_rewrite}"
    mode = (
        "wrong samples carry a given rewrite (the reference)"
        if not args.grm_rewrite
        else f"the GRM rewrites wrong samples (max {args.grm_rewrite} new tokens)"
    )
    worst = max(m["outside"], m["outside_per_request"])
    outside_ok = "met" if worst < 0.15 else "NOT met"  # both measures must meet it
    hit_ok = "met" if m["hit_p50_ms"] < 5 else "NOT met"
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(m["statuses"].items()))
    return f"""`POST /v1/token-rewards` with SmolLM2-135M-Instruct as the GRM (`rlmec grm serve
--engine vllm`, vllm-cpu, float32, in a subprocess), the reward service on loopback uvicorn in
the benchmark process, real Redis (valkey). Workload: {n} GSM8K test problems, half correct
(the reference solution), half wrong (final number + 1); {mode}. Requests of {args.batch}
samples, {args.clients} in flight. Baseline for "outside the GRM": the GRM calls themselves.

- machine: {machine}, no GPU; 1-minute load average just before the run: {m["load_before"]:.2f}
- date: {dt.date.today().isoformat()}
- command: `{command}`

| figure | value | target |
| --- | ---: | --- |
| samples/s (cold cache) | {n / m["wall"]:.1f} ({m["wall"]:.2f} s for {n}) | - |
| time inside GRM calls | {m["busy"]:.2f} s | - |
| outside the GRM, wall vs GRM in flight | {100 * m["outside"]:.1f} % | < 15 %: {outside_ok} |
| outside the GRM, per request (total - GRM wait) | {100 * m["outside_per_request"]:.1f} % | same |
| cache-hit latency p50 (1 sample/request, HTTP) | {m["hit_p50_ms"]:.2f} ms | < 5 ms: {hit_ok} |
| cache-hit latency p99 | {m["hit_p99_ms"]:.2f} ms | - |

Outcomes: {statuses}; {m["tokens"]} prediction tokens (+EOS) rewarded. Cache hits made no GRM
call (checked).
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--grm-rewrite", type=int, default=0, metavar="N")
    parser.add_argument("--model", type=Path, default=SMOLLM2_DIR)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    metrics = run(args)
    print(json.dumps(metrics, indent=2), flush=True)
    text = report(args, metrics)
    print(text)
    if not args.no_write:
        replace_section("reward", text)


if __name__ == "__main__":
    main()
