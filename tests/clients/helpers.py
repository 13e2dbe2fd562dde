"""Payloads and a recording MockTransport for the SDK's unit tests."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx

SAMPLE: dict[str, Any] = {
    "id": "s1",
    "question": "What is 2 + 3?",
    "reference_solution": "2 + 3 = 5\nThe answer is: 5",
    "prediction": "2 + 3 = 6\nThe answer is: 6",
}


def scored_payload(n: int = 1) -> dict[str, Any]:
    result = {
        "id": "s1",
        "status": "scored",
        "question": SAMPLE["question"],
        "prediction": SAMPLE["prediction"],
        "correct": False,
        "predicted_answer": "6",
        "reference_answer": "5",
        "rewards": {
            "token_ids": [1, 2],
            "tokens": ["2", "</s>"],
            "offsets": [[0, 1], [26, 26]],
            "values": [0.0, -0.1],
        },
    }
    return {"results": [result] * n, "grm": {"model_id": "tiny", "revision": "abc"}}


def envelope(type_: str, message: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"type": type_, "message": message, "param": param, "code": None}}


class Recorder:
    """A MockTransport handler that answers from a script of responses and records requests."""

    def __init__(self, *responses: httpx.Response | Callable[[httpx.Request], Any]) -> None:
        self._responses: Iterator[Any] = iter(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        item = next(self._responses)
        return item(request) if callable(item) else item

    def body(self, i: int = -1) -> Any:
        return json.loads(self.requests[i].content)

    def sync(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)
