"""The RLMEC scoring pipeline (docs/method.md §3, §4, §6), without FastAPI.

Per batch: cache lookup; answer check of every miss (§4); one batched ``/v1/rewrite`` for the
wrong predictions without a given rewrite, concurrently with one batched ``/v1/score`` (mode
``rlmec``) for every prediction; a check that each rewrite reaches the reference; one batched
``/v1/tokenize`` (no forward pass) for the accepted rewrites' token ids; then rewards (§3.1),
imitation weights (§3.3), spans and the policy projection (§6). Samples that cannot be scored
come back ``unscored`` with a reason. The API and the queue workers both call :meth:`score`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from redis.asyncio import Redis

from rlmec.services.reward import assemble
from rlmec.services.reward.admission import FairSlots, current_team
from rlmec.services.reward.assemble import Item
from rlmec.services.reward.cache import RewardCache, cache_key
from rlmec.services.reward.grm_backend import GrmBackend, GrmFailure, current_grm_model
from rlmec.services.reward.markup import markup_message
from rlmec.services.reward.policy_tokenizers import PolicyTokenizer, TokenizerRegistry
from rlmec.services.reward.redis_guard import redis_guard
from rlmec.services.reward.settings import RewardSettings
from rlmec.services.reward.usage import add_usage
from rlmec.shared.checking import AnswerChecker, CheckFailure, CheckInput, Judgement
from rlmec.shared.concurrency import gather_or_cancel
from rlmec.shared.equations import false_equation
from rlmec.shared.errors import ServiceUnavailableError
from rlmec.shared.grm_schemas import GrmSampleInput, RewriteInput, RewriteResult
from rlmec.shared.schemas import GrmInfo, RewardParams, Sample, ScoredSample, check_text

# Deterministic outcomes are cached; a GRM error or an answer check stopped on a loaded
# machine may not repeat, so they are not.
CACHEABLE_REASONS = {
    None,
    "rewrite_incorrect",
    "grm_out_of_range",
    "no_reference_answer",
    "grm_input_too_long",
    "rewrite_false_equation",
}


@dataclass
class _Stages:
    timings: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, started: float) -> None:
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - started


class RewardPipeline:
    def __init__(
        self,
        grm: GrmBackend,
        cache: RewardCache,
        tokenizers: TokenizerRegistry,
        checker: AnswerChecker,
        *,
        redis: Redis,
        prefix: str = "rlmec:reward",
        max_new_tokens: int = 512,
        grm_info_ttl_s: float = 30.0,
        private_cache_teams: frozenset[str] = frozenset(),
        team_adapters: dict[str, str] | None = None,
    ) -> None:
        self.grm = grm
        self.private_cache_teams = private_cache_teams
        self.cache = cache
        self.tokenizers = tokenizers
        self.checker = checker
        self.redis = redis
        self.prefix = prefix
        self.max_new_tokens = max_new_tokens
        self.grm_info_ttl_s = grm_info_ttl_s
        self.team_adapters = dict(team_adapters or {})
        self._grm_info: dict[str, GrmInfo] = {}  # model id (base or adapter) -> its identity
        self._base_id = ""
        self._grm_info_at = 0.0
        self._refresh: asyncio.Task[None] | None = None  # the one model-card fetch in flight

    async def grm_info(self, adapter: str | None = None) -> GrmInfo:
        """Model id and revision of the GRM, or of one of its adapters (the cache key needs
        them, so no team gets a reward another adapter made). Refetched in the background
        after ``grm_info_ttl_s`` while the last known ones keep serving, so no request waits
        for a refresh and no lock is held across a GRM call; only the very first request
        waits for the first answer. While the GRM is down the last known ones keep serving
        cache hits."""
        age = time.monotonic() - self._grm_info_at
        stale = not self._grm_info or age >= self.grm_info_ttl_s
        if stale and (self._refresh is None or self._refresh.done()):
            self._refresh = asyncio.create_task(self._refresh_info())
        if not self._grm_info and self._refresh is not None:
            await asyncio.shield(self._refresh)  # a first fetch that failed raises here
        info = self._grm_info.get(adapter or self._base_id)
        if info is None:
            raise ServiceUnavailableError(
                f"the GRM does not serve adapter {adapter!r} (it serves "
                f"{sorted(self._grm_info)}); the operator must load it (rlmec grm serve "
                "--adapter) or fix the team's grm_adapter",
                code="grm_adapter_missing",
            )
        return info

    async def _refresh_info(self) -> None:
        try:
            cards = await self.grm.model_cards()
        except ServiceUnavailableError:
            if not self._grm_info:
                raise
            # keep serving the last known cards; try again in a second, not at every request
            self._grm_info_at = time.monotonic() - self.grm_info_ttl_s + 1.0
            return
        self._grm_info = {
            c.id: GrmInfo(model_id=c.id, revision=c.revision, tokenizer=c.tokenizer) for c in cards
        }
        self._base_id = cards[0].id
        self._grm_info_at = time.monotonic()

    async def aclose(self) -> None:
        """Stop a model-card refresh still in flight (the service is shutting down)."""
        if self._refresh is not None and not self._refresh.done():
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError, ServiceUnavailableError):
                await self._refresh

    async def score(
        self,
        samples: list[Sample],
        params: RewardParams,
        *,
        policy_tokenizer: str | None = None,
        team: str | None = None,
        refuse_markup: bool = True,
    ) -> list[ScoredSample]:
        """Score ``samples`` in order; cached results come back with ``cached=True``. GRM calls
        are made in ``team``'s lane of the fair GRM slots. A sample whose question or prediction
        carries chat markup is unscored (``chat_markup``) unless ``refuse_markup`` is off
        (``/get_reward``, which removes the markup of its own protocol itself)."""
        current_team.set(team or "")
        adapter = self.team_adapters.get(team or "")
        current_grm_model.set(adapter)
        started = time.perf_counter()
        tokenizer = self.tokenizers.get(policy_tokenizer) if policy_tokenizer else None
        grm = await self.grm_info(adapter)
        scope = team if team in self.private_cache_teams else None
        keys = [
            cache_key(s, params, grm, policy_tokenizer, prefix=self.prefix, scope=scope)
            for s in samples
        ]
        async with redis_guard(self.redis):
            hits = await self.cache.get_many(keys)
        lookup = time.perf_counter() - started
        # Identical samples in one batch (same key) are scored once.
        first_of = {k: i for i, k in reversed(list(enumerate(keys))) if hits[i] is None}
        misses = sorted(first_of.values())
        fresh = await self._score_misses(
            [samples[i] for i in misses], params, grm, tokenizer, refuse_markup
        )
        keep = [(keys[i], r) for i, r in zip(misses, fresh, strict=True) if _cacheable(r)]
        async with redis_guard(self.redis):
            await self.cache.put_many(keep)
        by_index = dict(zip(misses, fresh, strict=True))
        total = time.perf_counter() - started
        out: list[ScoredSample] = []
        for i, (sample, hit) in enumerate(zip(samples, hits, strict=True)):
            if hit is not None:
                out.append(_echo(hit, sample, cached=True, timings={"cache": lookup}))
                continue
            result = by_index[first_of[keys[i]]]
            timings = {**result.timings, "total": total}
            out.append(_echo(result, sample, cached=False, timings=timings))
        if team is not None:
            async with redis_guard(self.redis):
                await add_usage(self.redis, self.prefix, team, _usage_counts(out))
        return out

    async def _score_misses(
        self,
        samples: list[Sample],
        params: RewardParams,
        grm: GrmInfo,
        tokenizer: PolicyTokenizer | None,
        refuse_markup: bool = True,
    ) -> list[ScoredSample]:
        if not samples:
            return []
        stages = _Stages()
        items = [Item(sample=s) for s in samples]
        if refuse_markup:
            _refuse_chat_markup(items, tokenizer)
        t0 = time.perf_counter()
        await self._check_answers(items)
        stages.add("answer_check", t0)
        await self._grm_rewrite_and_score(items, stages)
        await self._check_rewrites(items, stages)
        if params.check_equations:
            _refuse_false_equations(items)
        await self._tokenize_rewrites(items, stages)
        t0 = time.perf_counter()
        results = await asyncio.to_thread(
            assemble.finish_all, items, params=params, grm=grm, tokenizer=tokenizer
        )
        stages.add("assemble", t0)
        for result in results:
            result.timings.update(stages.timings)
        return results

    async def _grm_rewrite_and_score(self, items: list[Item], stages: _Stages) -> None:
        """One batched rewrite (wrong predictions without a given rewrite) and, at the same
        time, one batched §3.1 scoring of every prediction that has a reference answer."""
        to_score = [it for it in items if it.result is None]
        to_rewrite = [it for it in to_score if not it.correct and it.sample.rewrite is None]
        for it in to_score:
            if not it.correct:
                it.rewrite = it.sample.rewrite
        rewrite_inputs = [RewriteInput(**_grm_input(it).model_dump()) for it in to_rewrite]
        t0 = time.perf_counter()
        scores, rewrites = await gather_or_cancel(
            self.grm.score_rlmec([_grm_input(it) for it in to_score]),
            self.grm.rewrite(rewrite_inputs, max_new_tokens=self.max_new_tokens),
        )
        stages.add("grm", t0)
        for it, rw in zip(to_rewrite, rewrites, strict=True):
            _apply_rewrite(it, rw)
        for it, sc in zip(to_score, scores, strict=True):
            if isinstance(sc, GrmFailure):
                it.result = it.result or assemble.unscored(it, sc.reason, sc.message)
            elif it.result is None:
                it.score = sc

    async def _check_answers(self, items: list[Item]) -> None:
        """§4 for every undecided item, in the bounded checker (sympy may take minutes on one
        string)."""
        items = [it for it in items if it.result is None]
        inputs = [
            CheckInput(
                prediction=it.sample.prediction, task=it.sample.task,
                reference_solution=it.sample.reference_solution,
                reference_answer=it.sample.reference_answer,
            )
            for it in items
        ]  # fmt: skip
        for it, judged in zip(items, await self.checker.judge_many(inputs), strict=True):
            _apply_judgement(it, judged)

    async def _check_rewrites(self, items: list[Item], stages: _Stages) -> None:
        """A rewrite must reach the reference answer, or the paper drops the sample (§3.1)."""
        t0 = time.perf_counter()
        pending = [it for it in items if it.result is None and not it.correct]
        checks = await self.checker.check_many(
            [(it.rewrite or "", it.reference or "", it.sample.task) for it in pending]
        )
        for it, check in zip(pending, checks, strict=True):
            if isinstance(check, CheckFailure):
                it.result = assemble.unscored(it, "answer_check_over_budget", check.message)
            elif not check.correct:
                got = check.predicted_answer
                what = f"answer {got!r}" if got is not None else "lack of a final answer"
                it.result = assemble.unscored(
                    it,
                    "rewrite_incorrect",
                    f"the rewrite's {what} does not reach the reference answer "
                    f"{it.reference!r}; the paper drops such samples (§3.1)",
                )
        stages.add("answer_check", t0)

    async def _tokenize_rewrites(self, items: list[Item], stages: _Stages) -> None:
        """GRM token ids and offsets of the accepted rewrites (+EOS) from ``/v1/tokenize``:
        the output tokenization ``/v1/score`` uses (it does not depend on the prompt), so both
        sequences share the GRM tokenizer for §3.3 without a forward pass over the rewrite."""
        pending = [it for it in items if it.result is None and not it.correct]
        for it in pending:
            # A GRM can generate anything: a rewrite the tokenize endpoint would refuse
            # (control characters) fails its sample, not the request (it used to be a 500).
            if (bad := _bad_text(it.rewrite or "")) is not None:
                it.result = assemble.unscored(
                    it, "grm_error", f"the GRM's rewrite is unusable: {bad}"
                )
        pending = [it for it in pending if it.result is None]
        if not pending:
            return
        t0 = time.perf_counter()
        tokenized = await self.grm.tokenize([it.rewrite or "" for it in pending])
        stages.add("grm", t0)
        for it, tk in zip(pending, tokenized, strict=True):
            if isinstance(tk, GrmFailure):
                it.result = assemble.unscored(it, tk.reason, tk.message)
            else:
                it.rewrite_tokens = tk


def _refuse_chat_markup(items: list[Item], tokenizer: PolicyTokenizer | None) -> None:
    specials = tokenizer.special_tokens() if tokenizer is not None else []
    for it in items:
        if (message := markup_message(it.sample, specials)) is not None:
            it.result = assemble.unscored(it, "chat_markup", message)


def _cacheable(result: ScoredSample) -> bool:
    return result.reason in CACHEABLE_REASONS


def _grm_input(item: Item) -> GrmSampleInput:
    s = item.sample
    return GrmSampleInput(
        question=s.question, reference_solution=s.reference_solution, prediction=s.prediction
    )


def _apply_judgement(item: Item, judged: Judgement | CheckFailure) -> None:
    if isinstance(judged, CheckFailure):
        item.result = assemble.unscored(item, "answer_check_over_budget", judged.message)
    elif judged.reference is None:
        item.result = assemble.unscored(
            item,
            "no_reference_answer",
            "no reference answer: reference_solution states none; send reference_answer",
        )
    else:
        item.reference, item.check = judged.reference, judged.check


def _apply_rewrite(item: Item, rw: RewriteResult | GrmFailure) -> None:
    if isinstance(rw, GrmFailure):
        item.result = assemble.unscored(item, rw.reason, rw.message)
    elif rw.status == "out_of_range" or rw.rewrite is None:
        item.located_step = rw.located_step
        item.result = assemble.unscored(
            item, "grm_out_of_range", rw.message or "the GRM located a step out of range"
        )
    else:
        item.rewrite = rw.rewrite
        item.located_step = rw.located_step


def _bad_text(text: str) -> str | None:
    try:
        check_text(text)
    except ValueError as exc:
        return str(exc)
    return None


def _echo(
    result: ScoredSample, sample: Sample, *, cached: bool, timings: dict[str, float]
) -> ScoredSample:
    return result.model_copy(
        update={
            "id": sample.id,
            "prompt": sample.prompt,
            "metadata": sample.metadata,
            "behaviour_logprobs": sample.behaviour_logprobs,
            "cached": cached,
            "timings": timings,
        }
    )


def _usage_counts(results: list[ScoredSample]) -> dict[str, int]:
    return {
        "samples": len(results),
        "scored": sum(r.status == "scored" for r in results),
        "unscored": sum(r.status == "unscored" for r in results),
        "cache_hits": sum(r.cached for r in results),
        "grm_errors": sum(r.reason == "grm_error" for r in results),
    }


@asynccontextmanager
async def open_pipeline(settings: RewardSettings) -> AsyncIterator[RewardPipeline]:
    """Open the GRM client, the Redis connection and the policy tokenizers; close them."""
    tokenizers = await asyncio.to_thread(TokenizerRegistry.load, settings.policy_tokenizers)
    redis = settings.connect_redis()
    grm = GrmBackend(
        settings.grm_urls,
        timeout=settings.grm_timeout_s,
        batch_size=settings.grm_batch_size,
        max_concurrency=settings.grm_max_concurrency,
        team_weights={t.name: t.grm_weight for t in settings.teams},
    )
    # One lane per team over the checker's workers (issue 26, item 3).
    lanes = FairSlots(settings.answer_check_workers)
    checker = AnswerChecker(
        workers=settings.answer_check_workers,
        timeout_s=settings.answer_check_timeout_s,
        memory_mib=settings.answer_check_memory_mib,
        gate=lanes.slot,
    )
    cache = RewardCache(
        redis,
        prefix=settings.redis_prefix,
        ttl_s=settings.cache_ttl_s,
        max_entries=settings.cache_max_entries,
        enabled=settings.cache_enabled,
    )
    pipeline: RewardPipeline | None = None
    try:
        pipeline = RewardPipeline(
            grm,
            cache,
            tokenizers,
            checker,
            redis=redis,
            prefix=settings.redis_prefix,
            private_cache_teams=frozenset(t.name for t in settings.teams if t.private_cache),
            team_adapters={t.name: t.grm_adapter for t in settings.teams if t.grm_adapter},
            max_new_tokens=settings.grm_max_new_tokens,
            grm_info_ttl_s=settings.grm_info_ttl_s,
        )
        yield pipeline
    finally:
        if pipeline is not None:
            await pipeline.aclose()
        await grm.aclose()
        await redis.aclose()
        checker.close()


def _refuse_false_equations(items: list[Item]) -> None:
    """A math rewrite that reaches the answer through a false equation (``62 - 47 = 25``) is
    unscored: the trainer would imitate that line (issue 42; :mod:`rlmec.shared.equations`)."""
    for it in items:
        if it.result is not None or it.correct or it.sample.task != "math":
            continue
        if (bad := false_equation(it.rewrite or "")) is not None:
            it.result = assemble.unscored(
                it,
                "rewrite_false_equation",
                f"the rewrite reaches the answer through a false equation ({bad!r}); a trainer "
                "would imitate it, so the sample is dropped (params.check_equations)",
            )
