"""End-to-end samples/s of the rollout queue next to the server's raw XADD rate (issue 5).

One real Redis-compatible server on loopback (the one ``LocalRedis`` picks), then:

1. ``redis-benchmark`` (or ``valkey-benchmark``) XADD rate on that server: the ceiling.
2. A producer thread pushes ``--batches`` batches of ``--batch-size`` samples with
   :class:`RolloutQueue`; one reward worker subprocess (``--scorer instant``) scores them; a
   :class:`ScoredBatchReader` in this process pulls and acknowledges them. samples/s = samples
   the reader acknowledged / (last ack - first push). Everything shares the machine's cores.

Writes the ``## queue`` section of BENCHMARKS.md:
``.venv/bin/python -m benchmarks.queue.run [--batches 400 --batch-size 64]``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import redis

from benchmarks.report import machine, replace_section, today
from rlmec.loop.redis_server import LocalRedis
from rlmec.shared.queue import QueueLimits, RolloutQueue, ScoredBatchReader, keys_for
from rlmec.shared.schemas import Sample

ROOT = Path(__file__).resolve().parents[2]
TEAM = "bench"
TARGET = 5000.0


def bench_binary() -> str | None:
    return shutil.which("redis-benchmark") or shutil.which("valkey-benchmark")


def raw_xadd(binary: str, port: int, n: int) -> tuple[float, str]:
    """XADD requests/s from 50 clients, no pipelining (redis-benchmark's defaults)."""
    cmd = [binary, "-h", "127.0.0.1", "-p", str(port), "-n", str(n), "-c", "50", "-q",
           "XADD", "rlmec:bench-raw", "*", "field", "x" * 300]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300).stdout
    found = re.findall(r"([\d.]+) requests per second", out.replace("\r", "\n"))
    if not found:
        raise RuntimeError(f"could not parse {binary} output: {out[-500:]!r}")
    shown = [Path(binary).name, *cmd[1:-1], "<300 bytes>"]
    return float(found[-1]), " ".join(shown)


def make_samples(batch: int, size: int) -> list[Sample]:
    return [
        Sample(
            id=f"b{batch}-s{i}",
            question=f"Natalia sold clips to {i} friends in April and half as many in May. "
            "How many clips did she sell altogether?",
            reference_solution=f"In May she sold {i}/2 clips.\nAltogether {i} + {i}/2.\n#### {i}",
            prediction=f"She sold {i}/2 in May.\nSo {i} + {i}/2 in total.\nThe answer is: {i}",
        )
        for i in range(size)
    ]


def start_worker(url: str, concurrency: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "rlmec.services.reward.worker", "--redis-url", url,
           "--scorer", "instant", "--team", TEAM, "--batches-per-read", "8", "--block-ms", "100",
           "--concurrency", str(concurrency)]  # fmt: skip
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for_group(client: redis.Redis, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if client.xinfo_groups(keys_for(TEAM).rollouts):
                return
        except redis.ResponseError:
            pass
        time.sleep(0.05)
    raise RuntimeError("the worker did not create its consumer group in 60 s")


def end_to_end(url: str, batches: int, size: int, concurrency: int) -> dict[str, float]:
    client = redis.Redis.from_url(url)
    total = batches * size
    queue = RolloutQueue(client, limits=QueueLimits(total, total))
    reader = ScoredBatchReader(client, TEAM, claim_idle_ms=60_000)
    payloads = [make_samples(b, size) for b in range(batches)]  # built before the clock starts
    worker = start_worker(url, concurrency)
    try:
        wait_for_group(client)
        producer_client = redis.Redis.from_url(url)
        producer = RolloutQueue(producer_client, limits=QueueLimits(total, total))

        def produce() -> None:
            for b, samples in enumerate(payloads):
                producer.push(TEAM, samples, batch_id=f"b{b}")

        started = time.perf_counter()
        thread = threading.Thread(target=produce)
        thread.start()
        seen = 0
        deadline = time.monotonic() + 600
        while seen < total and time.monotonic() < deadline:
            got = reader.pull(max_batches=16, block_ms=200)
            seen += sum(len(d.batch.results) for d in got)
            reader.ack(got)
        elapsed = time.perf_counter() - started
        thread.join()
        producer_client.close()
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    if seen != total:
        raise RuntimeError(f"the reader saw {seen} of {total} samples")
    depth = queue.depth(TEAM)
    client.close()
    left = float(depth.queued_samples + depth.scored_samples)
    return {"samples": float(seen), "seconds": elapsed, "rate": seen / elapsed, "left": left}


def report(args: argparse.Namespace, server: str, e2e: dict[str, float], raw: float,
           raw_cmd: str, bench_version: str) -> str:  # fmt: skip
    ratio = e2e["rate"] / raw if raw else float("nan")
    command = (
        f".venv/bin/python -m benchmarks.queue.run --batches {args.batches} "
        f"--batch-size {args.batch_size} --concurrency {args.concurrency}"
    )
    pipeline = (
        f"push ({args.batches} batches x {args.batch_size} samples, 1 producer thread) -> "
        f"1 worker process ({args.concurrency} loop(s), instant scorer) -> reader pull + ack"
    )
    rows = [
        ("end-to-end: " + pipeline,
         f"**{e2e['rate']:,.0f} samples/s** ({e2e['samples']:,.0f} samples in "
         f"{e2e['seconds']:.2f} s; {e2e['rate'] / args.batch_size:,.0f} batches/s)"),
        (f"raw XADD: `{raw_cmd}` ({bench_version}), 50 clients, no pipelining",
         f"{raw:,.0f} XADD/s"),
        ("ratio: end-to-end samples/s / raw XADD/s", f"{ratio:.3f}"),
        ("ratio: end-to-end batches/s / raw XADD/s", f"{ratio / args.batch_size:.4f}"),
        (f"target >= {TARGET:,.0f} samples/s", "met" if e2e["rate"] >= TARGET else "NOT met"),
    ]  # fmt: skip
    table = "\n".join(f"| {a} | {b} |" for a, b in rows)
    return f"""Machine: {machine()}. Date: {today()}. Server: {server} on loopback
(`rlmec.loop.redis_server.LocalRedis`, AOF off); all processes share the same cores.

Command: `{command}`

| measure | value |
|---|---|
{table}

One XADD carries a whole batch, so samples/s can exceed XADD/s. Each batch costs about six
Redis round trips (push; worker read, begin, complete; reader pull, ack) and a JSON
encode/decode of the batch at each hop; samples left in the queue after the run:
{e2e["left"]:.0f}.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.queue.run")
    parser.add_argument("--batches", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=1, help="worker loops")
    parser.add_argument("--xadd-requests", type=int, default=200_000)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    binary = bench_binary()
    with LocalRedis() as server:
        info = redis.Redis.from_url(server.url).info("server")
        version = info.get("valkey_version") or info["redis_version"]
        server_name = f"{Path(server.binary).name} {version}"
        e2e = end_to_end(server.url, args.batches, args.batch_size, args.concurrency)
        raw, raw_cmd = raw_xadd(binary, server.port, args.xadd_requests) if binary else (0.0, "")
    bench_version = "none found"
    if binary:
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
        bench_version = done.stdout.strip()
    body = report(args, server_name, e2e, raw, raw_cmd, bench_version)
    print(body)
    if not args.no_write:
        replace_section("queue", body)
    return 0 if e2e["rate"] >= TARGET else 1


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
