"""Blocking clients: :class:`Client` (reward service) and :class:`GrmClient` (GRM service)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from rlmec.clients import _calls
from rlmec.clients._base import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_MAX_RETRY_WAIT,
    DEFAULT_TIMEOUT,
    Call,
    ClientCore,
    status_error,
    transport_error,
)
from rlmec.clients._calls import (
    GrmSampleLike,
    ParamsLike,
    RewriteLike,
    SampleLike,
    ScoreItemLike,
)
from rlmec.shared.grm_schemas import (
    AdapterResponse,
    LocateResponse,
    ModelList,
    RewriteResponse,
    ScoreResponse,
    TokenizeResponse,
)
from rlmec.shared.queue import AckResult, BatchStatus, PushResult, ScoredBatch, ScoredDelivery
from rlmec.shared.schemas import TokenRewardsResponse, UsageResponse

T = TypeVar("T")


class _SyncBase:
    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        backoff_base: float = 0.5,
        max_backoff: float = 30.0,
        max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._core = ClientCore(
            base_url,
            api_key=api_key,
            timeout=timeout,
            max_retries=max_retries,
            backoff_base=backoff_base,
            max_backoff=max_backoff,
            max_retry_wait=max_retry_wait,
            headers=headers,
        )
        self._http = httpx.Client(
            base_url=self._core.base_url,
            headers=self._core.headers,
            timeout=self._core.timeout,
            transport=transport,
        )

    @property
    def base_url(self) -> str:
        return self._core.base_url

    def _send(self, call: Call[T]) -> T:
        attempt, waited = 0, 0.0
        while True:
            try:
                response = self._http.request(call.method, call.path, json=call.body)
            except httpx.TransportError as exc:
                raise transport_error(exc, self._core.url(call.path)) from exc
            if response.is_success:
                return call.parse(response)
            delay = self._core.retry.delay(response, attempt, waited)
            if delay is None:
                raise status_error(response, is_push=call.is_push)
            response.close()
            time.sleep(delay)
            attempt, waited = attempt + 1, waited + delay

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Client(_SyncBase):
    """Blocking client of the reward service.

    >>> with Client("http://localhost:8002", api_key="team-key") as client:  # doctest: +SKIP
    ...     result = client.token_rewards([sample]).results[0]

    Retries 429 and 503 with exponential backoff and jitter, waiting ``Retry-After`` when the
    server sends it, up to ``max_retries`` times and ``max_retry_wait`` seconds of waiting in
    all (600: long enough for a loaded GRM); every other error is raised at once
    (see :mod:`rlmec.clients.errors`). ``base_url`` defaults to ``$RLMEC_URL`` (with or without
    ``/v1``), ``api_key`` to ``$RLMEC_API_KEY``.
    """

    def token_rewards(
        self,
        samples: Sequence[SampleLike],
        *,
        params: ParamsLike = None,
        policy_tokenizer: str | None = None,
    ) -> TokenRewardsResponse:
        """RLMEC token rewards and imitation weights (§3), results in the samples' order.
        More than 1024 samples (the service's bound per request) go in consecutive requests
        of at most 1024; an error in one raises, with nothing of the call returned."""
        parts = [
            self._send(_calls.token_rewards(part, params, policy_tokenizer))
            for part in _calls.request_slices(samples)
        ]
        return _calls.joined(parts)

    def get_reward(
        self,
        query: Sequence[str],
        *,
        prompts: Sequence[str] | None = None,
        labels: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """OpenRLHF remote reward: ``{"rewards", "scores", "extra_logs"}``."""
        return self._send(_calls.get_reward(query, prompts, labels))

    def push_rollouts(
        self,
        samples: Sequence[SampleLike],
        *,
        batch_id: str | None = None,
        params: ParamsLike = None,
        policy_tokenizer: str | None = None,
        policy_version: int | None = None,
    ) -> PushResult:
        """Enqueue a batch for scoring; raises :class:`QueueFullError` when the team's queue
        stays full through the retries. ``policy_version``: the policy version that generated
        it (an online trainer skips batches too far behind)."""
        return self._send(
            _calls.push_rollouts(samples, batch_id, params, policy_tokenizer, policy_version)
        )

    def rollout_status(self, batch_id: str) -> BatchStatus:
        return self._send(_calls.rollout_status(batch_id))

    def rollout_result(self, batch_id: str) -> ScoredBatch:
        """A scored batch's results in push order (404 until it is scored)."""
        return self._send(_calls.rollout_result(batch_id))

    def pull_scored(
        self,
        max_batches: int = 1,
        *,
        wait_ms: int = 0,
        consumer: str = "http-0",
        redeliver_after_s: int = 300,
    ) -> list[ScoredDelivery]:
        """Your team's next scored batches, for a trainer without Redis access; acknowledge
        each with :meth:`ack_scored` after the step that used it (else it comes back after
        ``redeliver_after_s``)."""
        call = _calls.pull_scored(max_batches, wait_ms, consumer, redeliver_after_s)
        return self._send(call)

    def ack_scored(self, entry_ids: Sequence[str]) -> AckResult:
        """Acknowledge pulled batches by ``entry_id``: they are done."""
        return self._send(_calls.ack_scored(entry_ids))

    def usage(self) -> UsageResponse:
        """Your team's usage counters (requests, samples, scored, rate-limited, ...)."""
        return self._send(_calls.usage())

    def health(self) -> dict[str, Any]:
        return self._send(_calls.health())


class GrmClient(_SyncBase):
    """Blocking client of the GRM service (``/v1/locate``, ``/v1/rewrite``, ``/v1/score``,
    ``/v1/tokenize``, ``/v1/models``); same retries and errors as :class:`Client`."""

    def locate(
        self, samples: Sequence[GrmSampleLike], *, max_new_tokens: int = 32
    ) -> LocateResponse:
        return self._send(_calls.locate(samples, max_new_tokens))

    def rewrite(
        self,
        samples: Sequence[RewriteLike],
        *,
        max_new_tokens: int = 512,
        locate_max_new_tokens: int = 32,
    ) -> RewriteResponse:
        return self._send(_calls.rewrite(samples, max_new_tokens, locate_max_new_tokens))

    def score(
        self,
        *,
        items: Sequence[ScoreItemLike] | None = None,
        samples: Sequence[GrmSampleLike] | None = None,
        add_eos: bool = True,
    ) -> ScoreResponse:
        return self._send(_calls.score(items, samples, add_eos))

    def tokenize(self, texts: Sequence[str], *, add_eos: bool = True) -> TokenizeResponse:
        """GRM token ids, strings and offsets of each text (+EOS), as ``score`` reports them
        for it as an output, without a forward pass."""
        return self._send(_calls.tokenize(texts, add_eos))

    def models(self) -> ModelList:
        return self._send(_calls.models())

    def load_adapter(self, name: str, path: str) -> AdapterResponse:
        """Load the LoRA adapter in ``path`` (on the GRM's machine) as model ``name``, without
        a restart. Needs the admin token as ``api_key`` (``RLMEC_GRM_ADMIN_TOKEN_FILE``)."""
        return self._send(_calls.load_adapter(name, path))

    def unload_adapter(self, name: str) -> AdapterResponse:
        """Unload adapter ``name`` once the calls using it are done (admin token)."""
        return self._send(_calls.unload_adapter(name))

    def health(self) -> dict[str, Any]:
        return self._send(_calls.health())
