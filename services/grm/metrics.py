"""Prometheus metrics of one GRM app, in the app's own registry (tests run several apps)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class GrmMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "rlmec_grm_requests", "HTTP requests by endpoint and status.", ["endpoint", "status"],
            registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "rlmec_grm_request_latency_seconds", "Request latency by endpoint.", ["endpoint"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        # `model`: the base model's id or the adapter's name (a GRM per team, issue 28).
        self.samples = Counter(
            "rlmec_grm_samples", "Samples processed by endpoint and model.", ["endpoint", "model"],
            registry=r,
        )  # fmt: skip
        self.tokens_scored = Counter(
            "rlmec_grm_tokens_scored", "Output tokens teacher-forced (log-probs), by model.",
            ["model"], registry=r,
        )  # fmt: skip
        self.tokens_prompt = Counter(
            "rlmec_grm_tokens_prompt", "Prompt tokens sent to the engine, by model.", ["model"],
            registry=r,
        )  # fmt: skip
        self.tokens_generated = Counter(
            "rlmec_grm_tokens_generated", "Tokens generated (locate, rewrite), by model.",
            ["model"], registry=r,
        )  # fmt: skip
        self.errors = Counter("rlmec_grm_errors", "Errors by type.", ["type"], registry=r)
        self.in_flight = Gauge(
            "rlmec_grm_requests_in_flight", "Requests holding an engine slot.", registry=r
        )
        self.waiting = Gauge(
            "rlmec_grm_requests_waiting", "Requests waiting for an engine slot.", registry=r
        )
        self.queue_depth = Gauge(
            "rlmec_grm_engine_queue_depth", "Sequences queued or running in the engine.",
            registry=r,
        )  # fmt: skip

    def track_queue_depth(self, depth: Callable[[], int]) -> None:
        self.queue_depth.set_function(lambda: float(depth()))
