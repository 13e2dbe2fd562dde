"""The transport-free core the sync and async clients share: settings checks, request
descriptions, retry decisions and response/error parsing. Nothing here does I/O, so the two
clients differ only in how they send a request and how they sleep."""

from __future__ import annotations

import email.utils
import math
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from rlmec.clients import errors
from rlmec.shared.errors import ErrorBody, ErrorEnvelope

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

API_KEY_ENV = "RLMEC_API_KEY"
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 20
# Total seconds a call may spend waiting between retries of 429/503: long enough for a loaded
# GRM to work through a few batches (and for the reward service's own admission wait).
DEFAULT_MAX_RETRY_WAIT = 600.0
# Statuses that mean "same request, later": over quota / queue full (429) and a dependency
# not ready yet (503). Everything else is final: retrying a 4xx cannot help, and retrying a
# 500 or a timeout could score (or enqueue) the same batch twice.
RETRY_STATUSES = frozenset({429, 503})
_USER_AGENT = "rlmec-python/0.1"


URL_ENV = "RLMEC_URL"


def _check_base_url(base_url: str | None) -> str:
    """The service's root: ``base_url`` or ``$RLMEC_URL``, with or without a trailing ``/v1``
    (the routes carry their own ``/v1``)."""
    if base_url is None:
        base_url = os.environ.get(URL_ENV)
        if not base_url:
            raise ValueError(f"no service URL: pass base_url or set {URL_ENV}=http://HOST:PORT")
    if not base_url.startswith(("http://", "https://")):
        raise ValueError(
            f"base_url {base_url!r} must start with http:// or https://, "
            "e.g. 'http://localhost:8002'"
        )
    return base_url.rstrip("/").removesuffix("/v1")


def _check_timeout(timeout: float | httpx.Timeout) -> httpx.Timeout:
    """Finite timeouts only: an infinite one turns a stuck service into a stuck trainer."""
    if isinstance(timeout, httpx.Timeout):
        parts = [timeout.connect, timeout.read, timeout.write, timeout.pool]
        if any(p is None for p in parts):
            raise ValueError(
                "every part of the httpx.Timeout must be finite (connect, read, write, pool); "
                "pass numbers, e.g. httpx.Timeout(60.0)"
            )
        return timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise ValueError(f"timeout {timeout!r} must be a number of seconds, e.g. 60.0")
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"timeout {timeout!r} must be a finite number of seconds > 0, e.g. 60.0")
    return httpx.Timeout(float(timeout), connect=min(float(timeout), 10.0))


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter on 429/503, honouring ``Retry-After``, within a
    total waiting budget.

    Attempt ``n`` (from 0) waits ``Retry-After`` when the server sent one, else a random
    time in ``[base * 2**n / 2, base * 2**n]`` capped at ``max_backoff``. Retries stop after
    ``max_retries`` or once the waits would pass ``max_wait`` seconds in all: a ``Retry-After``
    longer than what is left is not waited for, the error is raised at once with
    ``retry_after`` set, so a caller is never blocked longer than it allowed without knowing why.
    """

    max_retries: int = DEFAULT_MAX_RETRIES
    backoff_base: float = 0.5
    max_backoff: float = 30.0
    max_wait: float = DEFAULT_MAX_RETRY_WAIT
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries ({self.max_retries}) must be >= 0; 0 disables retries")
        if self.backoff_base < 0 or self.max_backoff < 0:
            raise ValueError("backoff_base and max_backoff must be >= 0 seconds")
        if not math.isfinite(self.max_wait) or self.max_wait < 0:
            raise ValueError(
                f"max_retry_wait ({self.max_wait}) must be a finite number of seconds >= 0"
            )

    def delay(self, response: httpx.Response, attempt: int, waited: float = 0.0) -> float | None:
        """Seconds to wait before retrying ``response`` (``waited`` seconds were already spent
        waiting in this call), or ``None`` to give up."""
        if response.status_code not in RETRY_STATUSES or attempt >= self.max_retries:
            return None
        left = self.max_wait - waited
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        if retry_after is not None:
            return retry_after if retry_after <= left else None
        ceiling = min(self.max_backoff, self.backoff_base * (2**attempt))
        delay = self.rng.uniform(ceiling / 2, ceiling)
        return delay if delay <= left else None


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number (RFC 9110 delay-seconds) or an HTTP date."""
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API call, described without sending it: both clients execute the same ``Call``."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    body: Any = None
    is_push: bool = False


