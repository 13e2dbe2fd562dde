"""The reward service's backend: its async HTTP calls to the GRM service (wire schemas in
``shared/grm_schemas.py``). Not the SDK's :class:`rlmec.clients.GrmClient`, which is for users.

Batches are cut into chunks of ``batch_size`` and sent concurrently (at most
``max_concurrency`` calls in flight, round-robin over the GRM URLs). The calls in flight are
shared fairly: a free slot goes to the next team in turn (:class:`~.admission.FairSlots`), so
one team's backlog does not queue ahead of another team's call, and a team with no call in
flight starts one at once. Transient answers stay
transient: a GRM that cannot be reached, times out or answers 503/5xx raises
:class:`ServiceUnavailableError`, a saturated one (429) :class:`RateLimitError`, each with the
GRM's ``Retry-After``; the caller fails the whole request (nothing cached) and retries later.
Deterministic per-sample errors mark only their samples, without amplification: a sample over
the GRM's context (413 naming it) is reported and the rest re-sent once; a chunk over the
request budget is halved; another 4xx is isolated one sample at a time.
"""

from __future__ import annotations

import contextvars
import itertools
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from rlmec.services.reward.admission import FairSlots, current_team
from rlmec.shared.concurrency import gather_or_cancel
from rlmec.shared.errors import RateLimitError, ServiceUnavailableError
from rlmec.shared.grm_schemas import (
    TENANT_HEADER,
    TENANT_WEIGHT_HEADER,
    GrmSampleInput,
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

T = TypeVar("T")
R = TypeVar("R", bound=BaseModel)


@dataclass(frozen=True)
class GrmFailure:
    """A sample the GRM answered with a deterministic error for (becomes ``unscored`` with
    ``reason``)."""

    message: str
    reason: Literal["grm_error", "grm_input_too_long"] = "grm_error"


# The GRM model (a LoRA adapter's name; None: the base) the current task's calls are for: the
# pipeline sets the team's ``grm_adapter``, so a team never names another team's adapter.
current_grm_model: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "rlmec_grm_model", default=None
)


