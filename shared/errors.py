"""The one error envelope and the domain exceptions every part raises.

Wire shape (all services, all status codes): ``{"error": {"type", "message", "param", "code"}}``.
Services map :class:`RlmecError` subclasses to their ``status_code`` in one handler; anything
else is a 500 (never a 400). No FastAPI import here: status codes are plain ints.

One class per concept on both sides of the wire: the SDK's exceptions
(:mod:`rlmec.clients.errors`) subclass the class of the same name here, so
``except rlmec.shared.errors.RateLimitError`` catches a quota refusal whether a service raised
it or the SDK received it.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field


class ErrorBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="Error class, e.g. 'invalid_request', 'rate_limited'.")
    message: str = Field(description="What went wrong and how to fix it.")
    param: str | None = Field(default=None, description="The offending field path, if any.")
    code: str | None = Field(default=None, description="Machine-readable detail code.")


class ErrorEnvelope(BaseModel):
    model_config = ConfigDict(extra="forbid")

    error: ErrorBody


class RlmecError(Exception):
    """Base of all domain errors. Subclasses fix ``type`` and ``status_code``."""

    type: ClassVar[str] = "internal_error"
    status_code: ClassVar[int] = 500

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    def envelope(self) -> ErrorEnvelope:
        return ErrorEnvelope(
            error=ErrorBody(type=self.type, message=self.message, param=self.param, code=self.code)
        )

    def to_dict(self) -> dict[str, Any]:
        return self.envelope().model_dump()


class InvalidRequestError(RlmecError):
    type = "invalid_request"
    status_code = 422


class PayloadTooLargeError(RlmecError):
    type = "payload_too_large"
    status_code = 413


class AuthenticationError(RlmecError):
    type = "authentication_error"
    status_code = 401


class PermissionDeniedError(RlmecError):
    type = "permission_denied"
    status_code = 403


class NotFoundError(RlmecError):
    type = "not_found"
    status_code = 404


class RetryableError(RlmecError):
    """A transient error: the same request may succeed later. ``retry_after`` seconds (whole,
    at least 1) go to the ``Retry-After`` header."""

    def __init__(self, message: str, *, retry_after: float = 1.0, **kwargs: Any) -> None:
        self.retry_after = max(1, round(retry_after))
        headers = dict(kwargs.pop("headers", None) or {})
        headers["Retry-After"] = str(self.retry_after)
        super().__init__(message, headers=headers, **kwargs)


class RateLimitError(RetryableError):
    """429: over quota, or a dependency is saturated."""

    type = "rate_limited"
    status_code = 429


class QueueFullError(RateLimitError):
    """429 on a rollout push: the team's queue is at its bound (``code="queue_full"``)."""

    @classmethod
    def for_team(
        cls, team: str, stream: str, length: int, limit: int, retry_after: float
    ) -> QueueFullError:
        queued = stream.startswith("rollouts")
        what = "waiting to be scored" if queued else "scored and not yet trained on"
        who = "reward workers" if queued else "trainer"
        unit = "bytes of samples" if stream.endswith("_bytes") else "samples"
        error = cls(
            f"team {team!r} has {length} {unit} {what}, its bound is {limit}; retry after "
            f"{max(1, round(retry_after))} s, or let the {who} catch up",
            retry_after=retry_after,
            code="queue_full",
        )
        error.team, error.stream = team, stream
        return error

    team: str | None = None
    stream: str | None = None


class ServiceUnavailableError(RetryableError):
    """503: a dependency (GRM, Redis, engine) is down or not ready."""

    type = "service_unavailable"
    status_code = 503


class BodyTimeoutError(RlmecError):
    """The client did not finish sending its request body in time."""

    type = "request_timeout"
    status_code = 408


class RequestTimeoutError(RlmecError):
    """504: the work did not finish within the service's per-request deadline."""

    type = "timeout"
    status_code = 504


class ClientDisconnectedError(RlmecError):
    """499: the caller went away and its work was cancelled. Nobody reads this response."""

    type = "client_closed_request"
    status_code = 499


class UpstreamError(RlmecError):
    """502: a dependency answered, but with something unusable."""

    type = "upstream_error"
    status_code = 502


class GrmOutputError(RlmecError):
    """The GRM produced output that violates the method (e.g. a located step out of range)."""

    type = "grm_output_error"
    status_code = 502


_DEPRECATED = {"RateLimitedError": RateLimitError}


def __getattr__(name: str) -> Any:
    # 0.1 called the 429 class RateLimitedError (the SDK RateLimitError); one name since 0.2.
    if name in _DEPRECATED:
        warnings.warn(
            f"rlmec.shared.errors.{name} is deprecated; use {_DEPRECATED[name].__name__}",
            DeprecationWarning,
            stacklevel=2,
        )
        return _DEPRECATED[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
