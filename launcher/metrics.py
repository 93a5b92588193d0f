"""Prometheus metrics for ``/metrics``, in a registry owned by the app (no process globals).

Label values are bounded: routes are the route table's templates ("other" for anything else,
``routes.RouteLabels``) and models are the plan's model names, so clients cannot create
unbounded series.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class _PoolCollector(Collector):
    """Reads the pool's state at scrape time: loaded models, requests in flight, restarts."""

    def __init__(self, stats: Callable[[], dict[str, dict[str, int]]]) -> None:
        self.stats = stats

    def collect(self) -> Iterable:
        loaded = GaugeMetricFamily("modelyard_model_loaded", "1 when the model's worker is up", labels=["model"])
        in_flight = GaugeMetricFamily("modelyard_requests_in_flight", "Generations queued or running", labels=["model"])
        restarts = CounterMetricFamily("modelyard_worker_restarts", "Worker restarts after a crash", labels=["model"])
        for model, state in sorted(self.stats().items()):
            loaded.add_metric([model], state.get("loaded", 0))
            in_flight.add_metric([model], state.get("in_flight", 0))
            restarts.add_metric([model], state.get("restarts", 0))
        yield from (loaded, in_flight, restarts)


class Metrics:
    def __init__(self, pool_stats: Callable[[], dict[str, dict[str, int]]], route_label: Callable[[str], str]) -> None:
        self.route_label = route_label
        self.registry = CollectorRegistry()
        self.requests = Counter("modelyard_requests", "HTTP requests by route, model and status",
                                ["route", "model", "status"], registry=self.registry)
        self.duration = Histogram("modelyard_request_duration_seconds", "Request duration, to the last byte",
                                  ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.ttft = Histogram("modelyard_time_to_first_token_seconds", "Time to the first generated text",
                              ["model"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.prompt_tokens = Counter("modelyard_prompt_tokens", "Prompt tokens processed", ["model"],
                                     registry=self.registry)
        self.completion_tokens = Counter("modelyard_completion_tokens", "Tokens generated", ["model"],
                                         registry=self.registry)
        self.abandoned = Counter("modelyard_generations_abandoned", "Generations cancelled because the client "
                                 "went away before their end", ["model"], registry=self.registry)
        self.registry.register(_PoolCollector(pool_stats))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts requests by route, model and status and times them to the last byte (streams included)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500
        route = self.metrics.route_label(scope["path"])

        async def observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            # Only a served model's name becomes a label (set by the app once it resolved one):
            # a client cannot grow the label set with made-up names.
            model = scope.get("state", {}).get("model", "")
            self.metrics.requests.labels(route, model, str(status)).inc()
            self.metrics.duration.labels(route).observe(time.perf_counter() - started)
