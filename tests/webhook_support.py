"""A real HTTP receiver for webhook tests, on its own port, that can fail, stall, go down and come back."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from typing import Any, Awaitable, Callable

from aiohttp import web

from perks.core.config import Config

# Time compressed: attempts a few tenths of a second apart, a 0.5 s timeout, giving up after 3 s.
FAST_DISPATCH = {
    "webhook_poll_seconds": "0.2",
    "webhook_timeout_seconds": "0.5",
    "webhook_backoff_base_seconds": "0.05",
    "webhook_backoff_max_seconds": "0.3",
    "webhook_give_up_seconds": "3",
    "webhook_lease_margin_seconds": "1",
}


def fast_config(config: Config, **extra: str) -> Config:
    """``config`` with the dispatcher's clock compressed."""
    return replace(config, extra={**config.extra, **FAST_DISPATCH, **extra})


class Receiver:
    """Records every delivery; answers per ``mode``: ``ok`` (204), ``fail`` (500) or ``stall`` (past the timeout)."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.stall_seconds = 1.5
        self.received: list[dict[str, Any]] = []
        self.attempts = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.attempts += 1
        if self.mode == "fail":
            return web.Response(status=500, text="receiver failing on purpose")
        if self.mode == "stall":
            await asyncio.sleep(self.stall_seconds)
            return web.Response(status=204)
        self.received.append({"headers": dict(request.headers), "body": body, "event": json.loads(body)})
        return web.Response(status=204)

    async def start(self) -> None:
        """Listen (on the same port as before, after a stop)."""
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        if not self.port:
            self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Stop listening: connections are refused until :meth:`start`."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def event_ids(self, webhook_path: str = "/hook") -> list[str]:
        return [item["event"]["id"] for item in self.received]


async def eventually(check: Callable[[], Awaitable[bool] | bool], timeout: float = 15.0, step: float = 0.05) -> None:
    """Wait until ``check()`` holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(step)
