"""The one error envelope and the domain exceptions every part raises.

Wire shape (all services, all status codes): ``{"error": {"type", "message", "param", "code"}}``.
Services map :class:`RlmecError` subclasses to their ``status_code`` in one handler; anything
else is a 500 (never a 400). No FastAPI import here: status codes are plain ints.
"""

from __future__ import annotations

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


class RateLimitedError(RetryableError):
    """429: over quota, or a dependency is saturated."""

    type = "rate_limited"
    status_code = 429


class ServiceUnavailableError(RetryableError):
    """503: a dependency (GRM, Redis, engine) is down or not ready."""

    type = "service_unavailable"
    status_code = 503


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
