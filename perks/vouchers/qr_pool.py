"""The worker processes that draw QR images, off the event loop.

A service manager stops a service by signalling every process in it at once (systemd's default ``KillMode``, a
container runtime, a terminal's Ctrl-C): the renderers would then die under the images the server is still
drawing for the requests it drains. So the renderers ignore those signals and leave when the server shuts the
pool down, after its last request, or, should the server die first, with it (Linux kills them with their parent).
They are spawned by the server itself, not by a fork server, which the same signal would kill and whose death
breaks every pool it served.

A renderer that dies anyway (killed, out of memory) breaks its whole pool: the pool is then replaced, its other
renderers killed (they would not heed the SIGTERM the pool's own clean-up sends them), and the image drawn once
more, so that one lost process costs a request nothing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, TypeVar

from perks.supervisor import die_with_parent
from perks.vouchers import qr

log = logging.getLogger(__name__)

WORKERS = max(1, min(4, os.cpu_count() or 1))
# The signals a stopping service receives; the server handles them, its renderers wait for it.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

Image = TypeVar("Image")


def _start_renderer(server: int) -> None:
    # Linux ties this to the thread that started the renderer: the event loop's, which lives as long as the server.
    die_with_parent(signal.SIGKILL)
    if os.getppid() != server:  # the server died before that took hold
        os._exit(1)
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def _new_executor() -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=WORKERS, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start_renderer, initargs=(os.getpid(),))


class QrPool:
    """Runs a QR renderer (a function of the token) in a worker process."""

    def __init__(self) -> None:
        self._executor = _new_executor()

    def start(self) -> None:
        """Start every renderer now, so that the first images wait for none (their start-up takes a moment)."""
        for _ in range(WORKERS):
            self._executor.submit(qr.version_for, 1)  # which imports the renderer there

    async def render(self, renderer: Callable[[str], Image], token: str) -> Image:
        """``renderer(token)`` in a worker; once more in a new pool should a worker have died under it."""
        loop = asyncio.get_running_loop()
        executor = self._executor
        try:
            return await loop.run_in_executor(executor, renderer, token)
        except BrokenProcessPool:
            self._replace(executor)
            return await loop.run_in_executor(self._executor, renderer, token)

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        if self._executor is broken:  # the first request to find it broken replaces it
            log.warning("a QR rendering process died; starting a new pool")
            self._executor = _new_executor()
            # The executor keeps its processes in a private attribute; it has no public way to kill them.
            for process in list(getattr(broken, "_processes", {}).values()):
                with contextlib.suppress(OSError, ValueError):
                    process.kill()
            broken.shutdown(wait=False, cancel_futures=True)

    def shutdown(self) -> None:
        """Wait for the images being drawn, then stop the workers (blocking: run it in a thread)."""
        self._executor.shutdown(wait=True, cancel_futures=True)
