"""The rollout actor (``rlmec rollout``): the policy's side of the online loop.

One loop, batch after batch: take the next problems (a seeded order, epoch after epoch), sample
``n`` solutions each with the policy prompt (method §2.3) on an in-process engine, attach each
solution's behaviour log-probs, and push the batch to the reward service's ``/v1/rollouts``
with the team's key and the policy version that produced it. Between batches it reads the
team's version record (:mod:`rlmec.shared.policy_version`) and, when the trainer published a
newer policy, loads it into the running engine (vLLM's in-place reload; no restart).

Behaviour log-probs are those of the exact tokens the trainer will train on: the solution
text re-encoded the platform's one way (text tokens, then EOS, see
:mod:`rlmec.shared.tokenization`), teacher-forced through the same engine and weights in one
prefill. The sampled token ids cannot serve directly: a stop string's tokens are cut from the
text, the EOS the trainer appends after a stop string or the length limit was never sampled,
and re-encoding text may split it differently. Characters the service refuses in any text
(C0 controls, lone surrogates) are replaced by U+FFFD first, so such a solution is still
scored rather than refused with its whole batch.

Nothing is pushed twice and nothing is lost across a crash: batch ``k`` has the id
``<run_id>-<k>``, which the queue deduplicates, and ``state.json`` (the next ``k``) moves only
after the service acknowledged the push. Backpressure (429 queue full, 503) is waited out,
never turned into a dropped batch.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rlmec.clients import AsyncClient
from rlmec.clients.errors import QueueFullError, ServiceUnavailableError
from rlmec.data.sample import sample_seed
from rlmec.data.synth import policy_solution
from rlmec.data.tasks import Problem
from rlmec.inference.engine import ReloadableEngine, Sampling, generate_in_context
from rlmec.shared.policy_version import PolicyVersion
from rlmec.shared.prompts import POLICY_STOP, policy_prompt
from rlmec.shared.schemas import RewardParams, Sample, replace_bad_chars
from rlmec.shared.tokenization import encode_output

log = logging.getLogger("rlmec.rollout")


@dataclass(frozen=True)
class RolloutConfig:
    team: str
    run_id: str = "rollout"
    n: int = 4  # solutions per problem
    problems_per_batch: int = 4
    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 512
    seed: int = 0
    max_batches: int | None = None  # None: until stopped
    policy_tokenizer: str | None = None
    backpressure_wait_s: float = 2.0  # between pushes refused as queue-full/unavailable
    # Send the reference solution (as a policy would write it) as each sample's rewrite: the
    # GRM then scores but does not rewrite (for a GRM that cannot yet rewrite this policy's
    # solutions into correct ones; the paper's teacher-made rewrites play this part offline).
    reference_rewrite: bool = False
    # §3.1 shaping the batches are scored with (edit_penalty: the floor on every token the
    # GRM's rewrite does not keep, BENCHMARKS.md ``learning``).
    params: RewardParams = field(default_factory=RewardParams)


@dataclass
class BatchReport:
    """One pushed batch (a line of ``metrics.jsonl``)."""

    batch: int
    batch_id: str
    policy_version: int
    samples: int
    generate_s: float
    logprobs_s: float
    push_s: float  # including waits on a full queue
    reload_s: float | None  # the weight refresh done before this batch, if any
    duplicate: bool
    time: float = field(default_factory=time.time)


class VersionWatcher:
    """The team's version record, read with a (sync) ``redis.Redis`` client in a thread."""

    def __init__(self, client: Any, team: str) -> None:
        self.client, self.team = client, team

    async def latest(self) -> PolicyVersion | None:
        from rlmec.shared.policy_version import read_version

        return await asyncio.to_thread(read_version, self.client, self.team)


