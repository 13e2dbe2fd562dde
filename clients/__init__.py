"""Python SDK of the rlmec services: installs without torch (``pip install rlmec``).

>>> from rlmec.clients import Client
>>> with Client("http://localhost:8002", api_key="team-key") as client:  # doctest: +SKIP
...     scored = client.token_rewards([{"question": ..., "reference_solution": ...,
...                                     "prediction": ...}])
"""

from rlmec.clients._base import RetryPolicy, parse_retry_after
from rlmec.clients.async_ import AsyncClient, AsyncGrmClient
from rlmec.clients.errors import (
    APIConnectionError,
    APIResponseError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    QueueFullError,
    RateLimitError,
    RlmecClientError,
    ServiceUnavailableError,
)
from rlmec.clients.sync import Client, GrmClient
from rlmec.shared.queue import BatchStatus, PushResult

__all__ = [
    "APIConnectionError",
    "APIResponseError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncClient",
    "AsyncGrmClient",
    "AuthenticationError",
    "BadRequestError",
    "BatchStatus",
    "Client",
    "GrmClient",
    "InternalServerError",
    "NotFoundError",
    "PermissionDeniedError",
    "PushResult",
    "QueueFullError",
    "RateLimitError",
    "RetryPolicy",
    "RlmecClientError",
    "ServiceUnavailableError",
    "parse_retry_after",
]
