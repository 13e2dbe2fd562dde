"""Cost per scored sample: the platform's whole locate → rewrite → score path against bare
vLLM doing the same generations and prefills (issue 32, item 5).

Wrong ``arith`` solutions (the test problems' references with one step's result slipped and
the later steps computed on from it, as the start policy's errors go), scored by the arith GRM
(the shipped adapter merged into SmolLM2-135M-Instruct), vllm engine, float32, the same engine
arguments on both sides (prefix caching on, vLLM's default; the GRM service's default n-gram
speculation):

- **service**: ``rlmec grm serve`` + ``rlmec reward serve`` + Redis, separate processes;
  ``POST /v1/token-rewards`` in batches of 64, 8 in flight (as ``rlmec data signals``).
  The reward service checks answers, asks the GRM to locate and rewrite each wrong solution
  and to score every prediction (§3.1), checks the rewrites, tokenizes them and assembles the
  token rewards.
- **bare vLLM**: one in-process ``AsyncLLM`` and, for every sample at once, the same three
  engine requests with the same token ids: the locate generation, the rewrite generation from
  the located step, the scoring prefill (``prompt_logprobs``). Nothing else.

Rounds alternate the two sides, each on a fresh engine. Adds its line to ``## grm``:
``.venv/bin/python -m benchmarks.grm.path [--samples 128] [--rounds 2]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.report import set_line, stamp

PREFIX = "Cost per scored sample"
BATCH, IN_FLIGHT, MAX_NEW = 64, 8, 64
LOCATE_MAX_NEW = 32  # RewriteInput's default, which the reward service sends
GRM_ARGS = ("--dtype", "float32", "--max-model-len", "2048")


_STEP = re.compile(r"(-?\d+) ([-+*]) (-?\d+) = (-?\d+)")


def slipped(reference: str, i: int) -> str | None:
    """The reference chain with one step's result off by a few (step ``i`` mod the steps),
    the later steps computed on from the wrong value, as the start policy's slips go."""
    *lines, answer = reference.split("\n")
    steps = [_STEP.fullmatch(line) for line in lines]
    if not steps or any(m is None for m in steps) or not answer.startswith("The answer is:"):
        return None
    k, out, value = i % len(steps), [], 0
    for j, m in enumerate(steps):
        assert m is not None
        a, op, b = int(m[1]) if j == 0 else value, m[2], int(m[3])
        value = {"+": a + b, "-": a - b, "*": a * b}[op] + (1 + i % 9 if j == k else 0)
        out.append(f"{a} {op} {b} = {value}")
    return "\n".join([*out, f"The answer is: {value}"])


def wrong_samples(n: int, skip: int = 0) -> list[dict[str, str]]:
    from rlmec.data.tasks import load_task

    out = []
    for i, problem in enumerate(load_task("arith")):
        prediction = slipped(problem.reference_solution, i)
        if prediction is not None:
            out.append({"question": problem.question, "reference_solution":
                        problem.reference_solution, "reference_answer": problem.reference_answer,
                        "prediction": prediction})  # fmt: skip
        if len(out) == skip + n:
            break
    if len(out) < skip + n:  # a timing over nothing would be no figure at all
        raise SystemExit(f"only {len(out)} arith problems could be slipped; need {skip + n}")
    return out[skip:]


# --- the service ---------------------------------------------------------------------------


async def post_all(base: str, samples: list[dict[str, str]]) -> dict[str, Any]:
    gate = asyncio.Semaphore(IN_FLIGHT)
    chunks = [samples[i : i + BATCH] for i in range(0, len(samples), BATCH)]

    async def post(http: httpx.AsyncClient, chunk: list[dict[str, str]]) -> list[dict[str, Any]]:
        async with gate:
            resp = await http.post("/v1/token-rewards", json={"samples": chunk})
        resp.raise_for_status()
        return list(resp.json()["results"])

    async with httpx.AsyncClient(base_url=base, timeout=3600) as http:
        start = time.perf_counter()
        results = [r for part in await asyncio.gather(*(post(http, c) for c in chunks))
                   for r in part]  # fmt: skip
        wall = time.perf_counter() - start
    return {"wall_s": wall, "rewrites": [r.get("rewrite") for r in results],
            "scored": sum(r["status"] == "scored" for r in results)}  # fmt: skip


def service_round(model: Path, warm: list[dict[str, str]], samples: list[dict[str, str]]
                  ) -> dict[str, Any]:  # fmt: skip
    from benchmarks.stack import grm_stack

    env = {"RLMEC_REWARD_GRM_MAX_NEW_TOKENS": str(MAX_NEW), "RLMEC_REWARD_CACHE_ENABLED": "false",
           "RLMEC_REWARD_GRM_TIMEOUT_S": "3600"}  # fmt: skip
    with grm_stack(model, "vllm", ["--allow-anonymous"], env, GRM_ARGS) as base:
        asyncio.run(post_all(base, warm))
        return asyncio.run(post_all(base, samples))


# --- bare vLLM -----------------------------------------------------------------------------


