"""Prometheus metrics of the server (``prometheus_client``), in a registry of its own per app."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServerMetrics:
    """Request counts by route and status, latency and batch size histograms, queue depth and
    the model's load time; ``gauge`` adds values read at each scrape."""

    def __init__(self, queue_depth: Callable[[], float], model_load_s: float | None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "qa_requests",
            "HTTP requests answered, by route and status code",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "qa_request_latency_seconds",
            "Time from admission to response of POST /answer",
            ["status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "qa_batch_size",
            "Items per model call",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        depth = Gauge("qa_queue_depth", "Items waiting for the model", registry=self.registry)
        depth.set_function(queue_depth)
        self.model_load = Gauge(
            "qa_model_load_seconds", "Seconds the model took to load", registry=self.registry
        )
        if model_load_s is not None:
            self.model_load.set(model_load_s)

    def gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A gauge whose value is ``read()`` at each scrape."""
        Gauge(name, documentation, registry=self.registry).set_function(read)

    def observe(self, route: str, status: int, seconds: float | None = None) -> None:
        self.requests.labels(route=route, status=str(status)).inc()
        if seconds is not None:
            self.latency.labels(status=str(status)).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
