"""The one error envelope and the status codes of the domain errors."""

from __future__ import annotations

import pytest

from rlmec.shared import errors
from rlmec.shared.errors import ErrorEnvelope, GrmOutputError, RateLimitError, RlmecError
from rlmec.shared.prompts import parse_located_step


@pytest.mark.parametrize(
    ("cls", "type_", "status"),
    [
        (errors.InvalidRequestError, "invalid_request", 422),
        (errors.PayloadTooLargeError, "payload_too_large", 413),
        (errors.AuthenticationError, "authentication_error", 401),
        (errors.PermissionDeniedError, "permission_denied", 403),
        (errors.NotFoundError, "not_found", 404),
        (errors.ServiceUnavailableError, "service_unavailable", 503),
        (errors.UpstreamError, "upstream_error", 502),
        (errors.GrmOutputError, "grm_output_error", 502),
        (errors.RlmecError, "internal_error", 500),
    ],
)
def test_types_and_status_codes(cls: type[RlmecError], type_: str, status: int) -> None:
    exc = cls("what went wrong; how to fix it", param="samples.0.prediction", code="c")
    assert (exc.type, exc.status_code) == (type_, status)
    assert exc.to_dict() == {
        "error": {
            "type": type_,
            "message": "what went wrong; how to fix it",
            "param": "samples.0.prediction",
            "code": "c",
        }
    }
    assert str(exc) == "what went wrong; how to fix it"


def test_envelope_round_trips_and_forbids_extra_fields() -> None:
    body = {"error": {"type": "not_found", "message": "m", "param": None, "code": None}}
    assert ErrorEnvelope.model_validate(body).model_dump() == body
    with pytest.raises(ValueError):
        ErrorEnvelope.model_validate({"error": {**body["error"], "extra": 1}})


@pytest.mark.parametrize(("retry_after", "header"), [(0.2, "1"), (2.6, "3"), (30, "30")])
def test_rate_limited_sets_retry_after_in_whole_seconds(retry_after: float, header: str) -> None:
    exc = RateLimitError("slow down", retry_after=retry_after, headers={"X-Other": "1"})
    assert exc.status_code == 429
    assert exc.headers == {"X-Other": "1", "Retry-After": header}


def test_out_of_range_located_step_becomes_a_grm_output_error() -> None:
    """§2.4: a located step outside the prediction is an error of the GRM, reported as such."""
    located = parse_located_step("The first error step is [9]", 3)
    assert located.status == "out_of_range"
    exc = GrmOutputError(located.message, code="grm_out_of_range")
    assert exc.status_code == 502
    assert "9" in exc.to_dict()["error"]["message"]


def test_sdk_errors_are_the_services_concepts() -> None:
    """One class family per concept: the SDK's errors subclass the services' own."""
    import httpx

    from rlmec.clients import errors as sdk
    from rlmec.clients._base import status_error
    from rlmec.shared import errors as domain

    request = httpx.Request("POST", "http://svc/v1/rollouts")
    body = {"error": {"type": "rate_limited", "message": "full", "param": None,
                      "code": "queue_full"}}  # fmt: skip
    response = httpx.Response(429, json=body, headers={"Retry-After": "7"}, request=request)
    error = status_error(response, is_push=True)
    assert isinstance(error, sdk.QueueFullError)
    assert isinstance(error, domain.QueueFullError) and isinstance(error, domain.RateLimitError)
    assert (error.retry_after, error.status_code, error.code) == (7.0, 429, "queue_full")
    for name in ("AuthenticationError", "PermissionDeniedError", "NotFoundError",
                 "ServiceUnavailableError", "RateLimitError", "QueueFullError"):  # fmt: skip
        assert issubclass(getattr(sdk, name), getattr(domain, name)), name


def test_the_old_429_name_still_imports_with_a_warning() -> None:
    with pytest.warns(DeprecationWarning, match="RateLimitedError is deprecated"):
        assert errors.RateLimitedError is errors.RateLimitError
