"""Fair share of the GRM: a light team's latency while another team saturates the service.

Two teams on one reward service (``rlmec reward serve``, default settings: 8 GRM calls in
flight, shared by weighted fair queuing over the teams that wait) and one GRM (``rlmec grm
serve`` on the tests' tiny model, per engine fair and first come first served), real Redis,
separate processes. The light team
sends one wrong sample per request, one request at a time; its p50 latency is measured idle,
then while the heavy team keeps 16 requests of 64 samples in flight (its whole concurrency
quota). Every sample is unique (no cache hits); wrong samples make the GRM rewrite (16 new tokens).

    .venv/bin/python -m benchmarks.fairness.run [--light 30] [--engines vllm,hf] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.get_reward.run import graded, workload
from benchmarks.report import cpu_flags, machine, replace_section, today
from benchmarks.stack import grm_stack

KEYS = {"heavy": "bench-heavy-0123456789", "light": "bench-light-0123456789"}
HEAVY_IN_FLIGHT, HEAVY_BATCH = 16, 64


def body(samples: list[dict[str, str]]) -> dict[str, Any]:
    return {"samples": [{"question": s["question"], "reference_solution": s["label"],
                         "reference_answer": s["label"], "prediction": s["response"]}
                        for s in samples]}  # fmt: skip


async def light_latencies(http: httpx.AsyncClient, n: int, tag: str) -> list[float]:
    """``n`` sequential one-sample requests of wrong answers (odd rows of the workload)."""
    rows = [r for i, r in enumerate(workload(2 * n, tag)) if i % 2]
    out = []
    headers = {"Authorization": f"Bearer {KEYS['light']}"}
    for row in rows:
        t0 = time.perf_counter()
        resp = await http.post("/v1/token-rewards", json=body([row]), headers=headers)
        out.append(time.perf_counter() - t0)
        scored(resp)
    return out


def scored(resp: httpx.Response) -> int:
    """The samples the GRM graded; a refusal stops the run (it costs no GRM time, and would
    make any latency look good)."""
    resp.raise_for_status()
    results = resp.json()["results"]
    if bad := [r for r in results if not graded(r)]:
        raise RuntimeError(f"{len(bad)} unscored, e.g. {bad[0]}")
    return len(results)


async def heavy_load(http: httpx.AsyncClient, stop: asyncio.Event) -> int:
    """Keep the heavy team's whole quota busy until ``stop``; returns samples scored."""
    headers = {"Authorization": f"Bearer {KEYS['heavy']}"}
    done = 0

    async def lane(k: int) -> None:
        nonlocal done
        i = 0
        while not stop.is_set():
            rows = workload(HEAVY_BATCH, f"heavy{k}-{i}")
            resp = await http.post("/v1/token-rewards", json=body(rows), headers=headers)
            done += scored(resp)
            i += 1

    await asyncio.gather(*(lane(k) for k in range(HEAVY_IN_FLIGHT)))
    return done


async def measure(base: str, light: int) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base, timeout=600) as http:
        idle = await light_latencies(http, light, "idle")
        stop = asyncio.Event()
        t0 = time.perf_counter()
        heavy = asyncio.create_task(heavy_load(http, stop))
        await asyncio.sleep(5)  # the heavy team's backlog builds up first
        loaded = await light_latencies(http, light, "loaded")
        stop.set()
        heavy_samples = await heavy
        heavy_s = time.perf_counter() - t0
    return {"idle": idle, "loaded": loaded, "heavy_samples": heavy_samples,
            "heavy_per_s": heavy_samples / heavy_s}  # fmt: skip


def run(light: int, engine: str, fair: bool, extra_env: dict[str, str]) -> dict[str, Any]:
    """One stack (the tests' tiny model as the GRM on ``engine``), idle then loaded."""
    from rlmec.services.grm.model_files import build_tiny_model
    from rlmec.services.reward.teams import hash_key

    tmp = Path(tempfile.mkdtemp(prefix="rlmec-bench-fair-"))
    teams = tmp / "teams.json"
    teams.write_text(json.dumps([
        {"name": name, "key_sha256": [hash_key(key)]} for name, key in KEYS.items()
    ]))  # fmt: skip
    env = {"RLMEC_REWARD_GRM_MAX_NEW_TOKENS": "16", "RLMEC_REWARD_CACHE_ENABLED": "false",
           **extra_env}  # fmt: skip
    grm_args = ("--kv-cache-gib", "1", "--fair-tenants" if fair else "--no-fair-tenants")
    model = build_tiny_model(tmp / "tiny")
    with grm_stack(model, engine, ["--teams-file", str(teams)], env, grm_args) as base:
        return asyncio.run(measure(base, light))