class RolloutActor:
    def __init__(
        self,
        engine: ReloadableEngine,
        client: AsyncClient,
        problems: list[Problem],
        cfg: RolloutConfig,
        workdir: Path,
        versions: VersionWatcher | None = None,
    ) -> None:
        if not problems:
            raise ValueError("no problems to sample from; check --tasks/--problems")
        self.engine, self.client, self.cfg = engine, client, cfg
        self.problems, self.versions = problems, versions
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.state_path = workdir / "state.json"
        self.metrics_path = workdir / "metrics.jsonl"
        self.next_batch = self._load_state()
        self.version = 0
        self._orders: dict[int, list[int]] = {}

    # --- state -------------------------------------------------------------------------------

    def _load_state(self) -> int:
        if not self.state_path.is_file():
            return 0
        state = json.loads(self.state_path.read_text())
        if state.get("run_id") != self.cfg.run_id:
            raise ValueError(
                f"{self.state_path} belongs to run {state.get('run_id')!r}, not "
                f"{self.cfg.run_id!r}; use another --workdir or the same --run-id"
            )
        return int(state["next_batch"])

    def _save_state(self) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"run_id": self.cfg.run_id, "next_batch": self.next_batch}))
        os.replace(tmp, self.state_path)

    # --- the loop ----------------------------------------------------------------------------

    async def run(
        self,
        stop: asyncio.Event | None = None,
        on_batch: Callable[[BatchReport], None] | None = None,
    ) -> list[BatchReport]:
        """Push batches until ``max_batches`` (counted from 0, across restarts) or ``stop``."""
        stop = stop or asyncio.Event()
        reports = []
        while not stop.is_set():
            if self.cfg.max_batches is not None and self.next_batch >= self.cfg.max_batches:
                break
            reload_s = await self.follow_trainer()
            report = await self.one_batch(self.next_batch, stop, reload_s)
            if report is None:
                break
            self.next_batch += 1
            self._save_state()
            with self.metrics_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(asdict(report)) + "\n")
            reports.append(report)
            if on_batch is not None:
                on_batch(report)
        return reports

    async def follow_trainer(self) -> float | None:
        """Load the newest published policy if it is not the one running; seconds it took."""
        if self.versions is None:
            return None
        latest = await self.versions.latest()
        if latest is None or latest.version == self.version:
            return None
        path = latest.readable_path()  # shared memory first, then disk
        if path is None:  # pruned, or another machine's
            log.warning("policy version %d is not readable at %s; staying on version %d",
                        latest.version, latest.path, self.version)  # fmt: skip
            return None
        t0 = time.perf_counter()
        # A failure inside the reload leaves the weights unknown: it ends the actor, which
        # resumes on restart from a fresh engine (the same batch ids, deduplicated).
        await self.engine.reload_weights(path, revision=f"policy-v{latest.version}")
        self.version = latest.version
        took = time.perf_counter() - t0
        log.info("loaded policy version %d (step %d) in %.2f s from %s", latest.version,
                 latest.step, took, path)  # fmt: skip
        return took

    async def one_batch(
        self, index: int, stop: asyncio.Event, reload_s: float | None
    ) -> BatchReport | None:
        version = self.version
        t0 = time.perf_counter()
        samples, t_gen = await self.generate(index)
        t1 = time.perf_counter()
        batch_id = f"{self.cfg.run_id}-{index:08d}"
        result = None
        if samples:  # none when every solution overflowed the context (logged)
            result = await self.push(batch_id, samples, version, stop)
            if result is None:
                return None  # stopped while waiting on backpressure
        return BatchReport(
            batch=index, batch_id=batch_id, policy_version=version, samples=len(samples),
            generate_s=t_gen - t0, logprobs_s=t1 - t_gen, push_s=time.perf_counter() - t1,
            reload_s=reload_s, duplicate=bool(result and result.duplicate),
        )  # fmt: skip

    def problems_of(self, index: int) -> list[tuple[int, Problem]]:
        """Batch ``index``'s problems with their position in the endless seeded order."""
        size, total = self.cfg.problems_per_batch, len(self.problems)
        out = []
        for pos in range(index * size, (index + 1) * size):
            epoch, i = divmod(pos, total)
            if epoch not in self._orders:
                order = list(range(total))
                random.Random(f"{self.cfg.seed}:{epoch}").shuffle(order)
                self._orders = {epoch: order}  # only the current epoch is ever needed
            out.append((pos, self.problems[self._orders[epoch][i]]))
        return out

    async def generate(self, index: int) -> tuple[list[Sample], float]:
        """The batch's samples, and when generation (before log-probs) finished."""
        tokenizer = self.engine.tokenizer
        jobs = [(pos, p, j) for pos, p in self.problems_of(index) for j in range(self.cfg.n)]
        prompts = [policy_prompt(p.task_type, p.question) for _, p, _ in jobs]
        prompt_ids = [list(tokenizer(text)["input_ids"]) for text in prompts]
        seeds = tuple(sample_seed(self.cfg.seed, f"{p.id}@{pos}", j) for pos, p, j in jobs)
        gens = await generate_in_context(
            self.engine, prompt_ids, self.cfg.max_new_tokens, POLICY_STOP,
            Sampling(self.cfg.temperature, self.cfg.top_p, seeds),
            names=[p.id for _, p, _ in jobs],
        )  # fmt: skip
        t_gen = time.perf_counter()
        # Control characters the service refuses become U+FFFD before anything is measured:
        # the sample is still scored (and penalised), and its log-probs are of what is sent.
        texts, replaced = zip(*(replace_bad_chars(g.text) for g in gens), strict=True)
        outputs = [encode_output(tokenizer, text).token_ids for text in texts]
        # A solution that ran to the context limit no longer fits with the EOS re-encoding adds:
        # the trainer would cut it anyway, so it is left out (and said).
        limit = self.engine.info().max_model_len
        fits = [len(p) + len(o) < limit for p, o in zip(prompt_ids, outputs, strict=True)]
        if not all(fits):
            log.warning("batch %d: %d solution(s) fill the context (%d tokens); not pushed",
                        index, fits.count(False), limit)  # fmt: skip
        keep = [i for i, ok in enumerate(fits) if ok]
        logprobs = await self.engine.score(
            [prompt_ids[i] for i in keep], [outputs[i] for i in keep]
        )
        samples = []
        for i, lps in zip(keep, logprobs, strict=True):
            (pos, p, j), gen = jobs[i], gens[i]
            samples.append(Sample(
                id=f"{p.id}@{pos}#{j}", question=p.question,
                reference_solution=p.reference_solution, reference_answer=p.reference_answer,
                prediction=texts[i], task=p.task_type, prompt=prompts[i],
                rewrite=self._reference_rewrite(p),
                behaviour_logprobs=[min(0.0, x) for x in lps],
                metadata={"problem_id": p.id, "policy_version": self.version,
                          "finish_reason": gen.finish_reason, "replaced_chars": replaced[i]},
            ))  # fmt: skip
        return samples, t_gen

    def _reference_rewrite(self, problem: Problem) -> str | None:
        if not self.cfg.reference_rewrite:
            return None
        return policy_solution(problem.reference_solution) or problem.reference_solution

    async def push(
        self, batch_id: str, samples: list[Sample], version: int, stop: asyncio.Event
    ) -> Any:
        """Push until the service takes the batch; None if stopped first. The client already
        retries 429/503 with backoff; past its budget the actor keeps waiting (a full queue is
        the trainer's pace, not a failure)."""
        while True:
            try:
                return await self.client.push_rollouts(
                    samples, batch_id=batch_id, policy_tokenizer=self.cfg.policy_tokenizer,
                    policy_version=version, params=self.cfg.params,
                )  # fmt: skip
            except (QueueFullError, ServiceUnavailableError) as exc:
                wait = max(self.cfg.backpressure_wait_s, getattr(exc, "retry_after", None) or 0)
                log.info("batch %s: %s; retrying in %.1f s", batch_id, exc, wait)
                try:
                    await asyncio.wait_for(stop.wait(), timeout=wait)
                    return None
                except TimeoutError:
                    continue