async def bare_round(model: Path, warm: list[dict[str, str]], samples: list[dict[str, str]]
                     ) -> dict[str, Any]:  # fmt: skip
    from vllm import SamplingParams

    from rlmec.inference import create_engine
    from rlmec.services.grm.settings import GrmSettings
    from rlmec.shared import prompts
    from rlmec.shared.tokenization import encode_output

    # GrmSettings as `rlmec grm serve --dtype float32 --max-model-len 2048` makes them, so the
    # engine arguments are the service's; only the raw AsyncLLM is used below.
    settings = GrmSettings(model=str(model), engine="vllm", dtype="float32", max_model_len=2048)
    engine = create_engine(settings)
    await engine.start()
    llm, tok = engine._llm, engine.tokenizer  # type: ignore[attr-defined]
    ids = 0

    def gen(max_new: int) -> Any:
        stop = list(prompts.STOP_STRINGS)
        return SamplingParams(max_tokens=max_new, temperature=0.0, stop=stop,
                              skip_special_tokens=True)  # fmt: skip

    async def run(prompt: list[int], params: Any) -> Any:
        nonlocal ids
        ids += 1
        final = None
        async for out in llm.generate({"prompt_token_ids": prompt}, params, f"bare-{ids}"):
            final = out
        return final

    async def rewrite(s: dict[str, str]) -> str | None:
        q, ref, pred = s["question"], s["reference_solution"], s["prediction"]
        located = await run(list(tok(prompts.locate_prompt(q, ref, pred))["input_ids"]),
                            gen(LOCATE_MAX_NEW))  # fmt: skip
        loc = prompts.parse_located_step(located.outputs[0].text, len(prompts.split_steps(pred)))
        if loc.status == "out_of_range":
            return None
        step = loc.step or 0
        text = (await run(list(tok(prompts.rewrite_prompt(q, ref, pred, step))["input_ids"]),
                          gen(MAX_NEW))).outputs[0].text  # fmt: skip
        return prompts.join_rewrite(prompts.rewrite_prefix(pred, step), text.rstrip())

    async def score(s: dict[str, str]) -> None:
        prompt = prompts.scoring_prompt(s["question"], s["reference_solution"], s["prediction"])
        output = encode_output(tok, s["prediction"], add_eos=True).token_ids
        await run(list(tok(prompt)["input_ids"]) + list(output),
                  SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0))  # fmt: skip

    async def both(s: dict[str, str]) -> str | None:
        return (await asyncio.gather(rewrite(s), score(s)))[0]

    try:
        await asyncio.gather(*(both(s) for s in warm))
        start = time.perf_counter()
        rewrites = await asyncio.gather(*(both(s) for s in samples))
        wall = time.perf_counter() - start
    finally:
        await engine.close()
    return {"wall_s": wall, "rewrites": list(rewrites)}


# --- report --------------------------------------------------------------------------------


def line(n: int, rounds: list[dict[str, Any]], command: str) -> str:
    service = statistics.median(r["service"]["wall_s"] for r in rounds)
    bare = statistics.median(r["bare"]["wall_s"] for r in rounds)
    last = rounds[-1]
    same = sum(a == b for a, b in zip(last["service"]["rewrites"], last["bare"]["rewrites"],
                                      strict=True))  # fmt: skip
    ratio = service / bare
    verdict = "met" if ratio <= 1.05 else "NOT met"
    return (
        f"{PREFIX} ({n} wrong `arith` solutions, the arith GRM, vllm, float32, "
        f"{len(rounds)} rounds alternating, median wall; {stamp(command)}): the service's "
        "locate → rewrite → score path "
        f"{1000 * service / n:.0f} ms per sample ({service:.1f} s), bare vLLM doing the same "
        f"generations and prefills {1000 * bare / n:.0f} ms ({bare:.1f} s); the same rewrite "
        f"on {same} of {n}; {last['service']['scored']} scored by the service. "
        f"`service / bare vLLM: {ratio:.2f}` (target ≤ 1.05: {verdict})."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--samples", type=int, default=128, help="wrong solutions scored")
    parser.add_argument("--rounds", type=int, default=2, help="service + bare pairs")
    parser.add_argument("--no-write", action="store_true", help="print, leave BENCHMARKS.md")
    args = parser.parse_args(argv)
    from rlmec.services.grm.model_files import arith_grm

    model = arith_grm()
    if model is None:
        parser.error("no arith GRM: run `rlmec grm convert-smollm2` first (the shipped adapter "
                     "is merged into it)")  # fmt: skip
    warm, samples = wrong_samples(8), wrong_samples(args.samples, skip=8)
    rounds = []
    for i in range(args.rounds):
        service = service_round(model, warm, samples)
        bare = asyncio.run(bare_round(model, warm, samples))
        rounds.append({"service": service, "bare": bare})
        print(json.dumps({"round": i, "service_s": service["wall_s"], "bare_s": bare["wall_s"]}),
              flush=True)  # fmt: skip
    command = (f".venv/bin/python -m benchmarks.grm.path --samples {args.samples} "
               f"--rounds {args.rounds}")  # fmt: skip
    text = line(len(samples), rounds, command)
    print(text)
    if not args.no_write:
        set_line("grm", PREFIX, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
