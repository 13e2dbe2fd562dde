"""``/get_reward`` under OpenRLHF's traffic: one sample per request, 512 and 64 in flight.

OpenRLHF (current protocol) posts every sample of a rollout step as its own request, all at
once, with its own client (a new aiohttp session per try, 180 s timeout, 5 tries 1 s apart,
errors swallowed into a lost reward). This benchmark posts exactly that way against the reward
service as an operator runs it for OpenRLHF (``rlmec reward serve --allow-anonymous``, default
quota: 1024 samples and 1024 requests in flight, the rest wait in the admission queue; and, side
by side, the quota of 16 requests that was the default before issue 32), with a fast GRM (``rlmec
grm serve --engine hf`` on the tests' tiny 2-layer model, so the service's own overhead shows),
real Redis, every process separate. Samples are GSM8K test problems, half correct, half wrong
(the GRM rewrites those, 16 new tokens), each unique (no cache hits).

Baseline, same run, same samples' shape: ``/v1/token-rewards`` in batches of 64, 8 in flight.
Per-sample overhead of the per-request protocol = its wall time per sample / the batched one's.

    .venv/bin/python -m benchmarks.get_reward.run [--samples 512] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

import httpx

from benchmarks.report import cpu_flags, machine, replace_section, today
from benchmarks.stack import tiny_stack
from rlmec.data.tasks import raw_rows
from tests.frameworks import openrlhf_post

PROMPT = "<|user|>{question}\n<|assistant|>"
BATCH, BATCH_CLIENTS = 64, 8


def workload(n: int, tag: str) -> list[dict[str, str]]:
    """``n`` unique GSM8K samples: prompt, response, label; odd ones answer wrong."""
    rows = raw_rows("gsm8k_test")
    out = []
    for i in range(n):
        row = rows[i % len(rows)]
        solution, _, answer = row["answer"].rpartition("####")
        answer = answer.strip().replace(",", "")
        given = answer if i % 2 == 0 else str(int(answer) + 1)
        question = f"{row['question']} ({tag} {i})"
        out.append({"prompt": PROMPT.format(question=question), "question": question,
                    "response": f"{solution.strip()}\nThe answer is: {given}",
                    "label": answer})  # fmt: skip
    return out


async def per_sample(base: str, samples: list[dict[str, str]], in_flight: int) -> dict[str, Any]:
    gate = asyncio.Semaphore(in_flight)
    latencies: list[float] = []

    async def one(s: dict[str, str]) -> float | None:
        body = {"query": [s["prompt"] + s["response"]], "prompts": [s["prompt"]],
                "labels": [s["label"]]}  # fmt: skip
        async with gate:
            t0 = time.perf_counter()
            answer = await openrlhf_post(base + "/get_reward", body)
            latencies.append(time.perf_counter() - t0)
        return None if answer is None else float(answer["rewards"][0])

    start = time.perf_counter()
    rewards = await asyncio.gather(*(one(s) for s in samples))
    wall = time.perf_counter() - start
    expected = [1.0 if i % 2 == 0 else 0.0 for i in range(len(samples))]
    return {
        "in_flight": in_flight, "samples": len(samples), "wall_s": wall,
        "lost": sum(r is None for r in rewards),
        "wrong": sum(r is not None and r != e for r, e in zip(rewards, expected, strict=True)),
        "p50_s": statistics.median(latencies), "p99_s": _quantile(latencies, 0.99),
    }  # fmt: skip


# What the tests' tiny, untrained GRM does with wrong samples: a step that is not in the
# prediction, or a rewrite that fails the answer check or is not even text. The GRM did the
# work either way.
GRM_VERDICTS = ("rewrite_incorrect", "grm_out_of_range")


def graded(result: dict[str, Any]) -> bool:
    """Whether the GRM did the sample's work (scored, or one of :data:`GRM_VERDICTS`, or a
    rewrite it wrote that is unusable); a refusal of the input or a GRM failure did none, and
    would make any timing look good."""
    reason = result.get("reason")
    unusable = reason == "grm_error" and result.get("rewrite") is not None
    return result["status"] == "scored" or reason in GRM_VERDICTS or unusable


async def batched(base: str, samples: list[dict[str, str]]) -> dict[str, Any]:
    gate = asyncio.Semaphore(BATCH_CLIENTS)
    chunks = [samples[i : i + BATCH] for i in range(0, len(samples), BATCH)]

    async def post(http: httpx.AsyncClient, chunk: list[dict[str, str]]) -> int:
        # The plain question: the service refuses chat markup in it (OpenRLHF's /get_reward
        # path strips the template itself).
        body = {"samples": [{"question": s["question"], "reference_solution": s["label"],
                             "reference_answer": s["label"], "prediction": s["response"]}
                            for s in chunk]}  # fmt: skip
        async with gate:
            resp = await http.post("/v1/token-rewards", json=body)
        resp.raise_for_status()
        results = resp.json()["results"]
        unscored = [r for r in results if not graded(r)]
        if unscored:  # a baseline that did no work would make any ratio look good
            raise RuntimeError(f"batched baseline: {len(unscored)} unscored, e.g. {unscored[0]}")
        return len(results)

    async with httpx.AsyncClient(base_url=base, timeout=600) as http:
        start = time.perf_counter()
        done = sum(await asyncio.gather(*(post(http, c) for c in chunks)))
        wall = time.perf_counter() - start
    return {"samples": done, "wall_s": wall}


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(samples: int, levels: list[int], concurrency: list[int], rounds: int) -> dict[int, Any]:
    """Per team quota of requests in flight (samples: the default), one stack: ``rounds``
    times the batched baseline and then each level of per-sample requests, alternating, so
    that other load on the machine falls on both alike; every sample unique across rounds (no
    cache hits)."""
    out: dict[int, Any] = {}
    for quota in concurrency:
        env = {"RLMEC_REWARD_GRM_MAX_NEW_TOKENS": "16",
               "RLMEC_REWARD_ANONYMOUS_MAX_CONCURRENCY": str(quota)}  # fmt: skip
        part: dict[str, list[Any]] = {"batched": [], **{f"get_reward_{n}": [] for n in levels}}
        with tiny_stack(["--allow-anonymous"], env) as base:
            for r in range(rounds):
                part["batched"].append(asyncio.run(batched(base, workload(samples, f"b{r}"))))
                for in_flight in levels:
                    n = max(samples, 2 * in_flight)
                    part[f"get_reward_{in_flight}"].append(
                        asyncio.run(per_sample(base, workload(n, f"p{in_flight}.{r}"), in_flight))
                    )
                print(json.dumps({quota: {k: v[-1] for k, v in part.items()}}), flush=True)
        out[quota] = part
    return out


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median wall time (its own p50/p99 and counts with it)."""
    return sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]


