"""Fair share of the GRM: a light team's latency while another team saturates the service.

Two teams on one reward service (``rlmec reward serve``, default settings: 8 GRM calls in
flight, shared by weighted fair queuing over the teams that wait) and one GRM (``rlmec grm
serve --engine hf`` on the tests' tiny model), real Redis, separate processes. The light team
sends one wrong sample per request, one request at a time; its p50 latency is measured idle,
then while the heavy team keeps 16 requests of 64 samples in flight (its whole concurrency
quota). Every sample is unique (no cache hits); wrong samples make the GRM rewrite (16 new tokens).

    .venv/bin/python -m benchmarks.fairness.run [--light 30] [--no-write]
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

from benchmarks.get_reward.run import workload
from benchmarks.report import machine, replace_section, today
from benchmarks.stack import tiny_stack

KEYS = {"heavy": "bench-heavy-0123456789", "light": "bench-light-0123456789"}
HEAVY_IN_FLIGHT, HEAVY_BATCH = 16, 64


def body(samples: list[dict[str, str]]) -> dict[str, Any]:
    return {"samples": [{"question": s["prompt"], "reference_solution": s["label"],
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
        resp.raise_for_status()
    return out


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
            resp.raise_for_status()
            done += HEAVY_BATCH
            i += 1

    await asyncio.gather(*(lane(k) for k in range(HEAVY_IN_FLIGHT)))
    return done


async def measure(base: str, light: int) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base, timeout=600) as http:
        idle = await light_latencies(http, light, "idle")
        stop = asyncio.Event()
        heavy = asyncio.create_task(heavy_load(http, stop))
        await asyncio.sleep(5)  # the heavy team's backlog builds up first
        loaded = await light_latencies(http, light, "loaded")
        stop.set()
        heavy_samples = await heavy
    return {"idle": idle, "loaded": loaded, "heavy_samples": heavy_samples}


def run(light: int, extra_env: dict[str, str]) -> dict[str, Any]:
    from rlmec.services.reward.teams import hash_key

    teams = Path(tempfile.mkdtemp(prefix="rlmec-bench-teams-")) / "teams.json"
    teams.write_text(json.dumps([
        {"name": name, "key_sha256": [hash_key(key)]} for name, key in KEYS.items()
    ]))  # fmt: skip
    env = {"RLMEC_REWARD_GRM_MAX_NEW_TOKENS": "16", "RLMEC_REWARD_CACHE_ENABLED": "false",
           **extra_env}  # fmt: skip
    with tiny_stack(["--teams-file", str(teams)], env) as base:
        return asyncio.run(measure(base, light))


def report(light: int, out: dict[str, Any], extra: dict[str, str]) -> str:
    idle, loaded = statistics.median(out["idle"]), statistics.median(out["loaded"])
    ratio = loaded / idle
    verdict = "met" if ratio <= 2.0 else "NOT met"
    flags = "".join(
        f" --{k.removeprefix('RLMEC_REWARD_').lower().replace('_', '-')} {v}"
        for k, v in extra.items()
    )
    return f"""A light team (one wrong sample per request, one request at a time, {light} requests)
against a heavy team keeping its whole quota busy ({HEAVY_IN_FLIGHT} requests of {HEAVY_BATCH}
wrong and correct samples in flight), on one reward service with default settings (8 GRM calls
in flight, handed out by weighted fair queuing over the teams that wait: cost = samples) and one
GRM (`rlmec grm serve --engine hf`, the tests' tiny model, 16-token rewrites), real Redis,
separate processes, no cache. Baseline: the light team's own latency with the service idle,
same run.

- machine: {machine()}, no GPU
- date: {today()}
- command: `.venv/bin/python -m benchmarks.fairness.run --light {light}{flags}`

| figure | idle ms | loaded ms | loaded / idle |
| --- | ---: | ---: | ---: |
| light team p50 | {1000 * idle:.0f} | {1000 * loaded:.0f} | {ratio:.1f}x |
| light team max | {1000 * max(out["idle"]):.0f} | {1000 * max(out["loaded"]):.0f} | - |

- heavy team meanwhile: {out["heavy_samples"]} samples scored
- target: light p50 within 2x of idle: {verdict}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--light", type=int, default=30)
    parser.add_argument("--grm-max-concurrency", type=int, default=None)
    parser.add_argument("--grm-batch-size", type=int, default=None)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    extra = {}
    if args.grm_max_concurrency:
        extra["RLMEC_REWARD_GRM_MAX_CONCURRENCY"] = str(args.grm_max_concurrency)
    if args.grm_batch_size:
        extra["RLMEC_REWARD_GRM_BATCH_SIZE"] = str(args.grm_batch_size)
    out = run(args.light, extra)
    text = report(args.light, out, extra)
    print(text)
    if not args.no_write:
        replace_section("fairness", text)


if __name__ == "__main__":
    main()
