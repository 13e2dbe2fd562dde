"""``remote`` engine: one or more OpenAI-compatible servers (a vLLM fleet) over HTTP.

The service keeps the tokenizer (from the local model directory) and sends token ids, so the
upstream sees exactly the tokens the other engines would. Scoring: ``POST /v1/completions``
with ``prompt`` = ids, ``max_tokens: 1``, ``prompt_logprobs: 0``, ``echo: true``; the reply's
``choices[0].prompt_logprobs`` is ``[None, {token_id: {"logprob": ...}}, ...]`` (vLLM's format).
Generation: the same route with ``temperature: 0`` and the stop strings.

Adapters are the upstream's: a vLLM server started with ``--enable-lora --lora-modules
NAME=PATH`` lists each adapter in ``/v1/models`` with the base as its ``parent``; this engine
lists them as its own (refreshed every ``ADAPTER_REFRESH_S``) and passes a call's adapter name
through as the upstream request's ``model``. Their provenance is the upstream's to check: the
paths are on its disk, not here.

Load spreading: round-robin over the URLs that are up, each with its own concurrency cap.
Failover: a connect error, timeout or 5xx marks the URL down for ``upstream_markdown_s`` and the
call moves to the next URL (every call is a greedy, side-effect-free read, so a retry is safe);
4xx answers are the request's fault and are not retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from rlmec.inference.adapters import current_adapter
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
from rlmec.shared.errors import ServiceUnavailableError, UpstreamError

# OpenAI's completions API (and vLLM's server, which follows it) takes at most 4 stop strings.
OPENAI_MAX_STOP = 4
# How often the upstream's adapter list is read again (an adapter loaded on the upstream at
# runtime is served here within this many seconds).
ADAPTER_REFRESH_S = 10.0


def minimal_stops(stop: Sequence[str]) -> list[str]:
    """Drop stop strings that start with another one: ``Question:`` never cuts earlier than
    ``Question``, so the RLMEC list (§1 step 5) of 10 becomes the 5 bare words."""
    return [s for s in stop if not any(t != s and s.startswith(t) for t in stop)]


@dataclass(eq=False)
class _Upstream:
    url: str
    slots: asyncio.Semaphore
    down_until: float = 0.0
    failures: int = field(default=0)

    def is_up(self, now: float) -> bool:
        return now >= self.down_until


class RemoteEngine(LoadedEngine):
    name = "remote"

    def __init__(self, settings: EngineSettings) -> None:
        if not settings.upstreams:
            raise ServiceUnavailableError(
                "the remote engine needs at least one upstream URL; pass --upstream "
                "http://HOST:PORT (RLMEC_GRM_UPSTREAMS for the GRM service)"
            )
        self._settings = settings
        self._dir = check_model_dir(settings.model)
        self._tokenizer: Any = None
        self._info: EngineInfo | None = None
        self._client: httpx.AsyncClient | None = None
        self._upstreams: list[_Upstream] = []
        self._rr = itertools.count()
        self._model_name = settings.upstream_model
        self._adapters: dict[str, str] = {}  # the upstream's adapter names -> revision
        self._refresher: asyncio.Task[None] | None = None
        self._active = 0

    async def start(self) -> None:
        if self._settings.adapters:
            raise ServiceUnavailableError(
                "RLMEC_GRM_ADAPTERS: the remote engine serves its upstream's adapters; load "
                "them on the upstream (vLLM: --enable-lora --lora-modules NAME=PATH) and leave "
                "RLMEC_GRM_ADAPTERS empty"
            )
        cap = self._settings.upstream_concurrency
        self._upstreams = [_Upstream(u, asyncio.Semaphore(cap)) for u in self._settings.upstreams]
        headers = {}
        if self._settings.upstream_api_key is not None:
            headers["Authorization"] = (
                f"Bearer {self._settings.upstream_api_key.get_secret_value()}"
            )
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(self._settings.upstream_timeout_s, connect=5.0),
            headers=headers,
            limits=httpx.Limits(max_connections=cap * len(self._upstreams)),
        )
        self._tokenizer = await asyncio.to_thread(load_tokenizer, self._dir)
        self._info = EngineInfo(
            model_id=self._settings.served_name,
            revision=await asyncio.to_thread(model_revision, self._dir),
            tokenizer=type(self._tokenizer).__name__ + ":" + self._dir.name,
            max_model_len=self._settings.max_model_len or config_max_len(self._dir),
            engine=self.name,
        )
        self._refresher = asyncio.create_task(self._refresh_adapters())

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def ready(self) -> bool:
        try:
            await self._resolve_model()
        except (ServiceUnavailableError, UpstreamError):
            return False
        return True

    def queue_depth(self) -> int:
        return self._active

    def upstream_status(self) -> list[dict[str, Any]]:
        """Per URL: up or marked down, and consecutive failures (for operators and tests)."""
        now = time.monotonic()
        return [{"url": u.url, "up": u.is_up(now), "failures": u.failures} for u in self._upstreams]

    # --- HTTP with spreading and failover ---------------------------------------------------

    def _order(self) -> list[_Upstream]:
        """Up URLs in round-robin order, then the down ones (soonest back first) as a last
        resort, so a fleet that is briefly all down is still tried rather than refused."""
        now = time.monotonic()
        start = next(self._rr) % len(self._upstreams)
        ring = self._upstreams[start:] + self._upstreams[:start]
        up = [u for u in ring if u.is_up(now)]
        down = sorted((u for u in ring if not u.is_up(now)), key=lambda u: u.down_until)
        return up + down

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        if self._client is None:
            raise ServiceUnavailableError("the remote engine is not running")
        errors: list[str] = []
        for upstream in self._order():
            try:
                async with upstream.slots:
                    resp = await self._client.request(method, upstream.url + path, json=body)
            except httpx.TransportError as exc:  # connect error, timeout, reset
                errors.append(f"{upstream.url}: {type(exc).__name__}")
                self._mark_down(upstream)
                continue
            if resp.status_code >= 500:
                errors.append(f"{upstream.url}: HTTP {resp.status_code}")
                self._mark_down(upstream)
                continue
            if resp.status_code >= 400:
                raise UpstreamError(
                    f"upstream {upstream.url}{path} refused the request: HTTP "
                    f"{resp.status_code} {resp.text[:300]}",
                    code="upstream_rejected",
                )
            upstream.failures = 0
            return resp.json()
        raise ServiceUnavailableError(
            "no upstream server answered (" + "; ".join(errors) + "); check "
            "the upstream URLs and that the servers are running",
            code="upstream_unavailable",
        )

    def _mark_down(self, upstream: _Upstream) -> None:
        upstream.failures += 1
        upstream.down_until = time.monotonic() + self._settings.upstream_markdown_s

    async def _resolve_model(self) -> str:
        if self._model_name is None:
            await self._list_models()
        assert self._model_name is not None
        return self._model_name

    async def _list_models(self) -> None:
        """The upstream's base model (unless ``--upstream-model`` names it) and its adapters:
        the cards whose ``parent`` is the base (vLLM's listing of ``--lora-modules``)."""
        listing = await self._request("GET", "/v1/models")
        try:
            cards = [c for c in listing["data"] if isinstance(c, dict)]
            if self._model_name is None:
                self._model_name = str(next(c["id"] for c in cards if not c.get("parent")))
        except (KeyError, TypeError, StopIteration) as exc:
            raise UpstreamError(
                "upstream /v1/models lists no model; name one with --upstream-model"
            ) from exc
        self._adapters = {
            str(c["id"]): f"upstream:{c.get('root') or c['id']}"
            for c in cards
            if c.get("parent") == self._model_name and "id" in c
        }

    async def _refresh_adapters(self) -> None:
        while True:
            with contextlib.suppress(ServiceUnavailableError, UpstreamError):
                await self._list_models()
            await asyncio.sleep(ADAPTER_REFRESH_S)

    def adapter_revisions(self) -> dict[str, str]:
        return dict(self._adapters)

    async def _completion(self, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """The first choice and the completion token count (exact: one prompt per call), on
        the call's adapter when it names one."""
        body = {"model": current_adapter.get() or await self._resolve_model(), **body}
        self._active += 1
        try:
            reply = await self._request("POST", "/v1/completions", body)
        finally:
            self._active -= 1
        try:
            usage = reply.get("usage") or {}
            return dict(reply["choices"][0]), int(usage.get("completion_tokens") or 0)
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise UpstreamError(f"upstream completion has no choices: {str(reply)[:300]}") from exc

    # --- engine API --------------------------------------------------------------------------

    async def score(
        self, prompt_ids: list[list[int]], output_ids: list[list[int]]
    ) -> list[list[float]]:
        async def one(prompt: list[int], output: list[int]) -> list[float]:
            if not output:
                return []
            choice, _ = await self._completion(
                {"prompt": prompt + output, "max_tokens": 1, "temperature": 0,
                 "prompt_logprobs": 0, "echo": True}
            )  # fmt: skip
            entries = (choice.get("prompt_logprobs") or [])[len(prompt) :]
            if len(entries) != len(output):
                raise UpstreamError(
                    f"upstream returned {len(entries)} prompt log-probs for {len(output)} output "
                    "tokens; the upstream must support prompt_logprobs (vLLM does)"
                )
            return [
                float(entry[str(tok)]["logprob"])
                for entry, tok in zip(entries, output, strict=True)
            ]

        pairs = zip(prompt_ids, output_ids, strict=True)
        return list(await asyncio.gather(*(one(p, o) for p, o in pairs)))

    async def generate(
        self,
        prompts: list[list[int]],
        max_new_tokens: int,
        stop: Sequence[str],
        sampling: Sampling | None = None,
    ) -> list[Generation]:
        upstream_stop = minimal_stops(stop)[:OPENAI_MAX_STOP]

        async def one(i: int, prompt: list[int]) -> Generation:
            body: dict[str, Any] = {"prompt": prompt, "max_tokens": max_new_tokens,
                                    "temperature": 0, "stop": upstream_stop}  # fmt: skip
            if sampling is not None:
                body.update(temperature=sampling.temperature, top_p=sampling.top_p)
                if sampling.seeds:
                    body["seed"] = sampling.seed(i)
            choice, generated = await self._completion(body)
            # Stops beyond the upstream's limit are applied here (the upstream generated past
            # them, so the token count may be higher than vLLM in-process would report).
            text, _ = cut_at_stop(str(choice.get("text", "")), stop)
            return Generation(
                text=text,
                num_tokens=generated,
                finish_reason=str(choice.get("finish_reason") or "length"),
            )

        return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts))))