def ratio(r: dict[str, Any]) -> float:
    return statistics.median(r["loaded"]) / statistics.median(r["idle"])


def report(light: int, engines: list[str], out: dict[str, dict[str, Any]],
           extra: dict[str, str]) -> str:  # fmt: skip
    flags = "".join(
        f" --{k.removeprefix('RLMEC_REWARD_').lower().replace('_', '-')} {v}"
        for k, v in extra.items()
    )
    rows, lines = [], []
    for engine in engines:
        fair, fcfs = out[f"{engine}-fair"], out[f"{engine}-fcfs"]
        for name, r in ((f"{engine}, fair", fair), (f"{engine}, first come first served", fcfs)):
            rows.append(
                f"| {name} | {1000 * statistics.median(r['idle']):.0f} | "
                f"{1000 * statistics.median(r['loaded']):.0f} | {ratio(r):.1f}x | "
                f"{1000 * max(r['loaded']):.0f} | {r['heavy_per_s']:.1f} |"
            )
        keep = fair["heavy_per_s"] / fcfs["heavy_per_s"]
        verdict = "met" if ratio(fair) <= 2.0 and keep >= 0.9 else "NOT met"
        lines.append(
            f"- `light team p50 vs idle ({engine}): {ratio(fair):.1f}x` (first come first "
            f"served: {ratio(fcfs):.1f}x); heavy team's samples/s fair / first come first "
            f"served: {keep:.2f} (target: ≤ 2x and ≥ 0.90: {verdict})"
        )
    command = (f".venv/bin/python -m benchmarks.fairness.run --light {light} "
               f"--engines {','.join(engines)}{flags}")  # fmt: skip
    return f"""A light team (one wrong sample per request, one request at a time, {light} requests)
against a heavy team keeping its whole quota busy ({HEAVY_IN_FLIGHT} requests of {HEAVY_BATCH}
wrong and correct samples in flight), on one reward service with default settings (8 GRM calls
in flight, handed out by weighted fair queuing over the teams that wait: cost = samples) and one
GRM (`rlmec grm serve`, the tests' tiny model, 16-token rewrites), real Redis, separate
processes, no cache. Per engine, the GRM schedules the teams the reward service names fairly
(`--fair-tenants`, the default: vLLM's priority scheduler fed by start-time fair queuing; the hf
engine's stride scheduling), and, as the baseline in the same run, first come first served
(`--no-fair-tenants`). The answer-check pool has one lane per team in both. Each row: the light
team's p50 idle, then loaded, on its own stack.

- machine: {machine()}, no GPU; CPU flags: {cpu_flags()}
- date: {today()}
- command: `{command}`

| GRM engine, scheduling | idle p50 ms | loaded p50 ms | loaded / idle | loaded max ms \
| heavy samples/s |
| --- | ---: | ---: | ---: | ---: | ---: |
{chr(10).join(rows)}

{chr(10).join(lines)}
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--light", type=int, default=30, help="light-team requests per phase")
    parser.add_argument("--engines", default="vllm,hf", help="GRM engines, a row pair each")
    parser.add_argument("--grm-max-concurrency", type=int, default=None)
    parser.add_argument("--grm-batch-size", type=int, default=None)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    engines = args.engines.split(",")
    if bad := [e for e in engines if e not in ("vllm", "hf")]:
        parser.error(f"--engines {','.join(bad)}: choose from vllm, hf")
    extra = {}
    if args.grm_max_concurrency:
        extra["RLMEC_REWARD_GRM_MAX_CONCURRENCY"] = str(args.grm_max_concurrency)
    if args.grm_batch_size:
        extra["RLMEC_REWARD_GRM_BATCH_SIZE"] = str(args.grm_batch_size)
    out = {}
    for engine in engines:
        for fair in (True, False):
            key = f"{engine}-{'fair' if fair else 'fcfs'}"
            out[key] = run(args.light, engine, fair, extra)
            print(key, json.dumps({"ratio": ratio(out[key]), "heavy_per_s":
                                   out[key]["heavy_per_s"]}), flush=True)  # fmt: skip
    text = report(args.light, engines, out, extra)
    print(text)
    if not args.no_write:
        replace_section("fairness", text)


if __name__ == "__main__":
    main()