def model_parser(model: type[M]) -> Callable[[httpx.Response], M]:
    def parse(response: httpx.Response) -> M:
        try:
            return model.model_validate(response.json())
        except (ValueError, ValidationError) as exc:
            raise errors.APIResponseError(
                f"{response.request.method} {response.request.url.path} answered "
                f"{response.status_code} with a body that is not a {model.__name__}: {exc}; "
                "check that the client and service versions match",
                response=response,
            ) from exc

    return parse


def dict_parser(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError as exc:
        raise errors.APIResponseError(
            f"{response.request.url.path} answered {response.status_code} with non-JSON "
            f"body {response.text[:200]!r}",
            response=response,
        ) from exc
    if not isinstance(data, dict):
        raise errors.APIResponseError(
            f"{response.request.url.path} answered a JSON {type(data).__name__}, expected an "
            "object",
            response=response,
        )
    return data


def _error_body(response: httpx.Response) -> ErrorBody:
    """The envelope when there is one; otherwise a synthetic body quoting what came back
    (a proxy page, FastAPI's default ``{"detail": ...}``) so nothing is lost."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        try:
            return ErrorEnvelope.model_validate(data).error
        except ValidationError:
            if "detail" in data:
                return ErrorBody(type="http_error", message=str(data["detail"]))
    text = response.text.strip()[:500] or response.reason_phrase
    return ErrorBody(type="http_error", message=f"HTTP {response.status_code}: {text}")


def status_error(response: httpx.Response, *, is_push: bool = False) -> errors.APIStatusError:
    """Map a non-2xx response onto the exception hierarchy of :mod:`rlmec.clients.errors`."""
    body = _error_body(response)
    status = response.status_code
    where = f"{response.request.method} {response.request.url.path}"
    message = f"{where} failed with {status} {body.type}: {body.message}"
    if body.param:
        message += f" (param: {body.param})"
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        # The queue marks a full queue with code "queue_full" (shared/queue.py); a push
        # refused without a code is treated the same, a quota refusal keeps its own type.
        queue_full = body.code == "queue_full" or (is_push and body.code is None)
        cls: type[errors.RateLimitError] = (
            errors.QueueFullError if queue_full else errors.RateLimitError
        )
        return cls(message, response=response, error=body, retry_after=retry_after)
    by_status: dict[int, type[errors.APIStatusError]] = {
        401: errors.AuthenticationError,
        403: errors.PermissionDeniedError,
        404: errors.NotFoundError,
        503: errors.ServiceUnavailableError,
    }
    if status in by_status:
        return by_status[status](message, response=response, error=body)
    if status >= 500:
        return errors.InternalServerError(message, response=response, error=body)
    return errors.BadRequestError(message, response=response, error=body)


def transport_error(exc: httpx.TransportError, url: str) -> errors.APIConnectionError:
    if isinstance(exc, httpx.TimeoutException):
        return errors.APITimeoutError(
            f"request to {url} timed out ({type(exc).__name__}); raise timeout= or check "
            "the service's load",
            request=exc.request,
        )
    return errors.APIConnectionError(
        f"could not reach {url} ({type(exc).__name__}: {exc}); check the URL and that the "
        "service is running",
        request=getattr(exc, "_request", None),
    )


class ClientCore:
    """Settings shared by a sync and an async client: base URL, headers, timeout, retries."""

    def __init__(
        self,
        base_url: str | None,
        *,
        api_key: str | None,
        timeout: float | httpx.Timeout,
        max_retries: int,
        backoff_base: float = 0.5,
        max_backoff: float = 30.0,
        max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = _check_base_url(base_url)
        self.timeout = _check_timeout(timeout)
        self.retry = RetryPolicy(
            max_retries=max_retries,
            backoff_base=backoff_base,
            max_backoff=max_backoff,
            max_wait=max_retry_wait,
        )
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        self.headers = {"User-Agent": _USER_AGENT, "Accept": "application/json"}
        if key:
            self.headers["Authorization"] = f"Bearer {key}"
        self.headers.update(headers or {})

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"
