"""Exceptions the SDK raises. Every HTTP error carries the parsed error envelope
(:class:`rlmec.shared.errors.ErrorBody`), so callers branch on ``type``/``code``/``param``
instead of parsing text. A status error of a concept the services raise subclasses the
service's class of the same name (:mod:`rlmec.shared.errors`): one name, one class family.

Hierarchy::

    RlmecClientError
    ├── APIConnectionError          the request never got an answer
    │   └── APITimeoutError         ... because a timeout ran out
    ├── APIResponseError            a 2xx answer the SDK could not parse
    └── APIStatusError              a non-2xx answer (status_code, error, response)
        ├── BadRequestError         400, 409, 413, 422 and other 4xx
        ├── AuthenticationError     401
        ├── PermissionDeniedError   403
        ├── NotFoundError           404
        ├── RateLimitError          429 (retry_after)
        │   └── QueueFullError      429 on a rollout push: the team's queue is full
        ├── ServiceUnavailableError 503
        └── InternalServerError     500 and other 5xx
"""

from __future__ import annotations

import httpx

from rlmec.shared import errors as domain
from rlmec.shared.errors import ErrorBody


class RlmecClientError(Exception):
    """Base of every exception raised by :mod:`rlmec.clients`."""


class APIConnectionError(RlmecClientError):
    """No HTTP answer: connection refused, DNS failure, connection reset."""

    def __init__(self, message: str, *, request: httpx.Request | None = None) -> None:
        super().__init__(message)
        self.request = request


class APITimeoutError(APIConnectionError):
    """The connect, read, write or pool timeout ran out (``Client(timeout=...)``)."""


class APIResponseError(RlmecClientError):
    """The service answered 2xx with a body that does not match the documented schema
    (usually a client/server version mismatch)."""

    def __init__(self, message: str, *, response: httpx.Response) -> None:
        super().__init__(message)
        self.response = response


class APIStatusError(RlmecClientError):
    """A non-2xx answer. ``error`` is the parsed envelope; when the body was not an envelope
    (a proxy's HTML page, say) ``error.type`` is ``"http_error"`` and the message quotes it."""

    def __init__(self, message: str, *, response: httpx.Response, error: ErrorBody) -> None:
        super().__init__(message)
        self.response = response
        self.status_code = response.status_code
        self.error = error
        self.message, self.param, self.code = message, error.param, error.code

    @property
    def request_id(self) -> str | None:
        return self.response.headers.get("x-request-id")


class BadRequestError(APIStatusError):
    """The request was invalid (4xx other than 401/403/404/429); ``error.param`` names the
    offending field."""


class AuthenticationError(APIStatusError, domain.AuthenticationError):
    """401: missing or invalid API key (``api_key=`` or ``RLMEC_API_KEY``)."""


class PermissionDeniedError(APIStatusError, domain.PermissionDeniedError):
    """403: the key is valid but not allowed to do this."""


class NotFoundError(APIStatusError, domain.NotFoundError):
    """404: unknown route, batch id or model."""


class RateLimitError(APIStatusError, domain.RateLimitError):
    """429: over quota or saturated. ``retry_after`` is the server's ``Retry-After`` in
    seconds (``None`` when absent). Raised after the SDK's own retries are used up."""

    def __init__(
        self,
        message: str,
        *,
        response: httpx.Response,
        error: ErrorBody,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, response=response, error=error)
        self.retry_after = retry_after  # type: ignore[assignment]  # None: no Retry-After sent


class QueueFullError(RateLimitError, domain.QueueFullError):
    """429 on ``push_rollouts``: the team's rollout queue is full. Push again after
    ``retry_after`` seconds, or slow down generation."""


class ServiceUnavailableError(APIStatusError, domain.ServiceUnavailableError):
    """503: a dependency (GRM engine, Redis) is not ready."""


class InternalServerError(APIStatusError):
    """500 and other 5xx: a bug or an upstream failure on the service side."""


__all__ = [
    "APIConnectionError",
    "APIResponseError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "InternalServerError",
    "NotFoundError",
    "PermissionDeniedError",
    "QueueFullError",
    "RateLimitError",
    "RlmecClientError",
    "ServiceUnavailableError",
]
