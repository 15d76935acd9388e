"""How late the event loop wakes up: a timer task that sleeps a few milliseconds and measures how much longer it
took. A late wake-up means something held the loop (CPU work that belongs in an executor, a blocking call).

Exported as the histogram ``perks_event_loop_lag_seconds`` (every wake-up) and the gauge
``perks_event_loop_lag_max_seconds`` (the worst wake-up of the last ten seconds; the worst worker's when several
run). A wake-up is also late when the machine's cores are all busy elsewhere and the loop's thread waits for one;
``perks_event_loop_held_seconds`` counts only the part of the lateness that the loop's thread spent on a core
(at most the CPU time it used meanwhile): that part is the loop being held by its own work.

Lateness still mixes two things: one piece of work that holds the loop (a hash or an image rendered on it), and
many short ones queued in the same turn of a busy loop. With ``PERKS_LOOP_PROBE=callbacks`` (a diagnostic, used by
``scripts/bench``) every callback the loop runs -- a task's step, a protocol's ``data_received`` -- is timed on its
own, as the CPU time its thread spent in it, into ``perks_event_loop_callback_cpu_seconds``: the longest is how long
the loop was ever blocked. asyncio's own loop runs then, since uvloop's callbacks cannot be timed from Python; the
code on the loop is the same."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from collections import deque
from typing import AsyncIterator, Iterator

from aiohttp import web
from prometheus_client import Gauge, Histogram

from perks.core.appkeys import METRICS
from perks.core.background import running

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 0.01
WINDOW_SECONDS = 10
PROBE_ENV = "PERKS_LOOP_PROBE"
# What the probe reports by name: a callback holding the loop longer than a request's work ever should.
BLOCKED_SECONDS = 0.005
CALLBACK_METRIC = "perks_event_loop_callback_cpu_seconds"
# Fine steps up to the 5 ms that a request's work may hold the loop at most, coarse ones beyond.
BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


async def watch_loop(histogram: Histogram, held: Histogram, gauge: Gauge) -> None:
    """Measure every wake-up's lateness, forever."""
    loop = asyncio.get_running_loop()
    maxima: deque[float] = deque([0.0], maxlen=WINDOW_SECONDS)
    second = int(time.monotonic())
    while True:
        started, cpu_started = loop.time(), time.thread_time()
        await asyncio.sleep(INTERVAL_SECONDS)
        lag = max(0.0, loop.time() - started - INTERVAL_SECONDS)
        histogram.observe(lag)
        held.observe(min(lag, time.thread_time() - cpu_started))
        now = int(time.monotonic())
        if now != second:
            second = now
            maxima.append(lag)
            gauge.set(max(maxima))
        elif lag > maxima[-1]:
            maxima[-1] = lag
            gauge.set(max(maxima))


def callbacks_probed() -> bool:
    """Whether this process times every callback of its loop (``PERKS_LOOP_PROBE=callbacks``)."""
    return os.environ.get(PROBE_ENV, "") == "callbacks"


def _described(handle: asyncio.events.Handle) -> str:
    """A callback as a log line names it: a task's step by the coroutine it runs (and where it stands)."""
    owner = getattr(getattr(handle, "_callback", None), "__self__", None)
    if isinstance(owner, asyncio.Task):
        coro = owner.get_coro()
        # Down the chain of awaits to the innermost coroutine: where the step ended.
        inner = coro
        while getattr(getattr(inner, "cr_await", None), "cr_frame", None) is not None:
            inner = inner.cr_await
        frame = getattr(inner, "cr_frame", None)
        where = f" at {frame.f_code.co_filename}:{frame.f_lineno}" if frame is not None else ""
        return f"task {owner.get_name()} running {getattr(coro, '__qualname__', coro)!s}, now in " \
               f"{getattr(inner, '__qualname__', inner)!s}{where}"
    return repr(handle)


@contextlib.contextmanager
def timed_callbacks(histogram: Histogram) -> Iterator[None]:
    """While inside, observe the thread CPU time of every callback that asyncio's loop runs."""
    original = asyncio.events.Handle._run

    def run_timed(handle: asyncio.events.Handle) -> None:
        started = time.thread_time()
        try:
            original(handle)
        finally:
            spent = time.thread_time() - started
            histogram.observe(spent)
            if spent > BLOCKED_SECONDS:
                log.warning("a callback held the event loop for %.1f ms: %s", spent * 1000, _described(handle))

    asyncio.events.Handle._run = run_timed  # type: ignore[method-assign]
    try:
        yield
    finally:
        asyncio.events.Handle._run = original  # type: ignore[method-assign]


async def loop_lag_ctx(app: web.Application) -> AsyncIterator[None]:
    """Run the timer task while the application serves."""
    registry = app[METRICS].registry
    histogram = Histogram("perks_event_loop_lag_seconds", "How late the event loop's timer woke up.",
                          buckets=BUCKETS, registry=registry)
    held = Histogram("perks_event_loop_held_seconds", "The part of the timer's lateness spent on a core.",
                     buckets=BUCKETS, registry=registry)
    gauge = Gauge("perks_event_loop_lag_max_seconds", "The event loop's worst lateness over the last 10 s.",
                  registry=registry, multiprocess_mode="livemax")
    async with running(watch_loop(histogram, held, gauge), "perks-loop-lag"):
        with contextlib.ExitStack() as probe:
            if callbacks_probed():
                callbacks = Histogram(CALLBACK_METRIC, "CPU time of each callback the event loop ran (probe).",
                                      buckets=BUCKETS, registry=registry)
                probe.enter_context(timed_callbacks(callbacks))
            yield


async def frozen_startup_heap(app: web.Application) -> AsyncIterator[None]:
    """Once the worker has built what it keeps for good (modules, the app, its pool): collect, then freeze the
    survivors out of the collector's sight. A full collection runs on the loop, inside whatever callback allocates
    at that moment, and scanning a worker's tens of thousands of start-up objects takes tens of milliseconds;
    frozen, they are never scanned again."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()
