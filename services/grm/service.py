"""The GRM subtasks (docs/method.md §2.1, §2.4, §3.1) over any :class:`Engine`; no FastAPI.

Scoring tokenization (what the reward service relies on to line values up with characters):
prompt ids = ``tokenizer(prompt)`` with the tokenizer's own special tokens; output ids =
``tokenizer(output, add_special_tokens=False)`` plus EOS when ``add_eos``; offsets come from
``return_offsets_mapping`` on the output alone, EOS at ``(len(output), len(output))``; each
log-prob is that of an output token given the prompt and the output tokens before it. The output
side does not depend on the prompt, so ``/v1/tokenize`` returns it through the same
:func:`rlmec.shared.tokenization.encode_output`, without the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from rlmec.inference.adapters import current_adapter
from rlmec.inference.engine import Engine
from rlmec.services.grm.metrics import GrmMetrics
from rlmec.shared import prompts
from rlmec.shared.errors import (
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
)
from rlmec.shared.grm_schemas import (
    GrmSampleInput,
    LocateRequest,
    LocateResponse,
    LocateResult,
    ModelCard,
    ModelList,
    RewriteInput,
    RewriteRequest,
    RewriteResponse,
    RewriteResult,
    ScoreRequest,
    ScoreResponse,
    ScoreResult,
    TokenizeRequest,
    TokenizeResponse,
    TokenizeResult,
)
from rlmec.shared.tokenization import OutputTokens, encode_output


@dataclass
class _Encoded:
    prompt: list[int]
    output: OutputTokens


TOKENIZE_CONCURRENCY = 2
TOKENIZE_QUEUE = 64


R = TypeVar("R", LocateResponse, RewriteResponse, ScoreResponse)


def _on_requested_model(
    method: Callable[[GrmService, Any], Awaitable[R]],
) -> Callable[[GrmService, Any], Awaitable[R]]:
    """Run a locate, rewrite or score call on the model its request names (``model``), and
    answer with that model's id."""

    @functools.wraps(method)
    async def run(self: GrmService, request: Any) -> R:
        async with self.serving(request.model) as model:
            response = await method(self, request)
        return response.model_copy(update={"model": model})

    return run