class GrmBackend:
    """Talks to one or more GRM services. ``busy_seconds`` accumulates the wall time during
    which at least one GRM call was in flight (for the "time outside the GRM" figure);
    ``calls`` counts HTTP calls made."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        timeout: float = 300.0,
        batch_size: int = 64,
        max_concurrency: int = 8,
        transport: httpx.AsyncBaseTransport | None = None,
        team_weights: Mapping[str, float] | None = None,
    ) -> None:
        self.urls = list(urls)
        self.batch_size = batch_size
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport)
        self.slots = FairSlots(max_concurrency, team_weights, quiet_teams_first=True)
        self._next_url = itertools.cycle(self.urls)
        self._in_flight = 0
        self._busy_since = 0.0
        self.busy_seconds = 0.0
        self.calls = 0

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- busy-time accounting ---------------------------------------------------------------

    def _enter(self) -> None:
        if self._in_flight == 0:
            self._busy_since = time.perf_counter()
        self._in_flight += 1

    def _leave(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self.busy_seconds += time.perf_counter() - self._busy_since

    # --- raw calls ------------------------------------------------------------------------------

    async def _call(self, method: str, path: str, body: BaseModel | None = None) -> httpx.Response:
        """A call for the current team, in its lane of the fair slots."""
        # A call's share of the GRM is its samples: teams are charged for what they use.
        cost = len(getattr(body, "samples", None) or ()) or 1
        async with self.slots.slot(cost):
            self.calls += 1
            self._enter()
            try:
                return await self._request(method, path, body, self._tenant_headers())
            finally:
                self._leave()

    async def _request(
        self, method: str, path: str, body: BaseModel | None, headers: dict[str, str]
    ) -> httpx.Response:
        url = next(self._next_url) + path
        try:
            payload = body.model_dump(mode="json", exclude_none=True) if body else None
            response = await self._http.request(method, url, json=payload, headers=headers)
        except httpx.TimeoutException as exc:
            raise ServiceUnavailableError(
                f"the GRM at {url} did not answer in time ({type(exc).__name__}); check the "
                "GRM service or raise RLMEC_REWARD_GRM_TIMEOUT_S",
                code="grm_timeout",
            ) from exc
        except httpx.TransportError as exc:
            raise ServiceUnavailableError(
                f"the GRM at {url} is unreachable ({type(exc).__name__}: {exc}); start it "
                "or fix RLMEC_REWARD_GRM_URLS",
                code="grm_unreachable",
            ) from exc
        _raise_if_transient(url, response)
        return response

    def _tenant_headers(self) -> dict[str, str]:
        """The team the call is for: the GRM orders its engine's work between teams too, so a
        call sent here does not queue inside the GRM behind another team's backlog."""
        team = current_team.get()
        if not team:
            return {}
        weight = self.slots.weights.get(team, 1.0)
        return {TENANT_HEADER: team, TENANT_WEIGHT_HEADER: f"{weight:g}"}

    async def ready(self) -> None:
        """Raise unless a GRM's ``/ready`` (which asks its engine) answers 200. ``/v1/models``
        is not enough: a GRM whose engine died still lists its model. Outside the GRM slots:
        a readiness probe must not queue behind the teams' work."""
        url = next(self._next_url) + "/ready"
        try:
            response = await self._http.get(url)
        except httpx.HTTPError as exc:
            raise ServiceUnavailableError(f"the GRM at {url} is unreachable: {exc!r}") from exc
        if response.status_code != 200:
            raise ServiceUnavailableError(
                f"the GRM at {url} is not ready ({response.status_code}): {_error_text(response)}"
            )

    async def model_card(self) -> ModelCard:
        """The base model of the first GRM that answers ``/v1/models``."""
        return (await self.model_cards())[0]

    async def model_cards(self) -> list[ModelCard]:
        """What the first GRM that answers ``/v1/models`` serves: the base model, then its
        LoRA adapters. Outside the fair slots, as :meth:`ready`: the service's own bookkeeping
        is no team's work, and in a busy team's lane it queued behind that team's backlog
        while every team waited for it (issue 45, P1)."""
        response = await self._request("GET", "/v1/models", None, {})
        if response.status_code != 200:
            raise ServiceUnavailableError(
                f"GRM /v1/models answered {response.status_code}: {_error_text(response)}",
                code="grm_error",
            )
        models = ModelList.model_validate_json(response.content)
        if not models.data:
            raise ServiceUnavailableError("the GRM serves no model", code="grm_error")
        return models.data

    # --- batched calls --------------------------------------------------------------------------

    async def rewrite(
        self, samples: Sequence[RewriteInput], *, max_new_tokens: int
    ) -> list[RewriteResult | GrmFailure]:
        async def send(chunk: list[RewriteInput]) -> httpx.Response:
            req = RewriteRequest(
                samples=chunk, max_new_tokens=max_new_tokens, model=current_grm_model.get()
            )
            return await self._call("POST", "/v1/rewrite", req)

        return await self._batched(samples, send, RewriteResponse, "/v1/rewrite")

    async def score_rlmec(
        self, samples: Sequence[GrmSampleInput]
    ) -> list[ScoreResult | GrmFailure]:
        """§3.1 teacher-forced log-probs of each prediction (+EOS) in the scoring prompt."""

        async def send(chunk: list[GrmSampleInput]) -> httpx.Response:
            req = ScoreRequest(
                mode="rlmec", samples=chunk, add_eos=True, model=current_grm_model.get()
            )
            return await self._call("POST", "/v1/score", req)

        return await self._batched(samples, send, ScoreResponse, "/v1/score")

    async def tokenize(self, texts: Sequence[str]) -> list[TokenizeResult | GrmFailure]:
        """GRM token ids/strings/offsets of each text (+EOS), as ``/v1/score`` would report
        them for it as an output; no forward pass."""

        async def send(chunk: list[str]) -> httpx.Response:
            return await self._call("POST", "/v1/tokenize", TokenizeRequest(texts=chunk))

        return await self._batched(texts, send, TokenizeResponse, "/v1/tokenize")

    async def _batched(
        self,
        inputs: Sequence[T],
        send: Callable[[list[T]], Awaitable[httpx.Response]],
        response_type: type[Any],
        path: str,
    ) -> list[Any]:
        size = self.batch_size
        chunks = [list(inputs[i : i + size]) for i in range(0, len(inputs), size)]
        # One chunk hit a transient error: the request fails whole, the other chunks cancelled.
        parts = await gather_or_cancel(
            *(self._chunk(chunk, send, response_type, path) for chunk in chunks)
        )
        return [result for part in parts for result in part]

    async def _chunk(
        self,
        chunk: list[T],
        send: Callable[[list[T]], Awaitable[httpx.Response]],
        response_type: type[Any],
        path: str,
    ) -> list[Any]:
        response = await send(chunk)
        if response.status_code == 200:
            try:
                results = response_type.model_validate_json(response.content).results
            except ValidationError as exc:
                return [GrmFailure(f"GRM {path} sent an unreadable answer: {exc}")] * len(chunk)
            if len(results) != len(chunk):
                msg = f"GRM {path} answered {len(results)} results for {len(chunk)} inputs"
                return [GrmFailure(msg)] * len(chunk)
            return list(results)
        if response.status_code == 413:
            return await self._over_budget(chunk, response, send, response_type, path)
        if 400 <= response.status_code < 500 and len(chunk) > 1:
            # One odd sample fails the whole chunk: retry one by one so only it is marked.
            singles = await gather_or_cancel(
                *(self._chunk([item], send, response_type, path) for item in chunk)
            )
            return [part[0] for part in singles]
        msg = f"GRM {path} answered {response.status_code}: {_error_text(response)}"
        return [GrmFailure(msg)] * len(chunk)

    async def _over_budget(
        self,
        chunk: list[T],
        response: httpx.Response,
        send: Callable[[list[T]], Awaitable[httpx.Response]],
        response_type: type[Any],
        path: str,
    ) -> list[Any]:
        """A 413 checked before any GRM work: the samples it names are over the context
        (marked, the others re-sent once), or the chunk is over the request budget (halved)."""
        over = {i for i in _sample_indices(response) if 0 <= i < len(chunk)}
        if over:
            failure = GrmFailure(f"GRM {path}: {_error_text(response)}", "grm_input_too_long")
            rest = [item for i, item in enumerate(chunk) if i not in over]
            done = iter(await self._chunk(rest, send, response_type, path) if rest else [])
            return [failure if i in over else next(done) for i in range(len(chunk))]
        if len(chunk) > 1:
            half = len(chunk) // 2
            parts = await gather_or_cancel(
                self._chunk(chunk[:half], send, response_type, path),
                self._chunk(chunk[half:], send, response_type, path),
            )
            return [*parts[0], *parts[1]]
        return [GrmFailure(f"GRM {path}: {_error_text(response)}", "grm_input_too_long")]


def _raise_if_transient(url: str, response: httpx.Response) -> None:
    """429 and 5xx mean "later", never "this sample is bad"."""
    status = response.status_code
    if status != 429 and status < 500:
        return
    retry_after = _retry_after(response)
    what = f"the GRM at {url} answered {status}: {_error_text(response)}"
    if status == 429:
        raise RateLimitError(
            f"{what}; it is saturated, retry later", retry_after=retry_after, code="grm_saturated"
        )
    raise ServiceUnavailableError(
        f"{what}; retry later", retry_after=retry_after, code="grm_unavailable"
    )


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(1.0, float(response.headers.get("retry-after", "1")))
    except ValueError:
        return 1.0


def _sample_indices(response: httpx.Response) -> list[int]:
    """The samples a GRM 413 names (``param`` = ``samples.3`` or ``samples.3,samples.7``)."""
    try:
        paths = str(response.json()["error"]["param"]).split(",")
        return [int(index) for field, _, index in (p.rpartition(".") for p in paths) if field]
    except (ValueError, KeyError, TypeError):
        return []


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
        return str(body["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:300]
