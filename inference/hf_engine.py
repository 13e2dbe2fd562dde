"""``hf`` engine: transformers on CPU or GPU, with a micro-batcher.

Requests from all callers become per-sequence jobs in one queue; a single worker takes jobs of
the same kind (and, for generation, the same budget and stop strings) up to a token budget, pads
them into one batch with attention masks, and runs the forward pass in a thread so the event
loop keeps serving. Cancelled jobs (client gone) are dropped before they run, and a generation
batch whose callers have all gone stops at the next token.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rlmec.inference.adapters import AdapterTable, current_adapter
from rlmec.inference.engine import (
    EngineInfo,
    Generation,
    LoadedEngine,
    Sampling,
    check_model_dir,
    config_max_len,
    cut_at_stop,
    load_tokenizer,
    model_revision,
)
from rlmec.inference.settings import EngineSettings
from rlmec.inference.tenants import ANONYMOUS, StrideClock, Tenant, current_tenant
from rlmec.shared.errors import NotFoundError, ServiceUnavailableError

# Configs whose logits are not simply lm_head(last hidden state): score them from full logits.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier_scale")


@dataclass(eq=False)
class _Job:
    key: tuple[Any, ...]
    prompt: list[int]
    output: list[int]
    max_new_tokens: int
    future: asyncio.Future[Any] = field(repr=False)
    tenant: Tenant = ANONYMOUS
    adapter: str | None = None  # None: the base model

    @property
    def length(self) -> int:
        return len(self.prompt) + (
            len(self.output) if self.key[0] == "score" else self.max_new_tokens
        )


class HfEngine(LoadedEngine):
    name = "hf"

    def __init__(self, settings: EngineSettings) -> None:
        self._settings = settings
        self._dir = check_model_dir(settings.model)
        self._pending: collections.deque[_Job] = collections.deque()
        self._clock = StrideClock()  # whose batch is next, when several tenants wait
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._running = 0
        self._model: Any = None
        self._peft: Any = None  # the peft wrapper once an adapter is loaded
        self._adapters = AdapterTable()
        # Held around every batch and every adapter change: peft's adapters are modules of
        # the model, so one must never change while a batch runs in the worker thread.
        self._model_lock = asyncio.Lock()
        self._tokenizer: Any = None
        self._info: EngineInfo | None = None

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self._load)
        self._wakeup = asyncio.Event()
        self._worker = asyncio.create_task(self._run(), name="grm-hf-batcher")

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        device = self._settings.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype_name = self._settings.dtype
        if dtype_name == "auto":
            dtype_name = "bfloat16" if device == "cuda" else "float32"
        self._tokenizer = load_tokenizer(self._dir)
        model: Any = AutoModelForCausalLM.from_pretrained(
            str(self._dir), dtype=getattr(torch, dtype_name)
        )
        self._model = model.to(device).eval()
        self._device = device
        self._pad_id = self._tokenizer.pad_token_id
        if self._pad_id is None:
            self._pad_id = self._tokenizer.eos_token_id
        for name, path in self._settings.adapters.items():
            try:
                self._load_adapter(name, Path(path))
            except ValueError as exc:  # a configuration error: one line, no traceback
                raise ServiceUnavailableError(f"RLMEC_GRM_ADAPTERS: {exc}") from None
        limit = self._settings.max_model_len or config_max_len(self._dir)
        self._info = EngineInfo(
            model_id=self._settings.served_name,
            revision=model_revision(self._dir),
            tokenizer=type(self._tokenizer).__name__ + ":" + str(self._dir.name),
            max_model_len=limit,
            engine=self.name,
        )

    async def ready(self) -> bool:
        return self._model is not None and self._worker is not None and not self._worker.done()

    async def close(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        while self._pending:
            job = self._pending.popleft()
            if not job.future.done():
                job.future.set_exception(ServiceUnavailableError("the hf engine is shutting down"))
        self._model = None

    # --- adapters --------------------------------------------------------------------------

    def adapter_revisions(self) -> dict[str, str]:
        """The loaded adapters, name -> revision (a hash of the adapter's files)."""
        return dict(self._adapters.revisions)

    def _load_adapter(self, name: str, path: Path) -> None:
        """Check the adapter against the base weights, then add it (peft, in this thread)."""
        from peft import PeftModel

        self._adapters.check_new(name, path, self._dir)
        if self._peft is None:
            self._peft = PeftModel.from_pretrained(self._model, str(path), adapter_name=name)
            self._peft.eval()
        else:
            self._peft.load_adapter(str(path), adapter_name=name)
        self._adapters.add(name, path)

    async def load_adapter(self, name: str, path: str | Path) -> str:
        """Load an adapter while serving (between batches); its revision."""
        if self._model is None:
            raise ServiceUnavailableError("the hf engine is not started yet")
        async with self._model_lock:
            await asyncio.to_thread(self._load_adapter, name, Path(path))
        return self._adapters.revisions[name]

    @contextlib.asynccontextmanager
    async def using(self, adapter: str | None) -> AsyncIterator[None]:
        async with self._adapters.using(adapter):
            yield

    async def unload_adapter(self, name: str) -> None:
        """Stop taking calls for ``name`` at once (404 from then on), let the calls already
        using it finish, then remove it: nothing in flight fails."""
        await self._adapters.remove(name)
        async with self._model_lock:  # a batch of it may still be running
            await asyncio.to_thread(self._delete_adapter, name)

    def _delete_adapter(self, name: str) -> None:
        self._peft.delete_adapter(name)
        if self._adapters.revisions:  # peft keeps the deleted one active: make one active
            self._peft.set_adapter(next(iter(self._adapters.revisions)))
        else:  # the last one: back to the plain model (its LoRA layers removed)
            self._model = self._peft.unload()
            self._peft = None

    def _use(self, adapter: str | None) -> contextlib.AbstractContextManager[Any]:
        """Make ``adapter`` (None: the base model) the one the next forward passes run."""
        if self._peft is None:
            return contextlib.nullcontext()
        if adapter is None:
            return self._peft.disable_adapter()
        self._peft.set_adapter(adapter)
        return contextlib.nullcontext()

    # --- public API ------------------------------------------------------------------------

    def queue_depth(self) -> int:
        return len(self._pending) + self._running

    async def reload_weights(self, model_dir: str | Path, revision: str | None = None) -> None:
        """Copy the weights of ``model_dir`` into the running model (same architecture)."""
        if self._model is None or self._info is None:
            raise ServiceUnavailableError("the hf engine is not started yet")
        path = check_model_dir(model_dir)
        await asyncio.to_thread(self._load_weights, path)
        if revision is None:
            revision = await asyncio.to_thread(model_revision, path)
        self._info = replace(self._info, revision=revision)

    def _load_weights(self, path: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        new = AutoModelForCausalLM.from_pretrained(str(path), dtype=self._model.dtype)
        with torch.no_grad():
            self._model.load_state_dict(new.state_dict(), strict=True)

    async def score(
        self, prompt_ids: list[list[int]], output_ids: list[list[int]]
    ) -> list[list[float]]:
        jobs = [self._job(("score",), p, o, 0) for p, o in zip(prompt_ids, output_ids, strict=True)]
        return await self._submit(jobs)

    async def generate(
        self,
        prompts: list[list[int]],
        max_new_tokens: int,
        stop: Sequence[str],
        sampling: Sampling | None = None,
    ) -> list[Generation]:
        # Sampled jobs batch only with their own call (one temperature/top-p per batch).
        key: tuple[Any, ...] = ("generate", max_new_tokens, tuple(stop))
        key += (sampling,) if sampling is not None else ()
        return await self._submit([self._job(key, p, [], max_new_tokens) for p in prompts])

    # --- batching --------------------------------------------------------------------------

    def _job(self, key: tuple[Any, ...], prompt: list[int], output: list[int], new: int) -> _Job:
        future = asyncio.get_running_loop().create_future()
        adapter = current_adapter.get()
        # In peft until its last call ends, even once an unload has begun (the call's later
        # engine work, e.g. a rewrite after its locate, still runs on it).
        if adapter is not None and (self._peft is None or adapter not in self._peft.peft_config):
            raise NotFoundError(f"adapter {adapter!r} is not loaded", code="model_not_found")
        return _Job(key, prompt, output, new, future, current_tenant.get(), adapter)

    async def _submit(self, jobs: list[_Job]) -> list[Any]:
        if self._worker is None:
            raise ServiceUnavailableError("the hf engine is not running")
        self._pending.extend(jobs)
        self._wakeup.set()
        try:
            return list(await asyncio.gather(*(j.future for j in jobs)))
        finally:
            # Caller cancelled (client gone, timeout): the worker skips these jobs.
            for job in jobs:
                job.future.cancel()

    def _take_batch(self) -> list[_Job]:
        """The next batch: the first live job of the tenant to serve next (stride scheduling,
        :mod:`.tenants`), and the jobs sharing its key, while the padded size fits the budget.
        While several tenants wait, only that tenant's jobs (see :mod:`.tenants`)."""
        self._pending = collections.deque(j for j in self._pending if not j.future.done())
        if not self._pending:
            return []
        waiting = dict.fromkeys(j.tenant.name for j in self._pending)
        if self._settings.fair_tenants:
            tenant = self._clock.next(waiting)
            first = next(j for j in self._pending if j.tenant.name == tenant)
            alone = len(waiting) > 1
        else:  # first come, first served: the oldest job leads, any tenant may join it
            first, alone = self._pending[0], False
            tenant = first.tenant.name
        batch: list[_Job] = []
        longest = 0
        keep: collections.deque[_Job] = collections.deque()
        for job in self._pending:
            grown = max(longest, job.length) * (len(batch) + 1)
            fits = not batch or grown <= self._settings.max_batch_tokens
            room = fits and len(batch) < self._settings.max_batch_size
            same = job.key == first.key and job.adapter == first.adapter  # one adapter a batch
            if same and (job.tenant.name == tenant or not alone) and room:
                batch.append(job)
                longest = max(longest, job.length)
            else:
                keep.append(job)
        self._pending = keep
        self._clock.charge(first.tenant, longest * len(batch))
        return batch

    async def _run(self) -> None:
        wait = self._settings.batch_wait_ms / 1000
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            if wait and len(self._pending) < self._settings.max_batch_size:
                await asyncio.sleep(wait)  # let concurrent callers join this batch
            async with self._model_lock:  # taken before the batch: no adapter leaves under it
                batch = self._take_batch()
                if batch:
                    await self._run_taken(batch)

    async def _run_taken(self, batch: list[_Job]) -> None:
        self._running = len(batch)
        try:
            results = await asyncio.to_thread(self._run_batch, batch)
        except Exception as exc:  # the batch's callers get the error, the worker lives on
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(exc)
        else:
            for job, result in zip(batch, results, strict=True):
                if not job.future.done():
                    job.future.set_result(result)
        finally:
            self._running = 0

    def _run_batch(self, batch: list[_Job]) -> list[Any]:
        with self._use(batch[0].adapter):
            if batch[0].key[0] == "score":
                return self._score_batch(batch)
            return self._generate_batch(batch)

    # --- model work (runs in a worker thread) -----------------------------------------------

    def _score_batch(self, jobs: list[_Job]) -> list[list[float]]:
        """Right-padded teacher forcing; position ``p-1+i`` predicts output token ``i``."""
        import torch

        seqs = [j.prompt + j.output for j in jobs]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, seq in enumerate(seqs):
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        ids, mask = ids.to(self._device), mask.to(self._device)
        results: list[list[float]] = []
        with torch.inference_mode():
            hidden, full = self._forward(ids, mask)
            for row, job in enumerate(jobs):
                start, n = len(job.prompt) - 1, len(job.output)
                if n == 0:
                    results.append([])
                    continue
                if full is not None:
                    logits = full[row, start : start + n]
                else:
                    logits = self._model.get_output_embeddings()(hidden[row, start : start + n])
                logp = torch.log_softmax(logits.float(), dim=-1)
                target = torch.tensor(job.output, device=logp.device).unsqueeze(-1)
                results.append(logp.gather(-1, target).squeeze(-1).tolist())
        return results

    def _forward(self, ids: Any, mask: Any) -> tuple[Any, Any]:
        """Hidden states only (the lm_head runs on output positions: a [batch, seq, vocab]
        logits tensor would dominate memory), unless the config transforms its logits."""
        config = self._model.config
        if any(getattr(config, name, None) for name in _LOGIT_TRANSFORMS):
            return None, self._model(input_ids=ids, attention_mask=mask).logits
        backbone = self._model.get_decoder()
        return backbone(input_ids=ids, attention_mask=mask).last_hidden_state, None

    def _generate_batch(self, jobs: list[_Job]) -> list[Generation]:
        """Greedy (or sampled), left-padded; stops on EOS or a stop string (text cut before
        it)."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        class _AllCancelled(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                done = all(j.future.cancelled() for j in jobs)
                return torch.full((input_ids.shape[0],), done, dtype=torch.bool)

        _, max_new, stop, *rest = jobs[0].key
        sampling: Sampling | None = rest[0] if rest else None
        decoding: dict[str, Any] = {"do_sample": False}
        if sampling is not None:
            if sampling.seeds:
                torch.manual_seed(sampling.seeds[0])
            decoding = {"do_sample": True, "temperature": sampling.temperature,
                        "top_p": sampling.top_p}  # fmt: skip
        # transformers' prompt lookup takes one sequence: a batch of several decodes together,
        # without it, rather than give up batching (BENCHMARKS.md, section `speculative`).
        if sampling is None and self._settings.speculative_tokens and len(jobs) == 1:
            decoding["prompt_lookup_num_tokens"] = self._settings.speculative_tokens
        width = max(len(j.prompt) for j in jobs)
        ids = torch.full((len(jobs), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(jobs), width), dtype=torch.long)
        for row, job in enumerate(jobs):
            ids[row, width - len(job.prompt) :] = torch.tensor(job.prompt)
            mask[row, width - len(job.prompt) :] = 1
        with torch.inference_mode():
            out = self._model.generate(
                input_ids=ids.to(self._device),
                attention_mask=mask.to(self._device),
                max_new_tokens=max_new,
                **decoding,
                stop_strings=list(stop) or None,
                tokenizer=self._tokenizer,
                pad_token_id=self._pad_id,
                eos_token_id=self._tokenizer.eos_token_id,
                stopping_criteria=StoppingCriteriaList([_AllCancelled()]),
            )
        return [self._to_generation(row[width:].tolist(), max_new, stop) for row in out]

    def _to_generation(self, tokens: list[int], max_new: int, stop: Sequence[str]) -> Generation:
        eos = self._tokenizer.eos_token_id
        kept: list[int] = []
        reason = "length"
        for token in tokens:
            if token == eos:
                reason = "stop"
                break
            if token == self._pad_id:  # this row finished on a stop string; others went on
                break
            kept.append(token)
        text = self._tokenizer.decode(kept, skip_special_tokens=True)
        text, hit = cut_at_stop(text, stop)
        if hit:
            reason = "stop"
        # vLLM counts the EOS it generated; so do we, so token counts agree across engines.
        num = len(kept) + (1 if reason == "stop" and not hit else 0)
        return Generation(text=text, num_tokens=min(num, max_new), finish_reason=reason)