class GrmService:
    def __init__(
        self, engine: Engine, *, max_request_tokens: int, metrics: GrmMetrics | None = None
    ) -> None:
        self.engine = engine
        self.max_request_tokens = max_request_tokens
        self.metrics = metrics or GrmMetrics()
        # /v1/tokenize takes no engine slot, so it gets its own bound: a few at a time (each
        # holds a worker thread and its results), a bounded queue behind them.
        self._tokenize_slots = asyncio.Semaphore(TOKENIZE_CONCURRENCY)
        self._tokenize_waiting = 0

    @property
    def model_id(self) -> str:
        return self.engine.info().model_id

    def models(self) -> ModelList:
        info, tok = self.engine.info(), self.engine.tokenizer
        card = ModelCard(
            id=info.model_id,
            revision=info.revision,
            tokenizer=info.tokenizer,
            max_model_len=info.max_model_len,
            engine=info.engine,
            eos_token=str(tok.eos_token),
            eos_token_id=int(tok.eos_token_id),
        )
        adapters = [
            card.model_copy(update={"id": name, "revision": revision, "parent": card.id})
            for name, revision in self.engine.adapter_revisions().items()
        ]
        return ModelList(data=[card, *adapters])

    def _served(self) -> str:
        """The model this call's engine work runs on: its adapter's name, or the base's id."""
        return current_adapter.get() or self.model_id

    @contextlib.asynccontextmanager
    async def serving(self, model: str | None) -> AsyncIterator[str]:
        """Route this call's engine work to ``model`` (the base, or an adapter) for as long
        as the call runs (an adapter is not unloaded under it); yields its id."""
        base = self.model_id
        adapter = None if model is None or model == base else model
        if adapter is not None and adapter not in self.engine.adapter_revisions():
            served = [base, *self.engine.adapter_revisions()]
            raise NotFoundError(
                f"model {model!r} is not served here; GET /v1/models lists {served}",
                param="model",
                code="model_not_found",
            )
        current_adapter.set(adapter)
        async with self.engine.using(adapter):
            yield adapter or base

    # --- budgets ---------------------------------------------------------------------------

    def _check_lengths(
        self,
        field: str,
        lengths: list[tuple[int, int]],
        what: str,
        *,
        extra_total: int = 0,
        indices: list[int] | None = None,
    ) -> None:
        """``lengths`` = (prompt tokens, output tokens or max_new_tokens) per sample; checked
        before any engine work so an oversize batch costs nothing."""
        limit = self.engine.info().max_model_len
        over = [
            (indices[pos] if indices is not None else pos, prompt_len, extra)
            for pos, (prompt_len, extra) in enumerate(lengths)
            if prompt_len + extra > limit
        ]
        if over:
            # Every sample over the context at once (``param``: their paths, comma-separated),
            # so a client drops them all and re-sends the rest once, not once per sample.
            i, prompt_len, extra = over[0]
            more = f" (and {len(over) - 1} more samples)" if len(over) > 1 else ""
            raise PayloadTooLargeError(
                f"{field}[{i}]: prompt ({prompt_len} tokens) + {what} ({extra}) = "
                f"{prompt_len + extra} exceeds the model context of {limit} tokens{more}; "
                "shorten the input, lower the budget, or raise RLMEC_GRM_MAX_MODEL_LEN",
                param=",".join(f"{field}.{j}" for j, _, _ in over),
                code="context_length_exceeded",
            )
        total = sum(p + e for p, e in lengths) + extra_total
        if total > self.max_request_tokens:
            raise PayloadTooLargeError(
                f"the request needs {total} tokens, over the per-request budget of "
                f"{self.max_request_tokens}; split it into smaller batches or raise "
                "RLMEC_GRM_MAX_REQUEST_TOKENS",
                param=field,
                code="request_token_budget_exceeded",
            )

    def _encode_prompts(self, texts: list[str]) -> list[list[int]]:
        tok = self.engine.tokenizer
        return [list(tok(t)["input_ids"]) for t in texts]

    # --- locate ----------------------------------------------------------------------------

    @_on_requested_model
    async def locate(self, request: LocateRequest) -> LocateResponse:
        results = await self._locate(request.samples, request.max_new_tokens, "samples")
        self.metrics.samples.labels("locate", self._served()).inc(len(results))
        return LocateResponse(model=self.model_id, results=results)

    async def _locate(
        self, samples: list[Any], max_new: int, field: str, *, checked: bool = False
    ) -> list[LocateResult]:
        texts = [
            prompts.locate_prompt(s.question, s.reference_solution, s.prediction) for s in samples
        ]
        ids = await asyncio.to_thread(self._encode_prompts, texts)
        if not checked:  # from /v1/rewrite the budget was checked for the whole flow
            self._check_lengths(field, [(len(p), max_new) for p in ids], "max_new_tokens")
        gens = await self.engine.generate(ids, max_new, prompts.STOP_STRINGS)
        self._count_generation(ids, [g.num_tokens for g in gens])
        results = []
        for sample, prompt_ids, gen in zip(samples, ids, gens, strict=True):
            parsed = prompts.parse_located_step(
                gen.text, len(prompts.split_steps(sample.prediction))
            )
            results.append(
                LocateResult(
                    status=parsed.status, step=parsed.step, raw=gen.text, message=parsed.message,
                    prompt_tokens=len(prompt_ids), completion_tokens=gen.num_tokens,
                )
            )  # fmt: skip
        return results

    def _count_generation(self, prompt_ids: list[list[int]], generated: list[int]) -> None:
        model = self._served()
        self.metrics.tokens_prompt.labels(model).inc(sum(len(p) for p in prompt_ids))
        self.metrics.tokens_generated.labels(model).inc(sum(generated))

    # --- rewrite ---------------------------------------------------------------------------

    @_on_requested_model
    async def rewrite(self, request: RewriteRequest) -> RewriteResponse:
        samples = request.samples
        for i, sample in enumerate(samples):
            steps = len(prompts.split_steps(sample.prediction))
            if sample.step is not None and sample.step >= steps:
                raise InvalidRequestError(
                    f"samples[{i}].step ({sample.step}) is outside the prediction's steps "
                    f"0..{steps - 1} (steps are the prediction's lines); give a step in range "
                    "or leave it out to let the GRM locate it",
                    param=f"samples.{i}.step",
                )
        await self._check_rewrite_budget(request)
        to_locate = [i for i, s in enumerate(samples) if s.step is None]
        located: dict[int, LocateResult] = {}
        if to_locate:
            found = await self._locate(
                [samples[i] for i in to_locate],
                request.locate_max_new_tokens,
                "samples",
                checked=True,
            )
            located = dict(zip(to_locate, found, strict=True))
        results = await self._rewrite_from(samples, located, request.max_new_tokens)
        self.metrics.samples.labels("rewrite", self._served()).inc(len(results))
        return RewriteResponse(model=self.model_id, results=results)

    async def _check_rewrite_budget(self, request: RewriteRequest) -> None:
        """Worst case up front, before any engine work: the locate prompt + its budget, and
        the rewrite prompt from the last step (the longest verbatim prefix the GRM could
        locate) or from the caller's step, + max_new_tokens."""
        locate_texts: list[str] = []
        rewrite_texts: list[str] = []
        for s in request.samples:
            if s.step is None:
                locate_texts.append(
                    prompts.locate_prompt(s.question, s.reference_solution, s.prediction)
                )
            step = len(prompts.split_steps(s.prediction)) - 1 if s.step is None else s.step
            rewrite_texts.append(
                prompts.rewrite_prompt(s.question, s.reference_solution, s.prediction, step)
            )
        locate_ids, rewrite_ids = await asyncio.to_thread(
            lambda: (self._encode_prompts(locate_texts), self._encode_prompts(rewrite_texts))
        )
        locate_new = request.locate_max_new_tokens
        self._check_lengths(
            "samples",
            [(len(p), request.max_new_tokens) for p in rewrite_ids],
            "max_new_tokens",
            extra_total=sum(len(p) + locate_new for p in locate_ids),
        )
        # Locate prompts carry step labels, so they can be the longer of the two.
        located = [i for i, s in enumerate(request.samples) if s.step is None]
        self._check_lengths(
            "samples",
            [(len(p), locate_new) for p in locate_ids],
            "locate_max_new_tokens",
            indices=located,
        )

    async def _rewrite_from(
        self, samples: list[RewriteInput], located: dict[int, LocateResult], max_new: int
    ) -> list[RewriteResult | None]:
        results: list[RewriteResult | None] = [None] * len(samples)
        work: list[tuple[int, int]] = []  # (sample index, step)
        for i, sample in enumerate(samples):
            loc = located.get(i)
            if loc is not None and loc.status == "out_of_range":
                results[i] = RewriteResult(
                    status="out_of_range", located_step=None, locate=loc, message=loc.message,
                    prompt_tokens=loc.prompt_tokens, completion_tokens=loc.completion_tokens,
                )  # fmt: skip
                continue
            # no_error / unparsed: no step located, so the GRM rewrites the whole prediction.
            step = (loc.step or 0) if loc is not None else (sample.step or 0)
            work.append((i, step))
        texts = [
            prompts.rewrite_prompt(
                samples[i].question, samples[i].reference_solution, samples[i].prediction, step
            )
            for i, step in work
        ]
        ids = await asyncio.to_thread(self._encode_prompts, texts)
        gens = await self.engine.generate(ids, max_new, prompts.STOP_STRINGS) if ids else []
        self._count_generation(ids, [g.num_tokens for g in gens])
        for (i, step), prompt_ids, gen in zip(work, ids, gens, strict=True):
            loc = located.get(i)
            prefix = prompts.rewrite_prefix(samples[i].prediction, step)
            # Trailing whitespace before a stop string is decoding debris, not solution text.
            continuation = gen.text.rstrip()
            results[i] = RewriteResult(
                status="rewritten", located_step=step, locate=loc, prefix=prefix,
                continuation=gen.text, rewrite=prompts.join_rewrite(prefix, continuation),
                message=loc.message if loc else "",
                prompt_tokens=len(prompt_ids) + (loc.prompt_tokens if loc else 0),
                completion_tokens=gen.num_tokens + (loc.completion_tokens if loc else 0),
            )  # fmt: skip
        return results

    # --- score -----------------------------------------------------------------------------

    @_on_requested_model
    async def score(self, request: ScoreRequest) -> ScoreResponse:
        if request.mode == "rlmec":
            assert request.samples is not None  # the schema's validator guarantees it
            pairs = [_scoring_pair(s) for s in request.samples]
            field = "samples"
        else:
            assert request.items is not None
            pairs = [(item.prompt, item.output) for item in request.items]
            field = "items"
        encoded = await asyncio.to_thread(self._encode_pairs, pairs, request.add_eos, field)
        lengths = [(len(e.prompt), len(e.output.token_ids)) for e in encoded]
        self._check_lengths(field, lengths, "output")
        logprobs = await self.engine.score(
            [e.prompt for e in encoded], [e.output.token_ids for e in encoded]
        )
        model = self._served()
        self.metrics.tokens_scored.labels(model).inc(sum(n for _, n in lengths))
        self.metrics.tokens_prompt.labels(model).inc(sum(len(e.prompt) for e in encoded))
        self.metrics.samples.labels("score", model).inc(len(encoded))
        results = [
            ScoreResult(
                token_ids=e.output.token_ids, tokens=e.output.tokens, offsets=e.output.offsets,
                logprobs=lp,
                prompt_tokens=len(e.prompt),
            )
            for e, lp in zip(encoded, logprobs, strict=True)
        ]  # fmt: skip
        return ScoreResponse(model=self.model_id, results=results)

    def _encode_pairs(
        self, pairs: list[tuple[str, str]], add_eos: bool, field: str
    ) -> list[_Encoded]:
        tok = self.engine.tokenizer
        out: list[_Encoded] = []
        for i, (prompt, output) in enumerate(pairs):
            prompt_ids = list(tok(prompt)["input_ids"])
            if not prompt_ids:
                raise InvalidRequestError(
                    f"{field}[{i}].prompt is empty after tokenization, so the first output "
                    "token has no context to be scored against; send a non-empty prompt",
                    param=f"{field}.{i}.prompt",
                )
            out.append(_Encoded(prompt_ids, encode_output(tok, output, add_eos=add_eos)))
        return out

    # --- tokenize --------------------------------------------------------------------------

    async def tokenize(self, request: TokenizeRequest) -> TokenizeResponse:
        """Output tokenization of each text, exactly as ``/v1/score`` reports it, with no
        engine work: the reward service needs a rewrite's ids for §3.3, not its log-probs.
        In a worker thread, since a batch may hold up to ``MAX_BATCH`` long texts. Bounded: at
        most ``max_request_tokens`` characters per request (413; characters bound both the
        tokenizer's work and the answer's size, checked before any of it), at most
        :data:`TOKENIZE_CONCURRENCY` requests at once and :data:`TOKENIZE_QUEUE` waiting (429)."""
        chars = sum(len(t) for t in request.texts)
        if chars > self.max_request_tokens:
            raise PayloadTooLargeError(
                f"the texts hold {chars} characters, over the per-request budget of "
                f"{self.max_request_tokens}; split them into smaller batches",
                param="texts",
                code="request_token_budget_exceeded",
            )
        if self._tokenize_slots.locked() and self._tokenize_waiting >= TOKENIZE_QUEUE:
            raise RateLimitError(
                f"{TOKENIZE_QUEUE} tokenize requests are already waiting; retry shortly",
                retry_after=1.0,
                code="tokenize_saturated",
            )
        self._tokenize_waiting += 1
        try:
            await self._tokenize_slots.acquire()
        finally:
            self._tokenize_waiting -= 1
        try:
            results = await asyncio.to_thread(self._tokenize_all, request.texts, request.add_eos)
        finally:
            self._tokenize_slots.release()
        self.metrics.samples.labels("tokenize", self._served()).inc(len(results))
        return TokenizeResponse(model=self.model_id, results=results)

    def _tokenize_all(self, texts: list[str], add_eos: bool) -> list[TokenizeResult]:
        tok = self.engine.tokenizer
        results = []
        for text in texts:
            out = encode_output(tok, text, add_eos=add_eos)
            results.append(
                TokenizeResult(token_ids=out.token_ids, tokens=out.tokens, offsets=out.offsets)
            )
        return results


def _scoring_pair(sample: GrmSampleInput) -> tuple[str, str]:
    """§3.1: the prediction follows the scoring prompt directly, teacher-forced."""
    prompt = prompts.scoring_prompt(sample.question, sample.reference_solution, sample.prediction)
    return prompt, sample.prediction
