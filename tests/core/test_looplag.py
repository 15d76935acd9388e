"""The event loop's callback probe: each callback asyncio's loop runs is timed on its own, by the CPU it used."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry, Histogram

from perks.core.looplag import BUCKETS, timed_callbacks


def spin(seconds: float) -> None:
    """Hold the loop with CPU work (not a sleep: the probe counts CPU time)."""
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


def bucket_counts(histogram: Histogram) -> dict[float, float]:
    return {float(s.labels["le"]): s.value for s in histogram.collect()[0].samples if s.name.endswith("_bucket")}


def test_a_callback_that_holds_the_loop_is_seen_as_long_and_short_ones_as_short():
    histogram = Histogram("probe", "test", buckets=BUCKETS, registry=CollectorRegistry())
    loop = asyncio.new_event_loop()
    original = asyncio.events.Handle._run
    try:
        with timed_callbacks(histogram):
            loop.call_soon(spin, 0.02)
            for _ in range(5):
                loop.call_soon(spin, 0.0001)
            loop.run_until_complete(asyncio.sleep(0))
        assert asyncio.events.Handle._run is original
    finally:
        loop.close()
    counts = bucket_counts(histogram)
    # The 20 ms callback is above 10 ms; the five short ones (and the loop's own few) are below 5 ms.
    assert counts[float("inf")] - counts[0.01] == 1
    assert counts[0.005] >= 5
    assert counts[0.005] == counts[float("inf")] - 1


def test_callbacks_outside_the_probe_are_not_timed():
    histogram = Histogram("probe", "test", buckets=BUCKETS, registry=CollectorRegistry())
    loop = asyncio.new_event_loop()
    try:
        with timed_callbacks(histogram):
            pass
        loop.call_soon(spin, 0.001)
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        loop.close()
    assert bucket_counts(histogram)[float("inf")] == 0
