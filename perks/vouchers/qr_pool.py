"""The worker processes that draw QR images, off the event loop.

A service manager stops a service by signalling every process in it at once (systemd's default ``KillMode``, a
container runtime, a terminal's Ctrl-C): the renderers would then die under the images the server is still
drawing for the requests it drains. So the renderers ignore those signals and leave when the server shuts the
pool down, after its last request. A renderer that dies anyway (killed, out of memory) breaks the whole pool: the
pool is then replaced and the image drawn once more, so that one lost process costs a request nothing."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, TypeVar

log = logging.getLogger(__name__)

WORKERS = max(1, min(4, os.cpu_count() or 1))
# The signals a stopping service receives; the server handles them, its renderers wait for it.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

Image = TypeVar("Image")


def _ignore_stop_signals() -> None:
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def _new_executor() -> ProcessPoolExecutor:
    # Forked from a server that has already imported the renderer; a fork server that died is started again.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["perks.vouchers.qr"])
    return ProcessPoolExecutor(max_workers=WORKERS, mp_context=context, initializer=_ignore_stop_signals)


class QrPool:
    """Runs a QR renderer (a function of the token) in a worker process."""

    def __init__(self) -> None:
        self._executor = _new_executor()

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
            broken.shutdown(wait=False, cancel_futures=True)

    def shutdown(self) -> None:
        """Wait for the images being drawn, then stop the workers (blocking: run it in a thread)."""
        self._executor.shutdown(wait=True, cancel_futures=True)
