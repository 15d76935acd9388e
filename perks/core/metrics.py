"""Prometheus metrics: one registry per application, aggregated across worker processes when there are several."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    """The service's counters and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.http_requests = Counter(
            "perks_http_requests_total",
            "HTTP requests answered, by route template, method and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_latency = Histogram(
            "perks_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            ["method", "route"],
            registry=self.registry,
        )
        self.vouchers_issued = Counter(
            "perks_vouchers_issued_total",
            "Vouchers signed, by perk.",
            ["perk"],
            registry=self.registry,
        )
        self.redemptions = Counter(
            "perks_redemptions_total",
            "Redemption attempts by outcome: 'redeemed', 'replayed' or the refusal code.",
            ["outcome"],
            registry=self.registry,
        )
        self.redemption_latency = Histogram(
            "perks_redemption_duration_seconds",
            "Time to decide a redemption, from token to committed transaction.",
            registry=self.registry,
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (all worker processes' when several run)."""
        if os.environ.get(MULTIPROC_ENV):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