def report(samples: int, levels: list[int], runs: dict[int, Any], rounds: int) -> str:
    rows, ratios = [], {}
    for quota, per_round in runs.items():
        out = {k: _median_run(v) for k, v in per_round.items()}
        base = out["batched"]["wall_s"] / out["batched"]["samples"]
        n = out["batched"]["samples"]
        rows.append(f"| {quota} | batched: {BATCH_CLIENTS} x {BATCH} | {n} | - | - "
                    f"| {1 / base:.1f} | {1000 * base:.1f} ms | 1.00x | - | - |")  # fmt: skip
        for in_flight in levels:
            r = out[f"get_reward_{in_flight}"]
            per = r["wall_s"] / r["samples"]
            ratios[quota, in_flight] = statistics.median(
                (p["wall_s"] / p["samples"]) / (b["wall_s"] / b["samples"])
                for p, b in zip(per_round[f"get_reward_{in_flight}"], per_round["batched"],
                                strict=True)
            )  # fmt: skip
            lost = sum(p["lost"] for p in per_round[f"get_reward_{in_flight}"])
            wrong = sum(p["wrong"] for p in per_round[f"get_reward_{in_flight}"])
            rows.append(
                f"| {quota} | {in_flight} | {r['samples']} | {1000 * r['p50_s']:.0f} ms | "
                f"{1000 * r['p99_s']:.0f} ms | {r['samples'] / r['wall_s']:.1f} | "
                f"{1000 * per:.1f} ms | {ratios[quota, in_flight]:.2f}x | lost: {lost} | {wrong} |"
            )
    default, level = next(iter(runs)), levels[0]
    ratio = ratios[default, level]
    verdict = "met" if ratio <= 1.10 else "NOT met"
    others = "; ".join(
        f"{n} in flight at a quota of {q} requests: {ratios[q, n]:.2f}x"
        for q in runs for n in levels if (q, n) != (default, level)
    )  # fmt: skip
    command = (
        ".venv/bin/python -m benchmarks.get_reward.run "
        f"--samples {samples} --in-flight {','.join(map(str, levels))} "
        f"--team-concurrency {','.join(map(str, runs))} --rounds {rounds}"
    )
    return f"""`POST /get_reward` posted exactly as OpenRLHF's current client posts it (one sample
per request, all of a step at once, a new aiohttp session per try, 5 tries 1 s apart), against
`rlmec reward serve --allow-anonymous` (the team's quota of requests in flight as in the first
column, its samples in flight at the default of 1024, the rest wait in the admission queue, up
to 120 s), real Redis, and a fast GRM (`rlmec
grm serve --engine hf` on the tests' tiny 2-layer model, 16-token rewrites), each in its own
process. GSM8K test problems, half correct, half wrong, all unique (no cache hits). Baseline,
same stack: `/v1/token-rewards` in batches of {BATCH}, {BATCH_CLIENTS} in flight, {samples}
samples. {rounds} rounds per stack, baseline and per-sample alternating; each row is the round
of median wall time, and "vs batched" the median over rounds of the ratio within a round; lost
and wrong are summed over rounds.

- machine: {machine()}, no GPU; CPU flags: {cpu_flags()}
- date: {today()}
- command: `{command}`

| team quota | in flight | samples | p50 | p99 | samples/s | wall per sample | vs batched \
| lost | wrong reward |
| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |
{chr(10).join(rows)}

per-sample vs batched: {ratio:.2f}x ({level} in flight: the step's samples all at once, as
OpenRLHF posts them; the default quota; target ≤ 1.10x: {verdict}); at other levels and quotas:
{others}

The reward service coalesces concurrent small requests into GRM batches (`coalesce_window_ms`,
default 5, flushed at `grm_batch_size`; issue 32). Before it, 2026-11-29, same workload:
1.58x at 64 in flight, 1.59x at 512 (each request its own GRM call). A team's quota counts its
samples in flight as well as its requests (`max_samples_in_flight`, default 1024; issue 32), so
one-sample requests fill GRM batches as batched clients do. Before it, 2026-12-04 12:36 UTC,
64 in flight: 1.88x at the then-default quota of 16 requests, 1.14x at 64.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--in-flight", default="512,64",
                        help="comma-separated levels (the first is the headline: the default "
                        "--samples all at once, as OpenRLHF posts a step)")  # fmt: skip
    parser.add_argument("--team-concurrency", default="1024,16",
                        help="the team's quotas of requests in flight, a stack each (the "
                        "service's default first: the headline; 16 was the default before "
                        "samples in flight were counted)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3, help="alternations per stack")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    levels = [int(x) for x in args.in_flight.split(",")]
    quotas = [int(x) for x in args.team_concurrency.split(",")]
    out = run(args.samples, levels, quotas, args.rounds)
    text = report(args.samples, levels, out, args.rounds)
    print(text)
    if not args.no_write:
        replace_section("get_reward", text)


if __name__ == "__main__":
    main()
